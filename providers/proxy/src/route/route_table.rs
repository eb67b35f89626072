//! The model's ordered rules compiled into an indexed table.
//!
//! A lookup touches at most three host buckets (the exact host, the one wildcard that can
//! match it, the host-less rules) and, inside each, does one hash lookup for `Exact` paths and
//! one per path segment for `Prefix` paths. Each bucket reports the lowest rule index that
//! matches, and the lowest over all buckets wins: exactly the first-match-wins meaning of the
//! model ([`tollgate_contract::Listener::route`]) for any rule order, which a property test
//! checks. Rules the index cannot express (regular expressions, header/query/method/source
//! conditions) are scanned in order within their bucket.

use std::sync::Arc;

use regex::Regex;
use tollgate_contract::matching::RequestFacts;
use tollgate_contract::{Conditions, HostMatch, Listener, PathKind, PathMatch, Rule};

/// Looked up on every request (hosts, exact paths): a fast hash, still randomly keyed.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Index of a rule in its listener's rule list; the listener default is `usize::MAX`.
pub type RuleIndex = usize;

#[derive(Debug, Default)]
struct HostBucket {
    exact: HashMap<String, RuleIndex>,
    /// Keyed by the prefix without its trailing `/` (`""` for `/`).
    prefix: HashMap<String, RuleIndex>,
    /// A rule with a host condition and no path condition (a fence).
    any_path: Option<RuleIndex>,
    /// Rules scanned in order: regex paths, extra conditions.
    scanned: Vec<ScannedRule>,
}

#[derive(Debug)]
struct ScannedRule {
    index: RuleIndex,
    regex: Option<Regex>,
    /// The path when it is not a regex (the regex above checks it otherwise).
    path: Option<PathMatch>,
    /// The conditions other than host, path and regex headers, checked by the reference
    /// evaluation; set apart once here, not per request.
    rest: Conditions,
    /// Regex header conditions: the header, and expressions one of which must match one of
    /// its values.
    header_regexes: Vec<(String, Vec<Regex>)>,
    /// Host expressions (ALB `host-header` `regexValues`): one must be found in the host.
    host_regexes: Vec<Regex>,
}

fn keep_lowest(slot: &mut Option<RuleIndex>, i: RuleIndex) {
    if slot.is_none_or(|cur| i < cur) {
        *slot = Some(i);
    }
}

impl HostBucket {
    fn insert(&mut self, index: RuleIndex, conditions: &Conditions) -> Result<(), regex::Error> {
        let simple = conditions.headers.is_empty()
            && conditions.host_regexes.is_empty()
            && conditions.query.is_empty()
            && conditions.methods.is_empty()
            && conditions.source_ips.is_empty();
        match (&conditions.path, simple) {
            (None, true) => keep_lowest(&mut self.any_path, index),
            (
                Some(PathMatch {
                    kind: PathKind::Exact,
                    path,
                }),
                true,
            ) => {
                let e = self.exact.entry(path.clone()).or_insert(index);
                *e = (*e).min(index);
            }
            (
                Some(PathMatch {
                    kind: PathKind::Prefix,
                    path,
                }),
                true,
            ) => {
                let key = path.trim_end_matches('/').to_string();
                let e = self.prefix.entry(key).or_insert(index);
                *e = (*e).min(index);
            }
            (path, _) => {
                let regex = match path {
                    // ingress-nginx matches regex locations case-insensitively, anchored at
                    // the start of the path.
                    Some(PathMatch {
                        kind: PathKind::Regex,
                        path,
                    }) => Some(Regex::new(&format!("(?i)^(?:{path})"))?),
                    // ALB's expressions are searched in the path, case-sensitive.
                    Some(PathMatch {
                        kind: PathKind::AlbRegex,
                        path,
                    }) => Some(Regex::new(path)?),
                    _ => None,
                };
                let mut rest = conditions.clone();
                rest.host = None;
                let path = rest.path.take().filter(|_| regex.is_none());
                let mut header_regexes = Vec::new();
                for h in std::mem::take(&mut rest.headers) {
                    if h.regex {
                        let res = h
                            .values
                            .iter()
                            .map(|v| Regex::new(v))
                            .collect::<Result<Vec<_>, _>>()?;
                        header_regexes.push((h.name, res));
                    } else {
                        rest.headers.push(h);
                    }
                }
                let host_regexes = std::mem::take(&mut rest.host_regexes)
                    .iter()
                    .map(|r| Regex::new(r))
                    .collect::<Result<Vec<_>, _>>()?;
                self.scanned.push(ScannedRule {
                    index,
                    regex,
                    path,
                    rest,
                    header_regexes,
                    host_regexes,
                });
            }
        }
        Ok(())
    }

    /// The lowest-index rule of this bucket that matches.
    fn lookup(&self, req: &RequestFacts<'_>) -> Option<RuleIndex> {
        let mut best = self.any_path;
        if let Some(&i) = self.exact.get(req.path) {
            keep_lowest(&mut best, i);
        }
        if !self.prefix.is_empty() {
            // Every element-wise prefix of the path: "/a/b/c" → "/a/b/c", "/a/b", "/a", "".
            let path = req.path.trim_end_matches('/');
            let mut end = path.len();
            loop {
                if let Some(&i) = self.prefix.get(&path[..end]) {
                    keep_lowest(&mut best, i);
                }
                match path[..end].rfind('/') {
                    Some(pos) => end = pos,
                    None => break,
                }
            }
            // "/a/" also matches prefix "/a/": covered, since the key is "/a".
        }
        for s in &self.scanned {
            if best.is_some_and(|b| b < s.index) {
                break; // scanned rules are in index order; nothing later can win
            }
            let path_ok = match (&s.regex, &s.path) {
                (Some(re), _) => re.is_match(req.path),
                (None, Some(p)) => p.matches(req.path),
                (None, None) => true,
            };
            let headers_ok = s.header_regexes.iter().all(|(name, res)| {
                req.headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .any(|(_, v)| res.iter().any(|re| re.is_match(v)))
            });
            let host_ok =
                s.host_regexes.is_empty() || s.host_regexes.iter().any(|re| re.is_match(req.host));
            if path_ok && headers_ok && host_ok && s.rest.matches(req) {
                keep_lowest(&mut best, s.index);
                break;
            }
        }
        best
    }
}

/// A host a bucket serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostKey {
    Exact(Arc<str>),
    Wildcard(Arc<str>),
    Any,
}

/// The compiled routes of one chunk of a listener's rules ([`tollgate_contract::RuleList`]),
/// with rule indices local to the chunk. A chunk the model carries over unchanged (the same
/// allocation) is compiled once and shared by every generation that has it.
#[derive(Debug, Default)]
pub struct ChunkRoutes {
    buckets: Vec<(HostKey, HostBucket)>,
    /// Compiled regexes for rules with regex paths, for rewrites; by local rule index.
    regexes: HashMap<RuleIndex, Regex>,
    needs_details: bool,
    len: usize,
}

impl ChunkRoutes {
    /// Compiles a chunk's rules. A rule whose regex does not compile is left out (the builder
    /// has already rejected such Ingresses, so this only guards the contract).
    pub fn compile(rules: &[Rule]) -> Self {
        let mut t = ChunkRoutes {
            len: rules.len(),
            ..ChunkRoutes::default()
        };
        let mut at: HashMap<HostKey, usize> = HashMap::default();
        for (i, rule) in rules.iter().enumerate() {
            let c = &rule.conditions;
            t.needs_details |= !(c.headers.is_empty()
                && c.host_regexes.is_empty()
                && c.query.is_empty()
                && c.methods.is_empty()
                && c.source_ips.is_empty());
            let key = match &rule.conditions.host {
                Some(HostMatch::Exact(h)) => HostKey::Exact(Arc::from(h.as_str())),
                Some(HostMatch::Wildcard(s)) => HostKey::Wildcard(Arc::from(s.as_str())),
                None => HostKey::Any,
            };
            let bi = *at.entry(key.clone()).or_insert_with(|| {
                t.buckets.push((key, HostBucket::default()));
                t.buckets.len() - 1
            });
            if let Err(e) = t.buckets[bi].1.insert(i, &rule.conditions) {
                tracing::warn!(rule = i, error = %e, "rule left out: its path does not compile");
                continue;
            }
            if let Some(PathMatch {
                kind: PathKind::Regex,
                path,
            }) = &rule.conditions.path
            {
                if let Ok(re) = Regex::new(&format!("(?i)^(?:{path})")) {
                    t.regexes.insert(i, re);
                }
            }
        }
        t
    }

    /// How many rules the chunk has.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Where a host's buckets are: (chunk, bucket) pairs. Nearly always one (the builder puts a
/// host's rules in one chunk); more when a host's rules are spread over chunks.
#[derive(Debug, Default)]
struct Buckets {
    first: Option<(u32, u32)>,
    more: Vec<(u32, u32)>,
}

impl Buckets {
    fn push(&mut self, at: (u32, u32)) {
        match self.first {
            None => self.first = Some(at),
            Some(_) => self.more.push(at),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }
}

/// The compiled routes of one listener: its chunks, and which chunk buckets serve each host.
#[derive(Debug, Default)]
pub struct ListenerRoutes {
    /// Each chunk with the index of its first rule in the listener, in order.
    chunks: Vec<(RuleIndex, Arc<ChunkRoutes>)>,
    exact_hosts: HashMap<Arc<str>, Buckets>,
    wildcard_hosts: HashMap<Arc<str>, Buckets>,
    hostless: Buckets,
    /// Whether some rule looks at headers, query, method or source address.
    needs_details: bool,
}

impl ListenerRoutes {
    /// Compiles a listener's rules, chunk by chunk.
    pub fn compile(listener: &Listener) -> Self {
        Self::assemble(
            listener
                .rules
                .chunks()
                .iter()
                .map(|c| Arc::new(ChunkRoutes::compile(c))),
        )
    }

    /// A listener from its compiled chunks, in rule order; costs a map insert per host.
    pub fn assemble(chunks: impl IntoIterator<Item = Arc<ChunkRoutes>>) -> Self {
        let mut t = ListenerRoutes::default();
        let mut base = 0;
        for chunk in chunks {
            let ci = u32::try_from(t.chunks.len()).unwrap_or(u32::MAX);
            for (bi, (key, _)) in chunk.buckets.iter().enumerate() {
                let at = (ci, u32::try_from(bi).unwrap_or(u32::MAX));
                match key {
                    HostKey::Exact(h) => t.exact_hosts.entry(h.clone()).or_default().push(at),
                    HostKey::Wildcard(s) => t.wildcard_hosts.entry(s.clone()).or_default().push(at),
                    HostKey::Any => t.hostless.push(at),
                }
            }
            t.needs_details |= chunk.needs_details;
            let len = chunk.len;
            t.chunks.push((base, chunk));
            base += len;
        }
        t
    }

    fn lookup_in(&self, buckets: &Buckets, req: &RequestFacts<'_>, best: &mut Option<RuleIndex>) {
        for (ci, bi) in buckets.iter() {
            let Some((base, chunk)) = self.chunks.get(ci as usize) else {
                continue;
            };
            if let Some(i) = chunk
                .buckets
                .get(bi as usize)
                .and_then(|(_, b)| b.lookup(req))
            {
                keep_lowest(best, base + i);
            }
        }
    }

    /// The first rule (in the model's order) that matches, or `None` for the default action.
    pub fn lookup(&self, req: &RequestFacts<'_>) -> Option<RuleIndex> {
        let mut best = None;
        if let Some(b) = self.exact_hosts.get(req.host) {
            self.lookup_in(b, req, &mut best);
        }
        if let Some((first, rest)) = req.host.split_once('.') {
            if !first.is_empty() {
                if let Some(b) = self.wildcard_hosts.get(rest) {
                    self.lookup_in(b, req, &mut best);
                }
            }
        }
        self.lookup_in(&self.hostless, req, &mut best);
        best
    }

    /// Whether lookups need the request's headers (and query, method, source address).
    pub fn needs_request_details(&self) -> bool {
        self.needs_details
    }

    /// The chunk holding rule `rule` and the rule's index within it.
    pub fn locate(&self, rule: RuleIndex) -> Option<(usize, usize)> {
        let ci = self
            .chunks
            .partition_point(|(base, _)| *base <= rule)
            .checked_sub(1)?;
        let (base, chunk) = self.chunks.get(ci)?;
        let local = rule - base;
        (local < chunk.len).then_some((ci, local))
    }

    /// The compiled regex of a regex-path rule.
    pub fn regex(&self, rule: RuleIndex) -> Option<&Regex> {
        let (ci, local) = self.locate(rule)?;
        self.chunks.get(ci)?.1.regexes.get(&local)
    }
}

/// Applies an ingress-nginx `rewrite-target` (`/$2`) to a path matched by `re`.
pub fn rewrite_path(re: &Regex, path: &str, target: &str) -> String {
    // nginx's `$2abc` means group 2 then "abc"; Rust's replacement syntax needs `${2}abc`.
    let mut tpl = String::with_capacity(target.len() + 4);
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            tpl.push_str("${");
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                tpl.push(d);
                chars.next();
            }
            tpl.push('}');
        } else if c == '$' {
            tpl.push_str("$$");
        } else {
            tpl.push(c);
        }
    }
    match re.captures(path) {
        Some(caps) => {
            let mut out = String::new();
            caps.expand(&tpl, &mut out);
            let out = encode_target(&out);
            if out.starts_with('/') {
                out
            } else {
                format!("/{out}")
            }
        }
        None => path.to_string(),
    }
}

/// Percent-encodes what may not appear in a request target: the rewritten path is written
/// into the upstream request line as is, and a rewrite target is configuration, not a
/// parsed URI (a space or CR LF in an annotation must not split the request line).
fn encode_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_graphic()
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_like_nginx() {
        let re = Regex::new("(?i)^(?:/something(/|$)(.*))").unwrap();
        assert_eq!(rewrite_path(&re, "/something/new", "/$2"), "/new");
        assert_eq!(rewrite_path(&re, "/something", "/$2"), "/");
        assert_eq!(rewrite_path(&re, "/something/a/b", "/x/$2y"), "/x/a/by");
        assert_eq!(rewrite_path(&re, "/SOMETHING/a", "/$2"), "/a");
    }

    #[test]
    fn rewritten_paths_cannot_split_the_request_line() {
        let re = Regex::new("^(/.*)").unwrap();
        assert_eq!(
            rewrite_path(&re, "/a", "/x y\r\nX-Injected: 1$1"),
            "/x%20y%0D%0AX-Injected:%201/a"
        );
        assert_eq!(rewrite_path(&re, "/a", "/caf\u{e9}$1"), "/caf%C3%A9/a");
        assert_eq!(
            rewrite_path(&re, "/a", "/keep?q=1&r=%41$1"),
            "/keep?q=1&r=%41/a"
        );
    }
}
