//! ingress-nginx client-certificate authentication (`auth-tls-*`), one policy layer of a
//! forwarding route, as its template renders it (rootfs/etc/nginx/template/nginx.tmpl:
//! `ssl_verify_client`, `ssl_verify_depth`, `error_page 495 496`, the `ssl-client-*`
//! headers; test/e2e/annotations/authtls.go).
//!
//! The handshake of a host whose routes want certificates asks for one, naming the CAs
//! ([`RequestingVerifier`]: the proof of the private key is checked there, the chain is not,
//! so a bad certificate gets nginx's HTTP 400 rather than a failed handshake). The route then
//! checks the chain against its CA ([`CompiledClientCert::check`]): `on` requires a valid
//! certificate (400 "No required SSL certificate was sent" / "The SSL certificate error", or
//! a redirect to `auth-tls-error-page`), `optional` a valid one if any, `optional_no_ca`
//! takes any; the target learns the outcome from `ssl-client-verify`, `ssl-client-subject-dn`
//! and `ssl-client-issuer-dn`, and with `auth-tls-pass-certificate-to-upstream` the
//! certificate in `ssl-client-cert`. `auth-tls-match-cn` is matched against the subject DN
//! (403 otherwise). A request whose `Host` names such a route over a connection that did not
//! present a certificate (another SNI, or plain HTTP) has none: it is never let through
//! unchecked.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::shared::conn::PeerCertificate;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    On,
    Optional,
    OptionalNoCa,
    Off,
}

/// A route's client-certificate policy.
pub struct CompiledClientCert {
    verify: Verify,
    depth: u32,
    verifier: Arc<dyn ClientCertVerifier>,
    /// The CAs' subjects, sent in the handshake's certificate request.
    pub hints: Vec<DistinguishedName>,
    pass_certificate: bool,
    error_page: Option<HeaderValue>,
    match_cn: Option<regex::Regex>,
}

impl std::fmt::Debug for CompiledClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledClientCert")
            .field("verify", &self.verify)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// What the route does with the request.
pub enum CertCheck {
    /// Go on, with these headers set on the request to the target.
    Pass(Vec<(HeaderName, HeaderValue)>),
    /// Answer with this status and body (or a redirect, when `location` is set).
    Refuse {
        status: StatusCode,
        body: &'static str,
        location: Option<HeaderValue>,
    },
}

impl CompiledClientCert {
    pub fn compile(a: &tollgate_contract::ClientCertAuth) -> Result<Arc<Self>, String> {
        use rustls::pki_types::pem::PemObject;
        let verify = match a.verify.as_str() {
            "on" => Verify::On,
            "optional" => Verify::Optional,
            "optional_no_ca" => Verify::OptionalNoCa,
            "off" => Verify::Off,
            other => return Err(format!("auth-tls-verify-client {other:?}")),
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(a.ca_pem.as_bytes()) {
            let c = c.map_err(|e| format!("ca.crt: {e}"))?;
            roots.add(c).map_err(|e| format!("ca.crt: {e}"))?;
        }
        if roots.is_empty() {
            return Err("ca.crt holds no certificate".into());
        }
        let hints = roots.subjects();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("ca.crt: {e}"))?;
        let error_page = a
            .error_page
            .as_deref()
            .map(|p| HeaderValue::from_str(p).map_err(|e| format!("auth-tls-error-page: {e}")))
            .transpose()?;
        let match_cn = a
            .match_cn
            .as_deref()
            .map(|r| regex::Regex::new(r).map_err(|e| format!("auth-tls-match-cn: {e}")))
            .transpose()?;
        Ok(Arc::new(CompiledClientCert {
            verify,
            depth: a.depth.max(1),
            verifier,
            hints,
            pass_certificate: a.pass_certificate,
            error_page,
            match_cn,
        }))
    }

    /// Whether the handshake asks for a certificate (`off` does not).
    pub fn requests_certificate(&self) -> bool {
        self.verify != Verify::Off
    }

    /// Checks the connection's certificate (if any) for a request on this route.
    pub fn check(&self, peer: Option<&PeerCertificate>) -> CertCheck {
        let refuse = |body: &'static str| CertCheck::Refuse {
            status: StatusCode::BAD_REQUEST,
            body,
            location: self.error_page.clone(),
        };
        let chain = peer.map(|p| p.chain.as_slice()).filter(|c| !c.is_empty());
        let (status, cert) = match chain {
            None => ("NONE".to_string(), None),
            Some(chain) => {
                let (leaf, intermediates) = (&chain[0], &chain[1..]);
                let result = if intermediates.len() + 1 > self.depth as usize {
                    Err("certificate chain too long".to_string())
                } else {
                    self.verifier
                        .verify_client_cert(leaf, intermediates, UnixTime::now())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                match result {
                    Ok(()) => ("SUCCESS".to_string(), Some(leaf)),
                    Err(why) => (format!("FAILED:{why}"), Some(leaf)),
                }
            }
        };
        match (self.verify, status.as_str()) {
            (Verify::On, "NONE") => return refuse("No required SSL certificate was sent"),
            (Verify::On | Verify::Optional, s) if s.starts_with("FAILED") => {
                return refuse("The SSL certificate error")
            }
            _ => {}
        }
        let (subject, issuer) = cert.map(distinguished_names).unwrap_or_default();
        if let Some(re) = &self.match_cn {
            if !re.is_match(&subject) {
                return CertCheck::Refuse {
                    status: StatusCode::FORBIDDEN,
                    body: "client certificate unauthorized",
                    location: None,
                };
            }
        }
        let mut headers = Vec::with_capacity(4);
        let mut set = |n: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.push((HeaderName::from_static(n), v));
            }
        };
        set("ssl-client-verify", &status);
        set("ssl-client-subject-dn", &subject);
        set("ssl-client-issuer-dn", &issuer);
        if self.pass_certificate {
            if let Some(c) = cert {
                set("ssl-client-cert", &escaped_pem(c));
            }
        }
        CertCheck::Pass(headers)
    }
}

/// Subject and issuer DNs as nginx's `$ssl_client_s_dn`/`$ssl_client_i_dn` print them
/// (RFC 2253: the last RDN first, `,` between).
fn distinguished_names(cert: &CertificateDer<'_>) -> (String, String) {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Default::default();
    };
    let rfc2253 = |name: &x509_parser::x509::X509Name<'_>| {
        let mut rdns: Vec<String> = name
            .iter()
            .map(|rdn| {
                rdn.iter()
                    .map(|atv| {
                        let key = x509_parser::objects::oid2abbrev(
                            atv.attr_type(),
                            x509_parser::objects::oid_registry(),
                        )
                        .map(str::to_string)
                        .unwrap_or_else(|_| atv.attr_type().to_id_string());
                        let value = atv.as_str().unwrap_or_default();
                        format!("{key}={value}")
                    })
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        rdns.reverse();
        rdns.join(",")
    };
    (rfc2253(parsed.subject()), rfc2253(parsed.issuer()))
}

/// `$ssl_client_escaped_cert`: the PEM, URL-escaped.
fn escaped_pem(cert: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    crate::policy::external_auth::escape_uri(&pem)
}

/// The handshake side: asks for a certificate naming the CAs, checks the client's proof of
/// its key, and leaves the chain to the route (so a bad one is answered in HTTP, as nginx
/// does).
#[derive(Debug)]
pub struct RequestingVerifier {
    hints: Vec<DistinguishedName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl RequestingVerifier {
    pub fn new(hints: Vec<DistinguishedName>) -> Self {
        RequestingVerifier {
            hints,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }
}

impl ClientCertVerifier for RequestingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
