//! TLS termination: certificates chosen by SNI from the model's listener certificates,
//! swapped atomically with the configuration. TLS 1.2 and 1.3 only.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tollgate_contract::{Certificate, Listener};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate chain is not PEM: {0}")]
    Chain(String),
    #[error("private key is not usable: {0}")]
    Key(String),
    #[error("private key does not match the certificate: {0}")]
    Mismatch(String),
    #[error("cannot generate the default certificate: {0}")]
    Generate(String),
}

/// Loads a PEM chain and key into a signing-ready certificate.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Chain(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::Chain("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| CertError::Key(e.to_string()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| CertError::Mismatch(e.to_string()))?;
    Ok(ck)
}

/// A self-signed certificate for hosts no Secret covers, as ingress-nginx's "fake
/// certificate".
pub fn generated_default_certificate() -> Result<CertifiedKey, CertError> {
    let ck = rcgen::generate_simple_self_signed(vec!["tollgate.invalid".to_string()])
        .map_err(|e| CertError::Generate(e.to_string()))?;
    certified_key(&ck.cert.pem(), &ck.signing_key.serialize_pem())
}

/// Keys already loaded, by the material's fingerprint (the PEM is kept to compare, so a
/// fingerprint collision can never serve the wrong key).
#[derive(Default)]
pub struct KeyCache(HashMap<String, LoadedKey>);

/// A key loaded from one material, with the PEM text it was loaded from.
struct LoadedKey {
    chain: Arc<str>,
    key: Arc<str>,
    loaded: Arc<CertifiedKey>,
}

/// The certificates of one configuration, by host.
#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertStore {
    /// Collects the Secret certificates of a listener. A certificate that fails to load is
    /// logged and skipped; every other one is kept.
    pub fn from_listener(listener: Option<&Listener>, default: Arc<CertifiedKey>) -> Self {
        Self::from_listener_reusing(listener, default, &mut KeyCache::default())
    }

    /// [`from_listener`](Self::from_listener), taking each key already loaded for the same
    /// material from `cache` instead of parsing it again (key parsing is elliptic-curve or
    /// RSA arithmetic: thousands of Secrets made every change cost seconds). Leaves in
    /// `cache` exactly the keys this listener uses.
    pub fn from_listener_reusing(
        listener: Option<&Listener>,
        default: Arc<CertifiedKey>,
        cache: &mut KeyCache,
    ) -> Self {
        let mut used = KeyCache::default();
        let mut store = CertStore {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        };
        let certs = listener.map(|l| l.certificates.as_slice()).unwrap_or(&[]);
        for c in certs {
            let Certificate::Secret {
                secret,
                hosts,
                material,
            } = c
            else {
                continue; // ARNs are for the AWS provider
            };
            let known = used
                .0
                .get(&material.fingerprint)
                .or_else(|| cache.0.get(&material.fingerprint))
                // `Arc<str>` equality looks at the allocation first: the builder hands the
                // same Secret's material on from build to build, so the text is rarely read.
                .filter(|k| k.chain == material.cert_chain_pem && k.key == material.private_key_pem)
                .map(|k| k.loaded.clone());
            let ck = match known {
                Some(ck) => ck,
                None => match certified_key(&material.cert_chain_pem, &material.private_key_pem) {
                    Ok(ck) => Arc::new(ck),
                    Err(e) => {
                        tracing::warn!(secret = %secret, error = %e, "TLS Secret skipped");
                        continue;
                    }
                },
            };
            if !used.0.contains_key(&material.fingerprint) {
                used.0.insert(
                    material.fingerprint.clone(),
                    LoadedKey {
                        chain: material.cert_chain_pem.clone(),
                        key: material.private_key_pem.clone(),
                        loaded: ck.clone(),
                    },
                );
            }
            for h in hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(suffix) => store
                        .wildcard
                        .entry(suffix.to_string())
                        .or_insert_with(|| ck.clone()),
                    None => store.exact.entry(h).or_insert_with(|| ck.clone()),
                };
            }
        }
        *cache = used;
        store
    }

    /// The certificate for a server name: exact, then wildcard, then the default.
    pub fn select(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(c) = self.exact.get(&name) {
            return c.clone();
        }
        if let Some((_, rest)) = name.split_once('.') {
            if let Some(c) = self.wildcard.get(rest) {
                return c.clone();
            }
        }
        self.default.clone()
    }
}

/// rustls's certificate hook, reading the current store without a lock.
#[derive(Debug)]
pub struct SniResolver {
    pub store: ArcSwap<CertStore>,
    pub handshakes: prometheus_client::metrics::counter::Counter,
    /// Hosts whose handshakes ask for a client certificate.
    pub client_auth: ArcSwap<ClientAuthHosts>,
}

/// The server configurations of hosts whose routes check client certificates (ingress-nginx
/// `auth-tls-secret`): the same certificates, plus a certificate request naming the CAs.
#[derive(Debug, Default)]
pub struct ClientAuthHosts {
    exact: HashMap<String, Arc<rustls::ServerConfig>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Arc<rustls::ServerConfig>>,
    /// A host-less route: every other handshake asks.
    any: Option<Arc<rustls::ServerConfig>>,
}

impl ClientAuthHosts {
    pub fn build(
        routes: &[crate::route::config::ClientAuthRoute],
        resolver: &Arc<SniResolver>,
    ) -> Result<Self, rustls::Error> {
        let mut hints: HashMap<
            Option<tollgate_contract::HostMatch>,
            Vec<rustls::DistinguishedName>,
        > = HashMap::new();
        for (host, policy) in routes.iter().filter(|(_, p)| p.requests_certificate()) {
            let h = hints.entry(host.clone()).or_default();
            for n in &policy.hints {
                if !h.iter().any(|x| x.as_ref() == n.as_ref()) {
                    h.push(n.clone());
                }
            }
        }
        let mut out = ClientAuthHosts::default();
        for (host, names) in hints {
            let verifier = Arc::new(crate::policy::client_cert::RequestingVerifier::new(names));
            let cfg = Arc::new(server_config_with(resolver.clone(), Some(verifier))?);
            match host {
                Some(tollgate_contract::HostMatch::Exact(h)) => {
                    out.exact.insert(h.to_ascii_lowercase(), cfg);
                }
                Some(tollgate_contract::HostMatch::Wildcard(suffix)) => {
                    out.wildcard.insert(suffix.to_ascii_lowercase(), cfg);
                }
                None => out.any = Some(cfg),
            }
        }
        Ok(out)
    }

    fn select(&self, sni: Option<&str>) -> Option<Arc<rustls::ServerConfig>> {
        if let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) {
            if let Some(c) = self.exact.get(&name) {
                return Some(c.clone());
            }
            if let Some((_, rest)) = name.split_once('.') {
                if let Some(c) = self.wildcard.get(rest) {
                    return Some(c.clone());
                }
            }
        }
        self.any.clone()
    }
}

/// What the TLS listener accepts with: the configuration for a handshake chosen by its
/// server name (most hosts share one; hosts checking client certificates have their own).
#[derive(Clone)]
pub struct TlsSetup {
    default: Arc<rustls::ServerConfig>,
    resolver: Arc<SniResolver>,
}

impl TlsSetup {
    pub fn new(resolver: Arc<SniResolver>) -> Result<Self, rustls::Error> {
        Ok(TlsSetup {
            default: Arc::new(server_config(resolver.clone())?),
            resolver,
        })
    }

    pub fn config_for(&self, sni: Option<&str>) -> Arc<rustls::ServerConfig> {
        self.resolver
            .client_auth
            .load()
            .select(sni)
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.handshakes.inc();
        Some(self.store.load().select(hello.server_name()))
    }
}

/// A rustls server configuration using `resolver`, offering h2 and HTTP/1.1.
pub fn server_config(resolver: Arc<SniResolver>) -> Result<rustls::ServerConfig, rustls::Error> {
    server_config_with(resolver, None)
}

/// [`server_config`], asking for client certificates through `verifier` when given.
pub fn server_config_with(
    resolver: Arc<SniResolver>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
