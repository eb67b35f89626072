//! Property: a build that reuses what earlier builds cached (`build_with` and a `BuildCache`,
//! as the run loops hold it inside `LastKnownGood`) equals a build from scratch, after every
//! step of a random sequence of changes — Ingresses added, edited (valid and invalid),
//! re-created with the same content, deleted; Services (ports, deletion), their endpoints,
//! TLS Secrets and class parameters changed. The snapshot is changed the way the sources change it: one object
//! replaced by a new `Arc`, every other object shared with the snapshot before.

use std::sync::Arc;

use proptest::prelude::*;
use tollgate::sources::manifest_dir::parse_manifests;
use tollgate::{
    build, build_with, BuildCache, BuildOptions, ClusterSnapshot, Grouping, ProviderKind,
};

const SLOTS: usize = 6;
const HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "*.example.com",
    "",
    "www.a.example.com",
];
const PATHS: &[&str] = &["/", "/api", "/api/v1", "/*", "no-slash"];
const SERVICES: &[&str] = &["web", "api", "missing"];
const ANNOTATIONS: &[&str] = &[
    "",
    "alb.ingress.kubernetes.io/group.name: g1",
    "alb.ingress.kubernetes.io/group.name: g2, alb.ingress.kubernetes.io/group.order: '5'",
    "nginx.ingress.kubernetes.io/ssl-redirect: 'true'",
    "nginx.ingress.kubernetes.io/allowlist-source-range: 10.0.0.0/8",
    "alb.ingress.kubernetes.io/scheme: internal",
    "nginx.ingress.kubernetes.io/rewrite-targt: /",
    "alb.ingress.kubernetes.io/auth-type: oidc",
    "nginx.ingress.kubernetes.io/app-root: /app",
    "alb.ingress.kubernetes.io/group.order: '-3'",
    "nginx.ingress.kubernetes.io/from-to-www-redirect: 'true'",
    "nginx.ingress.kubernetes.io/canary: 'true', nginx.ingress.kubernetes.io/canary-by-header: X-Canary, nginx.ingress.kubernetes.io/canary-weight: '30'",
    "nginx.ingress.kubernetes.io/canary: 'true', nginx.ingress.kubernetes.io/canary-by-cookie: c",
];
const SECRETS: &[&str] = &["", "tls-a", "tls-wild", "tls-missing"];

fn cert(name: &str) -> String {
    let path = format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pem_field(pem: &str) -> String {
    // A block scalar keeps the PEM's lines.
    pem.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone)]
struct IngressSpec {
    host: usize,
    path: usize,
    service: usize,
    annotation: usize,
    secret: usize,
}

fn ingress_yaml(slot: usize, s: &IngressSpec) -> String {
    let host = HOSTS[s.host];
    let host_line = if host.is_empty() {
        String::new()
    } else {
        format!("    host: \"{host}\"\n")
    };
    let tls = match SECRETS[s.secret] {
        "" => String::new(),
        name => format!("  tls:\n  - hosts: [a.example.com]\n    secretName: {name}\n"),
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ing-{slot}\n  namespace: shop\n  annotations: {{{}}}\nspec:\n  ingressClassName: tollgate\n{tls}  rules:\n  -\n{host_line}    http:\n      paths:\n      - path: \"{}\"\n        pathType: {}\n        backend: {{service: {{name: {}, port: {{number: 80}}}}}}\n",
        ANNOTATIONS[s.annotation],
        PATHS[s.path],
        if PATHS[s.path].contains('*') { "ImplementationSpecific" } else { "Prefix" },
        SERVICES[s.service],
    )
}

fn service_yaml(name: &str, endpoints: &[u8]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|e| format!("- addresses: [10.0.0.{e}]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: shop\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:{}",
        if eps.is_empty() { " []\n".to_string() } else { format!("\n{eps}") }
    )
}

fn secret_yaml(name: &str, crt: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        pem_field(&cert(crt)),
        pem_field(&cert(key))
    )
}

fn parse(text: &str) -> ClusterSnapshot {
    let (snap, diags) = parse_manifests("step.yaml", text, false);
    assert!(diags.is_empty(), "{text}\n{diags:?}");
    snap
}

#[derive(Debug, Clone)]
enum Step {
    /// Put this Ingress in the slot (adds it, or replaces what is there).
    Put(usize, IngressSpec),
    Delete(usize),
    /// The same content as a new object (a re-read file, a resync).
    Recreate(usize),
    Endpoints(usize, Vec<u8>),
    /// `web` or `api` as it was, with another port (backends naming port 80 no longer
    /// resolve), or deleted.
    Service(usize, u8),
    /// `tls-a` gets a matching pair, a key of another certificate, or is deleted.
    SecretA(u8),
    ClassParams(Option<bool>),
}

fn spec() -> impl Strategy<Value = IngressSpec> {
    (
        0..HOSTS.len(),
        0..PATHS.len(),
        0..SERVICES.len(),
        0..ANNOTATIONS.len(),
        0..SECRETS.len(),
    )
        .prop_map(|(host, path, service, annotation, secret)| IngressSpec {
            host,
            path,
            service,
            annotation,
            secret,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..SLOTS, spec()).prop_map(|(i, s)| Step::Put(i, s)),
        1 => (0..SLOTS).prop_map(Step::Delete),
        1 => (0..SLOTS).prop_map(Step::Recreate),
        1 => (0..2usize, proptest::collection::vec(1u8..6, 0..3)).prop_map(|(s, e)| Step::Endpoints(s, e)),
        1 => (0u8..3).prop_map(Step::SecretA),
        1 => (0..2usize, 0u8..3).prop_map(|(s, v)| Step::Service(s, v)),
        1 => proptest::option::of(any::<bool>()).prop_map(Step::ClassParams),
    ]
}

/// The cluster as slots, so a step replaces exactly one object.
struct Cluster {
    ingresses: Vec<Option<Arc<k8s_openapi::api::networking::v1::Ingress>>>,
    base: ClusterSnapshot,
}

impl Cluster {
    fn new() -> Self {
        let mut base = parse(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: tollgate}}\nspec: {{controller: tollgate.io/ingress-controller}}\n---\n{}---\n{}---\n{}---\n{}",
            service_yaml("web", &[1, 2]),
            service_yaml("api", &[3]),
            secret_yaml("tls-a", "a.crt", "a.key"),
            secret_yaml("tls-wild", "wild.crt", "wild.key"),
        ));
        base.ingresses.clear();
        Cluster {
            ingresses: vec![None; SLOTS],
            base,
        }
    }

    fn snapshot(&self) -> ClusterSnapshot {
        let mut s = self.base.clone();
        s.ingresses = self.ingresses.iter().flatten().cloned().collect();
        s
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Put(i, s) => {
                let snap = parse(&ingress_yaml(*i, s));
                self.ingresses[*i] = snap.ingresses.first().cloned();
            }
            Step::Delete(i) => self.ingresses[*i] = None,
            Step::Recreate(i) => {
                if let Some(ing) = &self.ingresses[*i] {
                    self.ingresses[*i] = Some(Arc::new((**ing).clone()));
                }
            }
            Step::Endpoints(s, eps) => {
                let name = ["web", "api"][*s];
                let snap = parse(&service_yaml(name, eps));
                let slice = snap.endpoint_slices[0].clone();
                for e in &mut self.base.endpoint_slices {
                    if e.metadata.name == slice.metadata.name {
                        *e = slice.clone();
                    }
                }
            }
            Step::Service(s, v) => {
                let name = ["web", "api"][*s];
                self.base
                    .services
                    .retain(|x| x.metadata.name.as_deref() != Some(name));
                if *v < 2 {
                    let text = service_yaml(name, &[]);
                    let text = if *v == 1 {
                        text.replace("port: 80,", "port: 81,")
                    } else {
                        text
                    };
                    self.base.services.extend(parse(&text).services);
                }
            }
            Step::SecretA(v) => {
                self.base
                    .secrets
                    .retain(|s| s.metadata.name.as_deref() != Some("tls-a"));
                let text = match v {
                    0 => secret_yaml("tls-a", "a.crt", "a.key"),
                    1 => secret_yaml("tls-a", "a.crt", "other.key"),
                    _ => return,
                };
                self.base.secrets.extend(parse(&text).secrets);
            }
            Step::ClassParams(p) => {
                let mut snap = parse(&match p {
                    None => "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: tollgate}\nspec: {controller: tollgate.io/ingress-controller}\n".to_string(),
                    Some(internal) => format!(
                        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: tollgate}}\nspec:\n  controller: tollgate.io/ingress-controller\n  parameters: {{apiGroup: tollgate.io, kind: TollgateClassParams, name: p}}\n---\napiVersion: tollgate.io/v1alpha1\nkind: TollgateClassParams\nmetadata: {{name: p}}\nspec: {{scheme: {}}}\n",
                        if *internal { "internal" } else { "internet-facing" }
                    ),
                });
                self.base.ingress_classes = std::mem::take(&mut snap.ingress_classes);
                self.base.class_params = std::mem::take(&mut snap.class_params);
            }
        }
    }
}

fn options(provider: ProviderKind) -> BuildOptions {
    BuildOptions {
        provider,
        grouping: match provider {
            ProviderKind::Proxy => Grouping::Single("proxy".into()),
            ProviderKind::Aws => Grouping::ByIngressGroup,
        },
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_build_from_the_cache_equals_a_build_from_scratch(
        steps in proptest::collection::vec(step(), 1..30),
        aws in any::<bool>(),
    ) {
        let opts = options(if aws { ProviderKind::Aws } else { ProviderKind::Proxy });
        let mut cluster = Cluster::new();
        let mut cache = BuildCache::default();
        for (n, s) in steps.iter().enumerate() {
            cluster.apply(s);
            let snap = cluster.snapshot();
            let cached = build_with(&snap, &opts, &mut cache);
            let scratch = build(&snap, &opts);
            prop_assert_eq!(&cached.model, &scratch.model, "model after step {} ({:?})", n, s);
            prop_assert_eq!(&cached.diagnostics, &scratch.diagnostics, "diagnostics after step {} ({:?})", n, s);
        }
    }
}

/// The property above is only worth something if the steps reach the cases that matter: a
/// valid and an invalid Ingress, a usable and an unusable Secret, with and without class
/// parameters. This checks the generators' pool does.
#[test]
fn the_pool_covers_valid_invalid_and_secret_cases() {
    let opts = options(ProviderKind::Proxy);
    let mut cluster = Cluster::new();
    let valid = IngressSpec {
        host: 0,
        path: 1,
        service: 0,
        annotation: 0,
        secret: 1,
    };
    cluster.apply(&Step::Put(0, valid.clone()));
    let ok = build(&cluster.snapshot(), &opts);
    assert!(!ok.has_errors(), "{:?}", ok.diagnostics);
    assert!(ok.model.load_balancers[0]
        .listeners
        .iter()
        .any(|l| !l.certificates.is_empty()));
    cluster.apply(&Step::SecretA(1));
    let bad_key = build(&cluster.snapshot(), &opts);
    assert!(bad_key.has_errors() || !bad_key.diagnostics.is_empty());
    cluster.apply(&Step::Put(
        1,
        IngressSpec {
            path: 4,
            ..valid.clone()
        },
    ));
    let invalid = build(&cluster.snapshot(), &opts);
    assert!(invalid.has_errors());
    cluster.apply(&Step::ClassParams(Some(true)));
    assert_eq!(cluster.snapshot().class_params.len(), 1);
}

/// A host whose rules read the same on the HTTP and the HTTPS listener is one allocation in
/// both (the proxy compiles it once; issue 16's memory); one whose rules differ (a redirect to
/// HTTPS on HTTP) is not shared.
#[test]
fn a_host_served_alike_on_both_listeners_is_one_chunk() {
    let manifests = format!(
        "{}---\n{}---\n{}",
        service_yaml("web", &[1, 2]),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: plain, namespace: shop}\nspec:\n  ingressClassName: tollgate\n  rules: [{host: plain.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: secure, namespace: shop, annotations: {nginx.ingress.kubernetes.io/force-ssl-redirect: 'true'}}\nspec:\n  ingressClassName: tollgate\n  rules: [{host: secure.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n",
    );
    let (snap, _) = parse_manifests("case.yaml", &manifests, false);
    let out = tollgate::build(&snap, &options(ProviderKind::Proxy));
    let lb = &out.model.load_balancers[0];
    let chunk = |port: u16, host: &str| {
        let l = lb.listener(port).expect("listener");
        l.rules
            .chunks()
            .iter()
            .find(|c| {
                c.first().is_some_and(|r| {
                    r.conditions.host == Some(tollgate_contract::HostMatch::Exact(host.to_string()))
                })
            })
            .cloned()
            .unwrap_or_else(|| panic!("no chunk for {host} on {port}"))
    };
    let (p80, p443) = (
        chunk(80, "plain.example.com"),
        chunk(443, "plain.example.com"),
    );
    assert!(Arc::ptr_eq(&p80, &p443), "same rules, one allocation");
    let (s80, s443) = (
        chunk(80, "secure.example.com"),
        chunk(443, "secure.example.com"),
    );
    assert_ne!(*s80, *s443, "HTTP redirects, HTTPS forwards");
    assert!(!Arc::ptr_eq(&s80, &s443));
}

/// A from-to-www redirect kept between builds follows the Ingress that asks for it: when the
/// first of two asking Ingresses goes, the kept redirect is the second's (the random steps
/// above rarely reach this).
#[test]
fn a_kept_www_redirect_follows_the_ingress_that_asks_for_it() {
    let opts = options(ProviderKind::Proxy);
    let www = ANNOTATIONS
        .iter()
        .position(|a| a.contains("from-to-www-redirect"))
        .expect("in the pool");
    let spec = IngressSpec {
        host: 0,
        path: 0,
        service: 0,
        annotation: www,
        secret: 0,
    };
    let mut cluster = Cluster::new();
    let mut cache = BuildCache::default();
    for step in [
        Step::Put(0, spec.clone()),
        Step::Put(1, spec.clone()),
        Step::Delete(0),
    ] {
        cluster.apply(&step);
        let snap = cluster.snapshot();
        let cached = build_with(&snap, &opts, &mut cache);
        assert_eq!(cached.model, build(&snap, &opts).model, "after {step:?}");
    }
}
