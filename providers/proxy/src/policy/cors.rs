//! ingress-nginx CORS (`enable-cors`, `cors-*`; internal/ingress/annotations/cors and the
//! template's `buildCorsResponseHeaders`): the origin matched against the allowed list, the
//! headers set on answers (replacing a target's own), preflights answered by the proxy
//! (`request_path::route`, the relay hands such routes over).

use std::sync::Arc;

/// A CORS policy ready to answer with: origins to match and the headers to send.
#[derive(Debug)]
pub struct CompiledCors {
    /// No list: any origin, answered `*`.
    any: bool,
    /// `null` is listed (sandboxed documents, `file:` pages).
    null: bool,
    origins: Vec<OriginPattern>,
    /// Methods, headers, expose, credentials and max-age, as ingress-nginx sends them.
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

#[derive(Debug)]
struct OriginPattern {
    scheme: String,
    /// The host, or the suffix after `*.` (any subdomain of it).
    host: String,
    any_subdomain: bool,
    port: Option<String>,
}

fn split_origin(o: &str) -> Option<(&str, &str, Option<&str>)> {
    let (scheme, rest) = o.split_once("://")?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    Some((scheme, host, port))
}

impl CompiledCors {
    pub(crate) fn compile(p: &tollgate_contract::CorsPolicy) -> Arc<CompiledCors> {
        let null = p.allow_origins.iter().any(|o| o == "null");
        let origins = p
            .allow_origins
            .iter()
            .filter(|o| *o != "null")
            .filter_map(|o| {
                let (scheme, host, port) = split_origin(o)?;
                let (host, any_subdomain) = match host.strip_prefix("*.") {
                    Some(suffix) => (suffix, true),
                    None => (host, false),
                };
                Some(OriginPattern {
                    scheme: scheme.to_ascii_lowercase(),
                    host: host.to_ascii_lowercase(),
                    any_subdomain,
                    port: port.map(str::to_string),
                })
            })
            .collect();
        let mut headers = Vec::new();
        let mut put = |name: &'static str, v: &str| {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                headers.push((http::HeaderName::from_static(name), v));
            }
        };
        put("access-control-allow-methods", &p.allow_methods);
        put("access-control-allow-headers", &p.allow_headers);
        if let Some(e) = &p.expose_headers {
            put("access-control-expose-headers", e);
        }
        if p.allow_credentials {
            put("access-control-allow-credentials", "true");
        }
        put("access-control-max-age", &p.max_age_seconds.to_string());
        Arc::new(CompiledCors {
            any: p.allow_origins.is_empty(),
            null,
            origins,
            headers,
        })
    }

    /// The `Access-Control-Allow-Origin` to answer `origin` with: `*` when any origin is
    /// allowed (with or without an `Origin`), the origin itself when it matches, else none
    /// (the request is still served, without CORS headers, as ingress-nginx does).
    pub fn allow(&self, origin: Option<&http::HeaderValue>) -> Option<http::HeaderValue> {
        if self.any {
            return Some(http::HeaderValue::from_static("*"));
        }
        let o = origin?;
        if self.null && o.as_bytes() == b"null" {
            return Some(o.clone());
        }
        let (scheme, host, port) = split_origin(o.to_str().ok()?)?;
        let host = host.to_ascii_lowercase();
        let matched = self.origins.iter().any(|p| {
            scheme.eq_ignore_ascii_case(&p.scheme)
                && port == p.port.as_deref()
                && if p.any_subdomain {
                    // One label, as ingress-nginx's `*.`: `a.b.c.test` is not in `*.c.test`.
                    host.strip_suffix(p.host.as_str())
                        .and_then(|h| h.strip_suffix('.'))
                        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
                } else {
                    host == p.host
                }
        });
        matched.then(|| o.clone())
    }

    /// Whether a target's response header is one CORS sets (and so replaces).
    pub fn sets(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("access-control-allow-origin")
            || self
                .headers
                .iter()
                .any(|(n, _)| name.eq_ignore_ascii_case(n.as_str()))
    }

    /// Appends the CORS headers to a raw response head (the relay's `apply`).
    pub fn append_raw(&self, allow_origin: &http::HeaderValue, out: &mut Vec<u8>) {
        let mut line = |n: &str, v: &[u8]| {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        };
        line("access-control-allow-origin", allow_origin.as_bytes());
        for (n, v) in &self.headers {
            line(n.as_str(), v.as_bytes());
        }
    }

    /// Sets the CORS headers (replacing a target's own, as ingress-nginx's
    /// `more_set_headers` does).
    pub fn apply(&self, allow_origin: http::HeaderValue, h: &mut http::HeaderMap) {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        for (n, v) in &self.headers {
            h.insert(n.clone(), v.clone());
        }
    }
}
