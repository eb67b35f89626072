//! What reaching targets needs, below the request path: the HTTP/2 clients, the TLS
//! connector, the settings and the metrics ([`UpstreamEnv`]).

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::shared::body::ProxyBody;
use crate::shared::metrics::ProxyMetrics;
use crate::shared::settings::ProxySettings;

/// The HTTP/2 (gRPC) upstream client; hyper-util keys its pool by authority, one multiplexed
/// connection per target. HTTP/1.1 upstreams use the targets' own pools (`upstream.rs`).
pub struct UpstreamClients {
    pub(crate) h2: Client<HttpConnector, ProxyBody>,
    /// HTTP/2 over TLS (GRPCS).
    pub(crate) h2_tls: Client<crate::upstream::tls::TlsH2Connector, ProxyBody>,
    /// For `backend-protocol: HTTPS` targets. Like ALB and ingress-nginx's default
    /// (`proxy-ssl-verify: off`), target certificates are not verified.
    pub(crate) tls: tokio_rustls::TlsConnector,
}

impl UpstreamClients {
    pub fn new(settings: &ProxySettings) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(settings.connect_timeout));
        conn.set_nodelay(true);
        conn.enforce_http(true);
        let mut b2 = Client::builder(TokioExecutor::new());
        b2.http2_only(true)
            .pool_idle_timeout(settings.upstream_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let h2 = b2.build(conn);
        let h2_tls = b2.build(crate::upstream::tls::TlsH2Connector::new(
            settings.connect_timeout,
        ));
        UpstreamClients {
            h2,
            h2_tls,
            tls: super::tls::unverified_client_connector(&[b"http/1.1"]),
        }
    }
}

/// The part of the shared state the upstream stage reads: everything but the routes. The
/// request path's [`crate::http::Shared`] holds one and derefs to it, so the upstream code
/// never reaches up for the configuration that chose the target.
pub struct UpstreamEnv {
    pub metrics: ProxyMetrics,
    pub clients: UpstreamClients,
    pub settings: ProxySettings,
}
