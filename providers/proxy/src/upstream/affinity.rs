//! ingress-nginx session affinity (`affinity: cookie`) and consistent hashing
//! (`upstream-hash-by`), one policy layer of a forwarding route: it chooses the target a
//! request must go to before the forward, and says what cookie the response carries.
//!
//! Cookie affinity follows ingress-nginx's sticky balancer (rootfs/etc/nginx/lua/balancer/
//! sticky.lua, test/e2e/annotations/affinity.go): a request whose cookie names a target of
//! the group goes there and gets no new cookie; any other gets a target as usual and a
//! `Set-Cookie` (`NAME=VALUE; Expires; Max-Age; Domain; Path; Secure; HttpOnly; SameSite`, in
//! lua-resty-cookie's order). The value names the target by a hash of its address that every
//! replica computes alike, so a client keeps its target whichever replica it reaches — as
//! `affinity-mode: persistent` keeps it while that pod exists.
//!
//! Hashing uses rendezvous hashing: each target scores hash(key, target) and the highest
//! wins, so when a target goes only the keys it held move (the property ingress-nginx's
//! chash ring gives).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use sha1::{Digest, Sha1};

use crate::upstream::{TargetState, UpstreamGroup};

/// A route's affinity, ready to run.
#[derive(Debug)]
pub enum CompiledAffinity {
    Cookie(CookiePolicy),
    Hash(Vec<KeyPart>),
}

#[derive(Debug)]
pub struct CookiePolicy {
    name: String,
    /// `; Domain=...; Path=...` (everything after the value but Expires/Max-Age/Secure).
    domain_path: String,
    expires_seconds: Option<u64>,
    max_age_seconds: Option<u64>,
    secure: bool,
    same_site: Option<&'static str>,
    conditional_same_site_none: bool,
    change_on_failure: bool,
}

/// One piece of an `upstream-hash-by` key.
#[derive(Debug)]
pub enum KeyPart {
    Text(String),
    RequestUri,
    Uri,
    Args,
    Host,
    RemoteAddr,
    Header(http::HeaderName),
    Cookie(String),
    Arg(String),
}

/// What the request needs for the choice.
pub struct RequestView<'a> {
    pub headers: &'a HeaderMap,
    pub request_uri: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub client: std::net::IpAddr,
    pub tls: bool,
}

/// The outcome: the group to forward through (narrowed to the chosen target) and the cookie
/// to set on the response, if any.
pub struct Choice {
    pub group: Option<Arc<UpstreamGroup>>,
    pub set_cookie: Option<HeaderValue>,
}

impl CompiledAffinity {
    pub fn compile(a: &tollgate_contract::Affinity) -> Result<Arc<Self>, String> {
        Ok(Arc::new(match a {
            tollgate_contract::Affinity::Cookie(c) => {
                let mut domain_path = String::new();
                if let Some(d) = &c.domain {
                    domain_path.push_str(&format!("; Domain={d}"));
                }
                domain_path.push_str(&format!("; Path={}", c.path));
                let same_site = match c.same_site.as_deref().map(str::to_ascii_lowercase) {
                    None => None,
                    Some(s) if s == "strict" => Some("Strict"),
                    Some(s) if s == "lax" => Some("Lax"),
                    Some(s) if s == "none" => Some("None"),
                    Some(other) => return Err(format!("SameSite {other:?}")),
                };
                CompiledAffinity::Cookie(CookiePolicy {
                    name: c.name.clone(),
                    domain_path,
                    expires_seconds: c.expires_seconds,
                    max_age_seconds: c.max_age_seconds,
                    secure: c.secure,
                    same_site,
                    conditional_same_site_none: c.conditional_same_site_none,
                    change_on_failure: c.change_on_failure,
                })
            }
            tollgate_contract::Affinity::Hash { key } => CompiledAffinity::Hash(parse_key(key)?),
        }))
    }

    /// Chooses the target for a request to `group`.
    pub fn choose(&self, group: &Arc<UpstreamGroup>, r: &RequestView<'_>) -> Choice {
        match self {
            CompiledAffinity::Cookie(c) => c.choose(group, r),
            CompiledAffinity::Hash(parts) => {
                let key = expand_key(parts, r);
                let best = group
                    .targets
                    .iter()
                    .filter(|t| !t.is_ejected())
                    .max_by_key(|t| score(key.as_bytes(), t))
                    .or_else(|| {
                        group
                            .targets
                            .iter()
                            .max_by_key(|t| score(key.as_bytes(), t))
                    });
                Choice {
                    group: best.map(|t| Arc::new(group.only(t.clone()))),
                    set_cookie: None,
                }
            }
        }
    }
}

impl CookiePolicy {
    fn choose(&self, group: &Arc<UpstreamGroup>, r: &RequestView<'_>) -> Choice {
        let wanted = cookie_value(r.headers, &self.name);
        let sticky = wanted.and_then(|v| group.targets.iter().find(|t| target_key(t) == v));
        match sticky {
            // ingress-nginx keeps a failing sticky target unless change-on-failure says
            // otherwise (then the request is balanced again and gets a new cookie).
            Some(t) if !(self.change_on_failure && t.is_ejected()) => Choice {
                group: Some(Arc::new(group.only(t.clone()))),
                set_cookie: None,
            },
            _ => match group.pick(&[]) {
                Some(t) => Choice {
                    set_cookie: self.cookie_for(&t, r),
                    group: Some(Arc::new(group.only(t))),
                },
                None => Choice {
                    group: None,
                    set_cookie: None,
                },
            },
        }
    }

    fn cookie_for(&self, t: &TargetState, r: &RequestView<'_>) -> Option<HeaderValue> {
        let mut c = format!("{}={}", self.name, target_key(t));
        if let Some(s) = self.expires_seconds {
            let at = std::time::SystemTime::now() + std::time::Duration::from_secs(s);
            c.push_str(&format!("; Expires={}", httpdate::fmt_http_date(at)));
        }
        if let Some(s) = self.max_age_seconds {
            c.push_str(&format!("; Max-Age={s}"));
        }
        c.push_str(&self.domain_path);
        if self.secure || r.tls {
            c.push_str("; Secure");
        }
        c.push_str("; HttpOnly");
        if let Some(s) = self.same_site {
            let skip = s == "None"
                && self.conditional_same_site_none
                && r.headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(mishandles_same_site_none);
            if !skip {
                c.push_str(&format!("; SameSite={s}"));
            }
        }
        HeaderValue::from_str(&c).ok()
    }
}

/// The cookie value naming a target: the same on every replica.
fn target_key(t: &TargetState) -> String {
    let digest = Sha1::digest(t.addr.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn score(key: &[u8], t: &TargetState) -> u64 {
    let mut h = Sha1::new();
    h.update(key);
    h.update([0]);
    h.update(t.addr.to_string().as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Browsers that reject or mistreat `SameSite=None` (ingress-nginx's util/same_site.lua:
/// Chrome 51 to 66, iOS 12 and Safari on macOS 10.14).
fn mishandles_same_site_none(ua: &str) -> bool {
    let chrome_51_to_66 = ua
        .split("Chrome/")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| (51..=66).contains(&v));
    let ios12 = ua.contains("iPhone OS 12_") || ua.contains("iPad; CPU OS 12_");
    let mac_safari = ua.contains("Macintosh; Intel Mac OS X 10_14")
        && ua.contains("Safari")
        && !ua.contains("Chrome");
    chrome_51_to_66 || ios12 || mac_safari
}

/// Parses an `upstream-hash-by` template: nginx variables (`$name` or `${name}`) and text.
pub fn parse_key(key: &str) -> Result<Vec<KeyPart>, String> {
    let mut parts = Vec::new();
    let mut rest = key;
    while let Some(i) = rest.find('$') {
        if i > 0 {
            parts.push(KeyPart::Text(rest[..i].to_string()));
        }
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(b) => {
                let end = b.find('}').ok_or("an unclosed ${")?;
                (&b[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        parts.push(match name {
            "request_uri" => KeyPart::RequestUri,
            "uri" | "document_uri" => KeyPart::Uri,
            "args" | "query_string" => KeyPart::Args,
            "host" => KeyPart::Host,
            "remote_addr" | "binary_remote_addr" => KeyPart::RemoteAddr,
            n if n.starts_with("http_") && n.len() > 5 => {
                let h = n["http_".len()..].replace('_', "-").to_ascii_lowercase();
                KeyPart::Header(http::HeaderName::from_bytes(h.as_bytes()).map_err(|e| e.to_string())?)
            }
            n if n.starts_with("cookie_") && n.len() > 7 => KeyPart::Cookie(n[7..].to_string()),
            n if n.starts_with("arg_") && n.len() > 4 => KeyPart::Arg(n[4..].to_string()),
            n => return Err(format!("the nginx variable ${n} is not supported in upstream-hash-by (supported: $request_uri, $uri, $args, $host, $remote_addr, $binary_remote_addr, $http_<name>, $cookie_<name>, $arg_<name>)")),
        });
        rest = &after[len..];
    }
    if !rest.is_empty() {
        parts.push(KeyPart::Text(rest.to_string()));
    }
    Ok(parts)
}

fn expand_key(parts: &[KeyPart], r: &RequestView<'_>) -> String {
    let query = r.request_uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut out = String::new();
    for p in parts {
        match p {
            KeyPart::Text(t) => out.push_str(t),
            KeyPart::RequestUri => out.push_str(r.request_uri),
            KeyPart::Uri => out.push_str(r.path),
            KeyPart::Args => out.push_str(query),
            KeyPart::Host => out.push_str(r.host),
            KeyPart::RemoteAddr => out.push_str(&r.client.to_string()),
            KeyPart::Header(h) => {
                if let Some(v) = r.headers.get(h).and_then(|v| v.to_str().ok()) {
                    out.push_str(v);
                }
            }
            KeyPart::Cookie(c) => out.push_str(cookie_value(r.headers, c).unwrap_or("")),
            KeyPart::Arg(a) => {
                if let Some(v) = query
                    .split('&')
                    .find_map(|kv| kv.split_once('=').filter(|(k, _)| k == a).map(|(_, v)| v))
                {
                    out.push_str(v);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn group(ports: &[u16]) -> Arc<UpstreamGroup> {
        use tollgate_contract::*;
        let tg = TargetGroup {
            id: "g".into(),
            service: ObjectRef::new("ns", "g"),
            service_port: 80,
            protocol: Default::default(),
            protocol_version: Default::default(),
            target_type: TargetType::Ip,
            health_check: HealthCheck::default(),
            attributes: Default::default(),
            upstream_tls: None,
            targets: ports
                .iter()
                .map(|p| Target {
                    address: TargetAddress::Ip([127, 0, 0, 1].into()),
                    port: *p,
                    node: None,
                    instance: None,
                    state: tollgate_contract::TargetState::Ready,
                })
                .collect(),
        };
        Arc::new(UpstreamGroup::from_model(
            &tg,
            &Default::default(),
            std::time::Instant::now(),
        ))
    }

    fn view<'a>(h: &'a HeaderMap, uri: &'a str) -> RequestView<'a> {
        RequestView {
            headers: h,
            request_uri: uri,
            path: uri.split('?').next().unwrap_or(uri),
            host: "h",
            client: "10.0.0.1".parse().unwrap(),
            tls: false,
        }
    }

    fn only(c: &Choice) -> SocketAddr {
        c.group.as_ref().unwrap().targets[0].addr
    }

    #[test]
    fn hashing_moves_only_the_keys_of_a_target_that_goes() {
        let a = CompiledAffinity::compile(&tollgate_contract::Affinity::Hash {
            key: "$request_uri".into(),
        })
        .unwrap();
        let h = HeaderMap::new();
        let big = group(&[1, 2, 3, 4]);
        let small = group(&[1, 2, 4]);
        let mut moved = 0;
        for i in 0..200 {
            let uri = format!("/item/{i}");
            let before = only(&a.choose(&big, &view(&h, &uri)));
            let after = only(&a.choose(&small, &view(&h, &uri)));
            assert_eq!(before, only(&a.choose(&big, &view(&h, &uri))), "stable");
            if before.port() != 3 {
                assert_eq!(before, after, "{uri} moved though its target stayed");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 20, "the removed target held some keys: {moved}");
    }

    #[test]
    fn cookies_name_targets_and_carry_ingress_nginx_attributes() {
        let a = CompiledAffinity::compile(&tollgate_contract::Affinity::Cookie(
            tollgate_contract::CookieAffinity {
                name: "SERVERID".into(),
                path: "/something".into(),
                expires_seconds: Some(172_800),
                max_age_seconds: Some(259_200),
                domain: Some("foo.bar".into()),
                secure: false,
                same_site: Some("none".into()),
                conditional_same_site_none: true,
                change_on_failure: false,
            },
        ))
        .unwrap();
        let g = group(&[1, 2, 3]);
        let h = HeaderMap::new();
        let first = a.choose(&g, &view(&h, "/"));
        let cookie = first.set_cookie.clone().unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(cookie.starts_with("SERVERID="), "{cookie}");
        for part in [
            "; Expires=",
            "; Max-Age=259200; Domain=foo.bar; Path=/something; HttpOnly; SameSite=None",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
        assert!(!cookie.contains("Secure"), "{cookie}");
        // The cookie brings the request back to the same target, with no new cookie.
        let value = cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; {value}")).unwrap(),
        );
        for _ in 0..10 {
            let again = a.choose(&g, &view(&h, "/"));
            assert_eq!(only(&again), only(&first));
            assert!(again.set_cookie.is_none());
        }
        // A cookie naming no target: balanced again, with a new cookie.
        h.insert(header::COOKIE, HeaderValue::from_static("SERVERID=gone"));
        assert!(a.choose(&g, &view(&h, "/")).set_cookie.is_some());
        // Old Chrome gets no SameSite=None.
        let mut old = HeaderMap::new();
        old.insert(
            header::USER_AGENT,
            HeaderValue::from_static("Mozilla/5.0 Chrome/60.0.3112.113 Safari/537.36"),
        );
        let c = a.choose(&g, &view(&old, "/")).set_cookie.unwrap();
        assert!(!c.to_str().unwrap().contains("SameSite"));
    }

    #[test]
    fn keys() {
        assert!(parse_key("$request_uri$host").is_ok());
        assert!(parse_key("${http_x_user}-text").is_ok());
        assert!(parse_key("$upstream_addr").is_err());
        let parts = parse_key("$arg_id|$cookie_s|$http_x_user").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("u1"));
        h.insert(header::COOKIE, HeaderValue::from_static("s=9"));
        assert_eq!(expand_key(&parts, &view(&h, "/p?id=7&x=1")), "7|9|u1");
    }
}
