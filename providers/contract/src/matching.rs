//! First-match-wins evaluation of a listener's rules: the reference meaning of the model.
//!
//! Providers may compile rules into faster structures (the proxy's indexed route table, ALB
//! priorities); this module is what those must agree with, and the tests prove they do.

use std::net::IpAddr;

use crate::model::{Action, Conditions, HeaderMatch, Listener, QueryMatch, Rule};

/// The parts of a request that rule conditions look at.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    /// Lower-case host without port (see [`normalize_host`]).
    pub host: &'a str,
    /// Path without query string.
    pub path: &'a str,
    pub method: &'a str,
    /// Raw query string without `?`.
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub source_ip: Option<IpAddr>,
}

/// Host as the rules compare it: lower-case, no port, no trailing dot.
///
/// Accepts `host`, `host:port`, `[v6]` and `[v6]:port`.
pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, _)) => v6,
            None => rest,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Listener {
    /// The rule that decides this request, or `None` when the default action applies.
    pub fn matching_rule(&self, req: &RequestFacts<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.conditions.matches(req))
    }

    /// The action that answers this request.
    pub fn route(&self, req: &RequestFacts<'_>) -> &Action {
        self.matching_rule(req)
            .map(|r| &r.action)
            .unwrap_or(&self.default_action)
    }
}

impl Conditions {
    /// Whether every condition holds for this request.
    pub fn matches(&self, req: &RequestFacts<'_>) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(req.host))
            && self.host_regexes.is_empty()
            && self.path.as_ref().is_none_or(|p| p.matches(req.path))
            && (self.methods.is_empty()
                || self
                    .methods
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(req.method)))
            && self.headers.iter().all(|h| header_matches(h, req.headers))
            && self.query.iter().all(|q| query_matches(q, req.query))
            && (self.source_ips.is_empty()
                || req
                    .source_ip
                    .is_some_and(|ip| self.source_ips.iter().any(|c| cidr_contains(c, ip))))
    }
}

fn header_matches(cond: &HeaderMatch, headers: &[(String, String)]) -> bool {
    if cond.regex {
        return false;
    }
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(&cond.name))
        .any(|(_, v)| cond.values.iter().any(|pat| glob_matches(pat, v)))
}

fn query_matches(cond: &QueryMatch, query: &str) -> bool {
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect();
    cond.pairs.iter().any(|want| {
        pairs.iter().any(|(k, v)| {
            want.key.as_deref().is_none_or(|wk| glob_matches(wk, k)) && glob_matches(&want.value, v)
        })
    })
}

/// Case-insensitive glob with `*` (any run) and `?` (one character), as ALB conditions use.
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = value.to_lowercase().chars().collect();
    glob_chars(&p, &v)
}

/// Case-sensitive glob over the whole path, as ALB path patterns match (`*` crosses `/`).
pub fn path_glob_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = path.chars().collect();
    glob_chars(&p, &v)
}

/// Backtracking over the last `*` only, so a hostile pattern costs O(pattern × value).
fn glob_chars(p: &[char], v: &[char]) -> bool {
    let (mut pi, mut vi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `cidr` (`a.b.c.d/n` or `v6/n`) contains `ip`. A malformed CIDR contains nothing.
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if len <= 128 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{prefix_matches, HostMatch};

    #[test]
    fn host_normalization_strips_port_and_case() {
        assert_eq!(normalize_host("Foo.Bar.com:8080"), "foo.bar.com");
        assert_eq!(normalize_host("foo.bar.com."), "foo.bar.com");
        assert_eq!(normalize_host("[::1]:443"), "::1");
        assert_eq!(normalize_host("example.com"), "example.com");
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let w = HostMatch::Wildcard("foo.com".into());
        assert!(w.matches("bar.foo.com"));
        assert!(!w.matches("baz.bar.foo.com"));
        assert!(!w.matches("foo.com"));
        assert!(!w.matches(".foo.com"));
    }

    #[test]
    fn prefix_is_element_wise() {
        // The examples table of the Kubernetes Ingress documentation.
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/foo", "/foo"));
        assert!(prefix_matches("/foo", "/foo/"));
        assert!(prefix_matches("/foo/", "/foo"));
        assert!(prefix_matches("/foo", "/foo/bar"));
        assert!(!prefix_matches("/foo", "/foobar"));
        assert!(!prefix_matches("/aaa/bb", "/aaa/bbb"));
        assert!(prefix_matches("/aaa/bbb", "/aaa/bbb/ccc"));
        assert!(!prefix_matches("/aaa/bbb/", "/aaa/bbbxyz"));
    }

    #[test]
    fn alb_path_patterns_match_the_whole_path() {
        let glob_matches = path_glob_matches;
        assert!(glob_matches("/*", "/"));
        assert!(glob_matches("/*", "/a/b/c"));
        assert!(glob_matches("/api/*", "/api/"));
        assert!(glob_matches("/api/*", "/api/v1/x"));
        assert!(!glob_matches("/api/*", "/api"));
        assert!(!glob_matches("/api/*", "/apix/y"));
        assert!(glob_matches("/img/*.png", "/img/a/b.png"));
        assert!(!glob_matches("/img/*.png", "/img/a.png.txt"));
        assert!(glob_matches("/v?/x", "/v1/x"));
        assert!(!glob_matches("/v?/x", "/v10/x"));
        assert!(!glob_matches("/API/*", "/api/x"), "case-sensitive, as ALB");
        assert!(glob_matches("/a*b*c", "/aXbYbZc"));
        assert!(!glob_matches("/a*b*c", "/aXbYbZ"));
        assert!(glob_matches("/**", "/"));
    }

    #[test]
    fn glob_and_cidr() {
        assert!(glob_matches("*.example.com", "A.EXAMPLE.com"));
        assert!(glob_matches("v?", "v1"));
        assert!(!glob_matches("v?", "v10"));
        assert!(cidr_contains("10.0.0.0/8", "10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains("10.0.0.0/8", "11.1.2.3".parse().unwrap()));
        assert!(!cidr_contains("garbage", "10.1.2.3".parse().unwrap()));
    }
}
