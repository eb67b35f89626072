//! The body type every stage passes requests and responses in.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Errors of bodies on the proxy's path (hyper's, or a target's response cut short).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Response and request bodies on the proxy's path.
pub type ProxyBody = UnsyncBoxBody<Bytes, BodyError>;

pub(crate) fn boxed_error(e: hyper::Error) -> BodyError {
    Box::new(e)
}

pub(crate) fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}
