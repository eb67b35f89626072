//! Property: the indexed route table picks exactly the rule the model's first-match-wins
//! order picks, for random rule lists in any order (not only the builder's) and random
//! requests, including host-only rules and rules with extra conditions, with the list cut
//! into chunks anywhere.

use std::sync::Arc;

use proptest::prelude::*;
use tollgate_contract::matching::RequestFacts;
use tollgate_contract::{
    Action, Conditions, FixedResponse, HostMatch, Listener, ListenerProtocol, ObjectRef, PathKind,
    PathMatch, Rule, RuleList,
};
use tollgate_proxy::route::route_table::ListenerRoutes;

const HOSTS: &[Option<&str>] = &[
    None,
    Some("a.com"),
    Some("x.a.com"),
    Some("*.a.com"),
    Some("*.x.a.com"),
    Some("b.x.a.com"),
];
const PATHS: &[&str] = &["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b"];
const REQ_HOSTS: &[&str] = &[
    "a.com",
    "x.a.com",
    "y.a.com",
    "b.x.a.com",
    "c.x.a.com",
    "other.org",
];
const REQ_PATHS: &[&str] = &[
    "/", "/a", "/a/", "/a/b", "/a/bc", "/ab", "/a/b/c", "/a/b/c/d", "/b", "/c",
];

fn host(h: Option<&str>) -> Option<HostMatch> {
    h.map(|h| match h.strip_prefix("*.") {
        Some(s) => HostMatch::Wildcard(s.into()),
        None => HostMatch::Exact(h.into()),
    })
}

fn rule((h, p, kind, method): (usize, Option<usize>, u8, bool)) -> Rule {
    let kind = match kind % 3 {
        0 => PathKind::Exact,
        1 => PathKind::Prefix,
        _ => PathKind::Regex,
    };
    Rule {
        ingress: ObjectRef::new("ns", "ing"),
        conditions: Conditions {
            host: host(HOSTS[h]),
            path: p.map(|p| PathMatch {
                kind,
                // As a regex, "/a" matches every path starting with "/a" (anchored at the start).
                path: PATHS[p].into(),
            }),
            methods: if method { vec!["POST".into()] } else { vec![] },
            ..Default::default()
        },
        authenticate: None,
        action: Action::FixedResponse(FixedResponse::not_found()),
    }
}

/// First-match reference that also understands regex paths the way the proxy does.
fn reference(l: &Listener, req: &RequestFacts<'_>) -> Option<usize> {
    l.rules.iter().position(|r| {
        let mut c = r.conditions.clone();
        let path_ok = match &c.path {
            Some(PathMatch {
                kind: PathKind::Regex,
                path,
            }) => regex::Regex::new(&format!("(?i)^(?:{path})"))
                .unwrap()
                .is_match(req.path),
            _ => true,
        };
        if matches!(
            c.path,
            Some(PathMatch {
                kind: PathKind::Regex,
                ..
            })
        ) {
            c.path = None;
        }
        path_ok && c.matches(req)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_first_match(
        rules in prop::collection::vec((0..HOSTS.len(), prop::option::weighted(0.9, 0..PATHS.len()), any::<u8>(), prop::bool::weighted(0.1)), 0..14),
        requests in prop::collection::vec((0..REQ_HOSTS.len(), 0..REQ_PATHS.len(), any::<bool>()), 1..20),
        cuts in prop::collection::vec(any::<bool>(), 14),
    ) {
        // The rules cut into chunks at random places (a host's rules may span chunks, as
        // they never do from the builder): chunking must not change what matches.
        let rules: Vec<Rule> = rules.into_iter().map(rule).collect();
        let mut chunks: Vec<Vec<Rule>> = vec![Vec::new()];
        for (i, r) in rules.into_iter().enumerate() {
            if cuts[i] {
                chunks.push(Vec::new());
            }
            if let Some(last) = chunks.last_mut() {
                last.push(r);
            }
        }
        let listener = Listener {
            port: 80,
            protocol: ListenerProtocol::Http,
            certificates: vec![],
            ssl_policy: None,
            rules: RuleList::from_chunks(chunks.into_iter().map(Arc::from)),
            default_action: Action::FixedResponse(FixedResponse::not_found()),
            default_authenticate: None,
            attributes: Default::default(),
            mutual_authentication: None,
        };
        let table = ListenerRoutes::compile(&listener);
        for (h, p, post) in requests {
            let req = RequestFacts {
                host: REQ_HOSTS[h],
                path: REQ_PATHS[p],
                method: if post { "POST" } else { "GET" },
                ..Default::default()
            };
            prop_assert_eq!(table.lookup(&req), reference(&listener, &req), "request {:?}; rules {:#?}", req, listener.rules);
        }
    }
}
