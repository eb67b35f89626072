//! Parse and route: a request's head is read, its route looked up, its policy layers run and
//! its forwarding started. Body-less HTTP/1.1 requests take the relay ([`http1_relay`]);
//! everything else hyper parses and [`request_path`] serves. [`parse`] is what both read
//! from a request.

pub mod http1_relay;
pub mod parse;
pub mod request_path;
mod send_timeout;

use arc_swap::ArcSwap;

use crate::route::config::ProxyConfig;
use crate::upstream::clients::UpstreamEnv;

/// What every request needs, shared by all connections: the live configuration, and what
/// the upstream stage needs (which it gets alone, through `Deref`).
pub struct Shared {
    pub config: ArcSwap<ProxyConfig>,
    pub env: UpstreamEnv,
}

impl std::ops::Deref for Shared {
    type Target = UpstreamEnv;

    fn deref(&self) -> &UpstreamEnv {
        &self.env
    }
}
