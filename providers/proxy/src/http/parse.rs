//! What routing reads from a request: its host (one value for routing and forwarding), its
//! normalised path, and its headers when some rule has header conditions. Shared by the
//! relay and the general path.

use http::header::{self, HeaderValue};
use http::{Request, Version};
use tollgate_contract::matching::normalize_host;

/// Why a request's host cannot be trusted; answered with 400 and the connection closed.
pub(crate) type HostError = &'static str;

/// The host a request is routed by and forwarded with — one value for both, so a target
/// never receives a `Host` other than the one that chose it (an attacker would otherwise
/// route by one name and deliver another: password-reset and cache poisoning).
///
/// - HTTP/1.1: exactly one `Host` (RFC 9112 §3.2: none, or more than one, is a 400); for an
///   absolute-form target the target's authority wins and `Host` is ignored (§3.2.2).
/// - HTTP/2: `:authority`, else `host`; a `host` that names another authority makes the
///   request malformed (RFC 9113 §8.3.1).
/// - HTTP/1.0 may omit `Host`: the listener's default rule answers.
///
/// Returns the routing form (lower-case, no port, see [`normalize_host`]) and the value
/// forwarded as `Host` and `X-Forwarded-Host`.
pub(crate) fn request_host<B>(
    req: &Request<B>,
    tls: bool,
) -> Result<(String, HeaderValue), HostError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    if host.is_some_and(|h| !valid_host(h.as_bytes())) {
        return Err("invalid Host header");
    }
    let authority = req.uri().authority();
    if authority.is_some_and(|a| !valid_host(a.as_str().as_bytes())) {
        return Err("invalid authority");
    }
    let raw = if req.version() == Version::HTTP_2 {
        match (authority, host) {
            (Some(a), Some(h)) if !same_authority(a.as_str(), h.as_bytes(), tls) => {
                return Err("host header differs from :authority")
            }
            (Some(a), _) => HeaderValue::from_str(a.as_str()).map_err(|_| "invalid authority")?,
            (None, Some(h)) => h.clone(),
            (None, None) => return Err("no :authority"),
        }
    } else {
        match (authority, host) {
            (_, None) if req.version() == Version::HTTP_11 => return Err("no Host header"),
            (Some(a), _) => HeaderValue::from_str(a.as_str()).map_err(|_| "invalid authority")?,
            (None, Some(h)) => h.clone(),
            (None, None) => HeaderValue::from_static(""),
        }
    };
    let routed = normalize_host(raw.to_str().map_err(|_| "invalid Host header")?);
    Ok((routed, raw))
}

/// Whether a `Host` value (or an authority) is `host[:port]` and nothing else: a reg-name,
/// an IPv4 address or a bracketed IPv6 literal (RFC 3986 §3.2.2), without userinfo, so a
/// target parsing it cannot read another host out of it.
pub(crate) fn valid_host(raw: &[u8]) -> bool {
    let (host, port) = match raw.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|b| *b == b']') {
            Some(end) => {
                let literal = &rest[..end];
                if literal.is_empty()
                    || !literal
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
                {
                    return false;
                }
                match &rest[end + 1..] {
                    [] => (&b""[..], None),
                    [b':', port @ ..] => (&b""[..], Some(port)),
                    _ => return false,
                }
            }
            None => return false,
        },
        None => match raw.iter().rposition(|b| *b == b':') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        },
    };
    let reg_name = host.iter().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            )
    });
    reg_name && port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// Whether two authorities name the same origin: host case-insensitively, a missing port
/// being the scheme's default.
fn same_authority(a: &str, b: &[u8], tls: bool) -> bool {
    let Ok(b) = std::str::from_utf8(b) else {
        return false;
    };
    let default = if tls { "443" } else { "80" };
    let port = |s: &str| -> String {
        let after_host = match s.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or("", |(_, p)| p),
            None => s.rsplit_once(':').map_or("", |(_, p)| p),
        };
        let p = after_host.trim_start_matches(':');
        if p.is_empty() { default } else { p }.to_string()
    };
    normalize_host(a) == normalize_host(b) && port(a) == port(b)
}

/// The path as routing compares it: dot segments resolved, repeated slashes merged, and
/// percent-encoded unreserved characters decoded, so `/public/../admin` routes (and is
/// forwarded) as `/admin` rather than slipping past a rule.
pub fn normalize_path(raw: &str) -> std::borrow::Cow<'_, str> {
    let needs =
        raw.contains("//") || raw.contains("/.") || raw.contains('%') || !raw.starts_with('/');
    if !needs {
        return std::borrow::Cow::Borrowed(raw);
    }
    let decoded = decode_unreserved(raw);
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut p = String::with_capacity(decoded.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if p.is_empty() || (trailing && !out.is_empty()) {
        p.push('/');
    }
    std::borrow::Cow::Owned(p)
}

fn decode_unreserved(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(c) =
                hex.filter(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            {
                out.push(char::from(c));
                i += 3;
                continue;
            }
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

/// The request's headers as rules with header conditions read them (names lower-case),
/// collected only when some rule has such a condition (`wanted`).
pub(crate) fn headers_for_conditions<'a>(
    wanted: bool,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, String)> {
    if !wanted {
        return Vec::new();
    }
    headers
        .filter_map(|(name, value)| {
            std::str::from_utf8(value)
                .ok()
                .map(|v| (name.to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}
