//! TLS to targets: the connector HTTPS targets are dialled with, and HTTP/2 over TLS (gRPC
//! with `backend-protocol: GRPCS`, or HTTPS + HTTP2), a connector for hyper-util's pooling
//! client that negotiates `h2` by ALPN. Target certificates are not verified, like ALB and
//! ingress-nginx's default.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Dials targets over TLS offering only `h2`.
#[derive(Clone)]
pub struct TlsH2Connector {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

impl TlsH2Connector {
    pub fn new(connect_timeout: Duration) -> Self {
        TlsH2Connector {
            tls: unverified_client_connector(&[b"h2"]),
            connect_timeout,
        }
    }
}

/// A TLS connection to a target on which `h2` was negotiated.
pub struct TlsH2Stream(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl Connection for TlsH2Stream {
    fn connected(&self) -> Connected {
        Connected::new().negotiated_h2()
    }
}

impl Read for TlsH2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for TlsH2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower_service::Service<Uri> for TlsH2Connector {
    type Response = TlsH2Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsH2Stream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::time::timeout(
                this.connect_timeout,
                TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = this.tls.connect(name, tcp).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the target did not negotiate HTTP/2 (ALPN h2)",
                ));
            }
            Ok(TlsH2Stream(TokioIo::new(tls)))
        })
    }
}

/// A TLS connector for HTTPS targets (HTTP/1.1 over TLS; the certificate is not verified).
pub fn unverified_client_connector(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
                .with_no_client_auth()
        });
    match cfg {
        Ok(mut c) => {
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            tokio_rustls::TlsConnector::from(Arc::new(c))
        }
        // The default provider always supports the default versions; keep a working value.
        Err(_) => tokio_rustls::TlsConnector::from(Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )),
    }
}

/// Accepts any server certificate (signatures are still checked): target TLS is for
/// encryption on the wire, as with ALB targets and ingress-nginx's default
/// `proxy-ssl-verify: off`.
#[derive(Debug)]
pub struct AnyServerCertificate(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How one group's targets are dialled over TLS when its Ingress says so (ingress-nginx
/// `proxy-ssl-*`): built when the group changes, shared by every connection to its targets.
#[derive(Clone)]
pub struct TargetTls {
    pub connector: tokio_rustls::TlsConnector,
    /// `proxy-ssl-name`: the name checked (and sent, with `proxy-ssl-server-name`); without
    /// it the target's address stands in and no name is checked.
    name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TargetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TargetTls {
    /// The connector for `t`. ingress-nginx's verification is OpenSSL's: the chain must
    /// reach a CA of `ca.crt` within `verify_depth` (intermediates ≤ depth − 1, as
    /// `auth-tls-verify-depth` is read) and, with `proxy-ssl-name`, carry that name. Its
    /// default name is `$proxy_host` (`upstream_balancer`), which no target certificate
    /// carries; here a verification without `proxy-ssl-name` checks the chain only.
    pub fn from_model(t: &tollgate_contract::UpstreamTls) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = t
            .protocols
            .iter()
            .filter_map(|p| match p.as_str() {
                "TLSv1.2" => Some(&rustls::version::TLS12),
                "TLSv1.3" => Some(&rustls::version::TLS13),
                _ => None,
            })
            .collect();
        let versions = if versions.is_empty() {
            vec![&rustls::version::TLS12]
        } else {
            versions
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS versions: {e}"))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if t.verify {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(t.ca_pem.as_bytes()) {
                let c = c.map_err(|e| format!("ca.crt: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("ca.crt: a certificate is not a usable CA: {e}"))?;
            }
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("ca.crt: {e}"))?;
            Arc::new(CheckedTarget {
                inner,
                check_name: t.name.is_some(),
                max_intermediates: t.verify_depth.max(1) as usize - 1,
            })
        } else {
            Arc::new(AnyServerCertificate(provider))
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut cfg = match &t.client_certificate {
            Some(m) => {
                let chain = CertificateDer::pem_slice_iter(m.cert_chain_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("tls.crt: {e}"))?;
                let key =
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(m.private_key_pem.as_bytes())
                        .map_err(|e| format!("tls.key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = match &t.name {
            Some(n) => Some(
                ServerName::try_from(n.clone()).map_err(|e| format!("proxy-ssl-name {n}: {e}"))?,
            ),
            None => None,
        };
        // ingress-nginx sends no server name unless proxy-ssl-server-name is on.
        cfg.enable_sni = t.send_server_name && name.is_some();
        Ok(TargetTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            name,
        })
    }

    /// The name a handshake with the target at `ip` is made for.
    pub fn server_name(&self, ip: std::net::IpAddr) -> ServerName<'static> {
        self.name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }
}

/// A target certificate checked against the group's CAs, its depth, and its name when one
/// was given.
#[derive(Debug)]
struct CheckedTarget {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
    max_intermediates: usize,
}

impl rustls::client::danger::ServerCertVerifier for CheckedTarget {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if intermediates.len() > self.max_intermediates {
            return Err(rustls::Error::General(
                "certificate chain longer than proxy-ssl-verify-depth".into(),
            ));
        }
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
