//! The operator's settings of the data path: how targets are reached, and the limits that
//! protect the proxy from its clients.

use std::time::Duration;

/// Timeouts and behaviour of the data path.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub connect_timeout: Duration,
    pub response_header_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    /// Port written into `ssl-redirect` Locations for the model's HTTPS port 443.
    pub https_redirect_port: u16,
    /// `--use-forwarded-headers`: the networks whose `X-Forwarded-For` names the client
    /// (`--proxy-real-ip-cidr`); `None`: the peer is the client.
    pub real_ip_from: Option<Vec<(std::net::IpAddr, u8)>>,
    /// One JSON line per request on the `tollgate::access` log target.
    pub access_log: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(60),
            https_redirect_port: 443,
            access_log: false,
            real_ip_from: None,
        }
    }
}

/// Limits that protect the proxy from its clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Time allowed for a request's headers to arrive (slowloris).
    pub header_read_timeout: Duration,
    /// Bytes of request head buffered; larger heads get 431.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub h2_max_concurrent_streams: u32,
    /// Streams reset by the client before the proxy answered, tolerated at once (rapid
    /// reset, CVE-2023-44487); past it the connection is closed with GOAWAY.
    pub h2_max_pending_reset_streams: usize,
    pub tls_handshake_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request (ingress-nginx's
    /// `keep-alive`, 75 s); an HTTP/2 connection, with no stream open.
    pub idle_timeout: Duration,
    /// Requests a connection may carry before it is closed (ingress-nginx's
    /// `keep-alive-requests`); 0: no cap.
    pub max_requests_per_connection: u32,
    /// Every connection starts with a PROXY protocol header naming the client
    /// (ingress-nginx's `use-proxy-protocol`).
    pub proxy_protocol: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            h2_max_concurrent_streams: 250,
            h2_max_pending_reset_streams: 20,
            tls_handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            proxy_protocol: false,
            max_requests_per_connection: 0,
        }
    }
}
