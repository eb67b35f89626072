//! What a request knows of the connection it came on.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// The certificate the client presented in its TLS handshake, if asked and given.
    pub client_cert: Option<Arc<PeerCertificate>>,
}

/// The certificate chain a client presented in its handshake.
#[derive(Debug)]
pub struct PeerCertificate {
    pub chain: Vec<CertificateDer<'static>>,
}
