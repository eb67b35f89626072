//! The answers the proxy makes itself.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::{full, ProxyBody};

/// The `Server` header of the proxy's own answers, and of relayed ones whose target sent
/// none (as ingress-nginx does; the Ingress conformance suite expects one on every response).
pub(crate) const SERVER: HeaderValue = HeaderValue::from_static("tollgate");

/// A response the proxy makes itself: `Content-Type`, `Content-Length`, `Date`, `Server`.
pub fn local_response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let body: Bytes = body.into();
    let mut r = Response::new(full(body.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::SERVER, SERVER);
    if let Ok(d) = HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now())) {
        h.insert(header::DATE, d);
    }
    r
}

/// The short plain-text body of the proxy's own error answers.
pub(crate) fn error_body(status: StatusCode, why: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    format!("{} {reason}: {why}\n", status.as_u16())
}

pub(crate) fn error_response(status: StatusCode, why: &str) -> Response<ProxyBody> {
    local_response(status, "text/plain; charset=utf-8", error_body(status, why))
}
