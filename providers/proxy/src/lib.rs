//! Tollgate's in-cluster proxy provider: the data path that carries HTTP and HTTPS traffic
//! routed by the desired-state model.
//!
//! The modules follow a request's way, each using only those after it:
//!
//! - [`accept`]: listeners, PROXY protocol, TLS by SNI, limits, graceful shutdown.
//! - [`http`]: parse and route. Body-less HTTP/1.1 requests are parsed, routed and relayed
//!   by one task (`http1_relay`, read this first); everything else is handed to hyper and
//!   `request_path`, which runs the route's policy layers and forwards.
//! - [`route`]: one configuration generation (the model's rules compiled into indexed
//!   tables), swapped atomically by [`Proxy::apply_model`].
//! - [`policy`]: the per-route layers, one file each (authentication, rate limits, client
//!   certificates, trusted forwarding headers).
//! - [`upstream`]: targets, load balancing and affinity, passive health, HTTP/1.1
//!   exchanges without a connection task, TLS to targets.
//! - [`shared`]: below all of them — bodies, the connection's facts, the proxy's own
//!   answers, settings, metrics.

pub mod accept;
pub mod fuzzing;
pub mod http;
pub mod policy;
pub mod route;
pub mod shared;
pub mod upstream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tollgate_contract::{ApplyReport, DesiredState, LoadBalancerStatus, Provider};

use accept::tls::{self, CertStore, SniResolver};
use http::Shared;
use route::config::{self, ProxyConfig, HTTPS_PORT};
use shared::metrics::ProxyMetrics;
pub use shared::settings::{Limits, ProxySettings};
use upstream::clients::{UpstreamClients, UpstreamEnv};
use upstream::TargetRegistry;

/// Failures of the proxy provider as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Certificate(#[from] tls::CertError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The proxy: holds the live configuration and applies new ones.
pub struct Proxy {
    shared: Arc<Shared>,
    /// Only `apply_model` touches this; the request path never does.
    registry: Mutex<TargetRegistry>,
    /// What the next compile reuses (only `apply_model` takes it).
    compiled: Mutex<config::CompileCache>,
    generation: AtomicU64,
    ready: Arc<AtomicBool>,
    epoch: Instant,
    resolver: Arc<SniResolver>,
    default_cert: Arc<rustls::sign::CertifiedKey>,
    /// The configuration the last apply replaced, for the caller to free where it suits.
    retired: Mutex<Option<Arc<ProxyConfig>>>,
    /// Keys of the certificates being served, reused by the next configuration.
    keys: Mutex<tls::KeyCache>,
    /// The certificates the served store was made from: an unchanged list (most changes)
    /// keeps the store instead of walking thousands of certificates again (issue 16).
    certs_from: Mutex<Option<Vec<tollgate_contract::Certificate>>>,
    /// Reported as every load balancer's address in Ingress status.
    publish_address: Option<String>,
    /// The client-certificate routes the served `ClientAuthHosts` were made from (host and
    /// policy allocation).
    client_auth_from: Mutex<Vec<(Option<tollgate_contract::HostMatch>, usize)>>,
}

impl Proxy {
    /// A proxy serving the default 404 until the first model is applied.
    pub fn new(
        settings: ProxySettings,
        publish_address: Option<String>,
    ) -> Result<Self, ProxyError> {
        let metrics = ProxyMetrics::default();
        let default_cert = Arc::new(tls::generated_default_certificate()?);
        let resolver = Arc::new(SniResolver {
            store: ArcSwap::from_pointee(CertStore::from_listener(None, default_cert.clone())),
            handshakes: metrics.tls_handshakes.clone(),
            client_auth: ArcSwap::from_pointee(tls::ClientAuthHosts::default()),
        });
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(ProxyConfig::empty(&metrics)),
            env: UpstreamEnv {
                clients: UpstreamClients::new(&settings),
                metrics,
                settings,
            },
        });
        Ok(Proxy {
            shared,
            registry: Mutex::new(TargetRegistry::default()),
            compiled: Mutex::new(config::CompileCache::default()),
            generation: AtomicU64::new(0),
            ready: Arc::new(AtomicBool::new(false)),
            epoch: Instant::now(),
            resolver,
            default_cert,
            keys: Mutex::new(tls::KeyCache::default()),
            certs_from: Mutex::new(None),
            retired: Mutex::new(None),
            publish_address,
            client_auth_from: Mutex::new(Vec::new()),
        })
    }

    /// Compiles `desired` and swaps it in. Requests already running finish on the
    /// configuration they started with; the next request on any connection sees the new one.
    /// Returns the new generation.
    pub fn apply_model(&self, desired: &DesiredState) -> u64 {
        let started = Instant::now();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut registry = match self.registry.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut compiled = match self.compiled.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let cfg = ProxyConfig::compile(
            desired,
            generation,
            &registry,
            self.epoch,
            &self.shared.metrics,
            &mut compiled,
        );
        *registry = TargetRegistry::collect(cfg.groups.values().map(|g| g.as_ref()));
        self.shared.metrics.prune_request_counters();
        let https = desired
            .load_balancers
            .iter()
            .find_map(|lb| lb.listener(HTTPS_PORT));
        let certs = https.map(|l| l.certificates.as_slice()).unwrap_or(&[]);
        let mut certs_from = match self.certs_from.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if certs_from.as_deref() != Some(certs) {
            let mut keys = match self.keys.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            self.resolver
                .store
                .store(Arc::new(CertStore::from_listener_reusing(
                    https,
                    self.default_cert.clone(),
                    &mut keys,
                )));
            *certs_from = Some(certs.to_vec());
        }
        let auth_now: Vec<(Option<tollgate_contract::HostMatch>, usize)> = cfg
            .client_auth
            .iter()
            .map(|(h, c)| (h.clone(), Arc::as_ptr(c) as usize))
            .collect();
        let mut auth_from = match self.client_auth_from.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *auth_from != auth_now {
            match tls::ClientAuthHosts::build(&cfg.client_auth, &self.resolver) {
                Ok(hosts) => self.resolver.client_auth.store(Arc::new(hosts)),
                // Routes still check at the HTTP layer: without a certificate request their
                // clients send none and are refused, never let through.
                Err(e) => tracing::error!(error = %e, "client-certificate handshakes not set up"),
            }
            *auth_from = auth_now;
        }
        drop(auth_from);
        let old = self.shared.config.swap(Arc::new(cfg));
        // Freed by whoever takes it (`take_retired`), off the path of the next change.
        let mut retired = match self.retired.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *retired = Some(old);
        self.shared
            .metrics
            .config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.shared
            .metrics
            .config_apply_seconds
            .observe(started.elapsed().as_secs_f64());
        self.ready.store(true, Ordering::Relaxed);
        generation
    }

    /// The configuration the last [`apply_model`](Self::apply_model) replaced (requests
    /// may still hold it). With tens of thousands of rules, freeing it is tens of
    /// milliseconds: a run loop frees it on a blocking thread rather than before the next
    /// change.
    pub fn take_retired(&self) -> Option<Arc<ProxyConfig>> {
        match self.retired.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    /// Closes upstream connections idle for `upstream_idle_timeout` (a connection is also
    /// checked when it is taken; this closes those no request comes for).
    pub fn close_idle_upstreams(&self) {
        let registry = match self.registry.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for t in registry.targets() {
            t.idle.sweep(self.shared.settings.upstream_idle_timeout);
            t.relay_idle
                .sweep(self.shared.settings.upstream_idle_timeout);
        }
    }

    /// The state shared with connection handlers.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// True once a model has been applied.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// What the TLS listener accepts with: certificates (and client-certificate requests)
    /// from the live configuration.
    pub fn tls_acceptor(&self) -> Result<tls::TlsSetup, ProxyError> {
        Ok(tls::TlsSetup::new(self.resolver.clone())?)
    }
}

impl Provider for Proxy {
    type Error = ProxyError;

    async fn apply(&self, desired: &DesiredState) -> Result<ApplyReport, ProxyError> {
        self.apply_model(desired);
        Ok(ApplyReport {
            load_balancers: desired
                .load_balancers
                .iter()
                .map(|lb| LoadBalancerStatus {
                    id: lb.id.clone(),
                    address: self.publish_address.clone(),
                    converged: true,
                })
                .collect(),
            diagnostics: Vec::new(),
        })
    }
}
