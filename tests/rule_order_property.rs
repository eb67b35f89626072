//! Property: the rule order the builder emits, evaluated first-match-wins, picks the same
//! backend as a direct implementation of the Ingress specification's matching rules, for
//! random sets of hosts, paths and path types across several Ingresses, and random requests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use tollgate::{build, BuildOptions, ClusterSnapshot, Grouping, ProviderKind};
use tollgate_contract::matching::RequestFacts;
use tollgate_contract::Action;

const HOSTS: &[&str] = &[
    "a.com",
    "x.a.com",
    "y.a.com",
    "*.a.com",
    "b.x.a.com",
    "*.x.a.com",
];
const PATHS: &[&str] = &["/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b", "/a/b/"];
const REQ_HOSTS: &[&str] = &[
    "a.com",
    "x.a.com",
    "y.a.com",
    "z.a.com",
    "b.x.a.com",
    "c.x.a.com",
    "q.b.x.a.com",
    "other.org",
    "X.A.com:8080",
];
const REQ_PATHS: &[&str] = &[
    "/", "/a", "/a/", "/a/b", "/a/bc", "/ab", "/a/b/c", "/a/b/c/d", "/b", "/b/", "/c", "/a/b/",
];

/// One path of a generated Ingress: host index (None = no host), path index, exact?, backend.
type GenPath = (Option<usize>, usize, bool, usize);

#[derive(Debug, Clone)]
struct GenIngress {
    paths: Vec<GenPath>,
    default_backend: Option<usize>,
}

fn gen_ingress() -> impl Strategy<Value = GenIngress> {
    (
        prop::collection::vec(
            (
                prop::option::weighted(0.8, 0..HOSTS.len()),
                0..PATHS.len(),
                any::<bool>(),
                0..6usize,
            ),
            0..6,
        ),
        prop::option::weighted(0.2, 0..6usize),
    )
        .prop_map(|(paths, default_backend)| GenIngress {
            paths,
            default_backend,
        })
}

fn backend(i: usize) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: format!("svc{i}"),
            port: Some(ServiceBackendPort {
                number: Some(80),
                name: None,
            }),
        }),
        resource: None,
    }
}

fn snapshot(ings: &[GenIngress]) -> ClusterSnapshot {
    let mut snap = ClusterSnapshot::default();
    for i in 0..6 {
        snap.services.push(
            Service {
                metadata: ObjectMeta {
                    name: Some(format!("svc{i}")),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    ports: Some(vec![ServicePort {
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
        );
    }
    for (n, g) in ings.iter().enumerate() {
        // One IngressRule per path keeps the generator simple; rules with equal hosts merge.
        let rules: Vec<IngressRule> = g
            .paths
            .iter()
            .map(|(h, p, exact, b)| IngressRule {
                host: h.map(|h| HOSTS[h].to_string()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(PATHS[*p].to_string()),
                        path_type: if *exact { "Exact" } else { "Prefix" }.into(),
                        backend: backend(*b),
                    }],
                }),
            })
            .collect();
        let has_rules = !rules.is_empty();
        snap.ingresses.push(
            Ingress {
                metadata: ObjectMeta {
                    name: Some(format!("ing{n:02}")),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                spec: Some(IngressSpec {
                    ingress_class_name: Some("tollgate".into()),
                    rules: has_rules.then_some(rules),
                    // An Ingress needs rules or a default backend; give the empty ones one.
                    default_backend: g.default_backend.or((!has_rules).then_some(0)).map(backend),
                    ..Default::default()
                }),
                status: None,
            }
            .into(),
        );
    }
    snap
}

/// The specification, implemented directly: select the host (exact, else the one-label
/// wildcard, else host-less rules), then the longest matching path, Exact before Prefix at
/// equal length; identical routes go to the Ingress with precedence (here: name order).
/// `None` is the controller's 404.
fn reference(ings: &[GenIngress], req_host: &str, req_path: &str) -> Option<usize> {
    let req_host = req_host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let host_matches = |pattern: &str| -> bool {
        match pattern.strip_prefix("*.") {
            Some(suffix) => req_host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => pattern == req_host,
        }
    };
    // (host, path, exact, backend) in precedence order, first definition of a route only.
    let mut routes: Vec<(Option<&str>, &str, bool, usize)> = Vec::new();
    let mut seen = BTreeMap::new();
    for g in ings {
        for (h, p, exact, b) in &g.paths {
            let host = h.map(|h| HOSTS[h]);
            let path = PATHS[*p];
            let norm = if *exact {
                path
            } else {
                path.trim_end_matches('/')
            };
            if seen.insert((host, norm, *exact), ()).is_none() {
                routes.push((host, path, *exact, *b));
            }
        }
    }
    let exact_host: Vec<_> = routes
        .iter()
        .filter(|r| r.0.is_some_and(|h| !h.starts_with('*') && host_matches(h)))
        .collect();
    let wildcard: Vec<_> = routes
        .iter()
        .filter(|r| r.0.is_some_and(|h| h.starts_with('*') && host_matches(h)))
        .collect();
    let hostless: Vec<_> = routes.iter().filter(|r| r.0.is_none()).collect();
    let selected = if !exact_host.is_empty() {
        exact_host
    } else if !wildcard.is_empty() {
        wildcard
    } else {
        hostless
    };
    let mut best: Option<(usize, bool, usize)> = None; // (match length, exact, backend)
    for (_, path, exact, b) in selected {
        let (matched, len) = if *exact {
            (*path == req_path, path.len())
        } else {
            let p = path.trim_end_matches('/');
            let ok = p.is_empty() || req_path == p || req_path.starts_with(&format!("{p}/"));
            (ok, p.len())
        };
        if matched && best.is_none_or(|(bl, be, _)| (len, *exact) > (bl, be)) {
            best = Some((len, *exact, *b));
        }
    }
    best.map(|(_, _, b)| b).or_else(|| {
        ings.iter()
            .find_map(|g| g.default_backend.or((g.paths.is_empty()).then_some(0)))
    })
}

fn backend_of(action: &Action) -> Option<usize> {
    match action {
        Action::Forward(f) => {
            let tg = &f.target_groups.first()?.target_group; // "default/svcN:80"
            tg.strip_prefix("default/svc")?
                .split(':')
                .next()?
                .parse()
                .ok()
        }
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn ordered_rules_agree_with_the_specification(
        ings in prop::collection::vec(gen_ingress(), 1..5),
        requests in prop::collection::vec((0..REQ_HOSTS.len(), 0..REQ_PATHS.len()), 1..20),
    ) {
        let opts = BuildOptions { grouping: Grouping::Single("proxy".into()), provider: ProviderKind::Proxy, ..BuildOptions::default() };
        let out = build(&snapshot(&ings), &opts);
        prop_assert!(!out.has_errors(), "{:?}", out.diagnostics);
        let lb = &out.model.load_balancers[0];
        let listener = lb.listener(80).expect("port 80 listener");
        for (h, p) in requests {
            let host = tollgate_contract::matching::normalize_host(REQ_HOSTS[h]);
            let facts = RequestFacts { host: &host, path: REQ_PATHS[p], method: "GET", ..Default::default() };
            let got = backend_of(listener.route(&facts));
            let want = reference(&ings, REQ_HOSTS[h], REQ_PATHS[p]);
            prop_assert_eq!(got, want, "request {} {}; rules: {:#?}", REQ_HOSTS[h], REQ_PATHS[p], listener.rules);
        }
    }
}
