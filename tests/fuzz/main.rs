//! Fuzz targets for the parsers that take input from outside, run by [`engine`] on stable:
//!
//! - `manifest_reader`: manifest text (YAML and JSON) → snapshot → model for both providers
//!   → the proxy's compiled configuration;
//! - `annotations`: every registered annotation with mutated values, on an Ingress and its
//!   Service, through the builder and the proxy;
//! - `http1_relay`: request heads through the relay's parser and router (the head a target
//!   would get must be one unambiguous request with the routed Host and none of the
//!   client's forwarding headers), response heads, and chunked bodies split anywhere;
//! - `route_table`: random rules and requests; the indexed table must pick the rule the
//!   model's first-match order picks.
//!
//! Each runs `TOLLGATE_FUZZ_SECONDS` (3 in CI). The full run is documented in
//! `docs/fuzzing.md`.

mod engine;

use std::net::IpAddr;
use std::path::Path;

use engine::{budget, run, CountingAllocator, Rng};
use tollgate::model_builder::annotation_registry::REGISTRY;
use tollgate::sources::manifest_dir::parse_manifests;
use tollgate::{build, BuildOptions, Grouping, ProviderKind};
use tollgate_contract::matching::{normalize_host, RequestFacts};
use tollgate_contract::{
    Action, Conditions, FixedResponse, HeaderMatch, HostMatch, Listener, ListenerProtocol,
    ObjectRef, PathKind, PathMatch, QueryMatch, QueryPair, Rule,
};
use tollgate_proxy::fuzzing::{chunked_end, response_head, RelayHarness, RequestOutcome};
use tollgate_proxy::route::route_table::ListenerRoutes;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn seed_of(name: &str) -> u64 {
    let base = std::env::var("TOLLGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    name.bytes()
        .fold(base, |h, b| h.rotate_left(5) ^ u64::from(b))
}

fn assert_clean(name: &str, report: engine::Report) {
    eprintln!(
        "fuzz {name}: {} inputs, corpus {}, {} failures",
        report.executions,
        report.corpus,
        report.failures.len()
    );
    assert!(
        report.failures.is_empty(),
        "fuzz {name} found:\n{}",
        report.failures.join("\n")
    );
    assert!(report.executions > 0);
}

fn options(provider: ProviderKind) -> BuildOptions {
    BuildOptions {
        grouping: Grouping::Single("fuzz".into()),
        provider,
        ..BuildOptions::default()
    }
}

/// Every manifest in `examples/` and `tests/fixtures/`.
fn manifest_seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut stack = vec![root.join("examples"), root.join("tests/fixtures")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
    }
    out.sort();
    out
}

const YAML_WORDS: &[&[u8]] = &[
    b"apiVersion: networking.k8s.io/v1\n",
    b"kind: Ingress\n",
    b"kind: Service\n",
    b"kind: List\n",
    b"kind: EndpointSlice\n",
    b"kind: Secret\n",
    b"items:\n- ",
    b"---\n",
    b"&a [*a, *a, *a]",
    b"*a",
    b"&b {k: &c [1, 2]}",
    b"!!binary ",
    b"!!str ",
    b"? ",
    b"<<: *a\n",
    b"{}",
    b"[]",
    b"~",
    b"null",
    b"\"\\u0000\"",
    b"'",
    b"|\n  ",
    b">-\n  ",
    b"pathType: ImplementationSpecific",
    b"pathType: Exact",
    b"path: /(.*)",
    b"path: /api/*",
    b"host: '*.example.com'",
    b"number: 65536",
    b"number: -1",
    b"name: ''",
    b"port: {name: http}",
    b"tls: [{hosts: [a.example.com], secretName: t}]",
    b"ingressClassName: tollgate",
    b"annotations: {",
    b"nginx.ingress.kubernetes.io/rewrite-target: /$2",
    b"nginx.ingress.kubernetes.io/use-regex: 'true'",
    b"alb.ingress.kubernetes.io/actions.",
    b"alb.ingress.kubernetes.io/conditions.",
    b"alb.ingress.kubernetes.io/listen-ports: '[{\"HTTPS\": 443}]'",
    b"1e999",
    b"0x10",
    b"9223372036854775808",
];

#[test]
fn manifest_reader() {
    let harness = RelayHarness::new(&Default::default()).expect("proxy");
    let report = run(
        "manifest_reader",
        manifest_seeds(),
        YAML_WORDS,
        budget(),
        seed_of("manifest_reader"),
        |input| {
            let text = String::from_utf8_lossy(input);
            let mut class = 0u64;
            for json in [false, true] {
                let (snapshot, diags) = parse_manifests("fuzz.yaml", &text, json);
                class = class * 31
                    + snapshot.ingresses.len().min(4) as u64 * 8
                    + diags.len().min(7) as u64;
                for provider in [ProviderKind::Aws, ProviderKind::Proxy] {
                    let out = build(&snapshot, &options(provider));
                    class = class * 7 + out.model.load_balancers.len().min(3) as u64;
                    if provider == ProviderKind::Proxy {
                        harness.apply(&out.model);
                    }
                }
            }
            class
        },
    );
    assert_clean("manifest_reader", report);
}

const ANNOTATION_VALUES: &[&[u8]] = &[
    b"true",
    b"false",
    b"HTTPS",
    b"GRPC",
    b"HTTP2",
    b"/$2",
    b"/(.*)",
    b"(?i)/a(/|$)(.*)",
    b"10.0.0.0/8",
    b"0.0.0.0/0, ::/0",
    b"300.1.1.1/33",
    b"instance",
    b"ip",
    b"internet-facing",
    b"internal",
    b"[{\"HTTP\": 80}, {\"HTTPS\": 443}]",
    b"[{\"HTTPS\": 99999}]",
    b"{\"type\":\"fixed-response\",\"fixedResponseConfig\":{\"contentType\":\"text/plain\",\"statusCode\":\"503\",\"messageBody\":\"x\"}}",
    b"{\"type\":\"forward\",\"forwardConfig\":{\"targetGroups\":[{\"serviceName\":\"web\",\"servicePort\":80,\"weight\":1}]}}",
    b"{\"type\":\"redirect\",\"redirectConfig\":{\"protocol\":\"HTTPS\",\"port\":\"443\",\"statusCode\":\"HTTP_301\"}}",
    b"[{\"field\":\"host-header\",\"hostHeaderConfig\":{\"values\":[\"a.example.com\"]}}]",
    b"[{\"field\":\"http-header\",\"httpHeaderConfig\":{\"httpHeaderName\":\"X\",\"values\":[\"*\"]}}]",
    b"[{\"field\":\"query-string\",\"queryStringConfig\":{\"values\":[{\"key\":\"a\",\"value\":\"b\"}]}}]",
    b"[{\"field\":\"source-ip\",\"sourceIpConfig\":{\"values\":[\"10.0.0.0/8\"]}}]",
    b"key1=value1,key2=value2",
    b"stickiness.enabled=true,stickiness.lb_cookie.duration_seconds=60",
    b"load_balancing.algorithm.type=round_robin",
    b"1m",
    b"0",
    b"-1",
    b"on",
    b"basic",
    b"none",
    b"\"",
    b"{",
    b"[",
    b"\\",
];

/// Decodes `(annotation, value)` pairs: chunks separated by 0, the first byte of each
/// choosing a registered annotation (or, past the registry, naming one from the rest).
fn annotation_pairs(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|b| *b == 0)
        .filter(|c| !c.is_empty())
        .take(64)
        .map(|chunk| {
            let pick = usize::from(chunk[0]) * 3 % (REGISTRY.len() + 16);
            let value = String::from_utf8_lossy(&chunk[1..]).into_owned();
            let name = match REGISTRY.get(pick) {
                Some(spec) => spec.full_name(),
                None => {
                    let (n, v) = value.split_once('=').unwrap_or((&value, ""));
                    return (format!("alb.ingress.kubernetes.io/{n}"), v.to_string());
                }
            };
            (name, value)
        })
        .collect()
}

fn annotated_manifest(pairs: &[(String, String)]) -> String {
    let annotations: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let items = serde_json::json!([
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "web", "namespace": "default", "annotations": annotations.clone()},
         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4",
         "ports": [{"name": "http", "port": 8080}],
         "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
         "spec": {"ingressClassName": "tollgate",
                  "tls": [{"hosts": ["a.example.com"], "secretName": "missing"}],
                  "rules": [{"host": "a.example.com", "http": {"paths": [
                      {"path": "/a(/|$)(.*)", "pathType": "ImplementationSpecific",
                       "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                      {"path": "/", "pathType": "Prefix",
                       "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                      {"path": "/", "pathType": "Prefix",
                       "backend": {"resource": {"apiGroup": "x", "kind": "Y", "name": "z"}}}]}},
                    {"host": "b.example.com", "http": {"paths": [
                      {"path": "/x", "pathType": "Exact",
                       "backend": {"service": {"name": "absent", "port": {"number": 80}}}}]}}]}}
    ]);
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

#[test]
fn annotations() {
    let harness = RelayHarness::new(&Default::default()).expect("proxy");
    let mut rng = Rng::new(7);
    // Seeds: each registered annotation once with each kind of value.
    let mut seeds = Vec::new();
    for (i, _) in REGISTRY.iter().enumerate() {
        let pick = (0..=255u8).find(|b| usize::from(*b) * 3 % (REGISTRY.len() + 16) == i);
        if let Some(b) = pick {
            let mut s = vec![b];
            s.extend_from_slice(ANNOTATION_VALUES[rng.below(ANNOTATION_VALUES.len())]);
            seeds.push(s);
        }
    }
    let report = run(
        "annotations",
        seeds,
        ANNOTATION_VALUES,
        budget(),
        seed_of("annotations"),
        |input| {
            let manifest = annotated_manifest(&annotation_pairs(input));
            let (snapshot, _) = parse_manifests("fuzz.json", &manifest, true);
            let mut class = 0;
            for provider in [ProviderKind::Aws, ProviderKind::Proxy] {
                let out = build(&snapshot, &options(provider));
                let rules: usize = out
                    .model
                    .load_balancers
                    .iter()
                    .flat_map(|lb| &lb.listeners)
                    .map(|l| l.rules.len())
                    .sum();
                class = class * 64 + rules.min(15) as u64 * 4 + out.diagnostics.len().min(3) as u64;
                if provider == ProviderKind::Proxy {
                    harness.apply(&out.model);
                }
            }
            class
        },
    );
    assert_clean("annotations", report);
}

/// The model the relay routes by in `http1_relay`: exact, wildcard and regex hosts and
/// paths, a rewrite, header conditions.
const RELAY_MODEL: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: regex
  namespace: default
  annotations: {nginx.ingress.kubernetes.io/use-regex: "true", nginx.ingress.kubernetes.io/rewrite-target: /$2}
spec:
  ingressClassName: tollgate
  rules:
  - host: a.example.com
    http: {paths: [{path: /api(/|$)(.*), pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: plain
  namespace: default
  annotations:
    alb.ingress.kubernetes.io/conditions.web: '[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X-Canary","values":["on"]}}]'
spec:
  ingressClassName: tollgate
  rules:
  - host: b.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: '*.example.com'
    http: {paths: [{path: /x, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}]}
  - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"#;

const HTTP_WORDS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"OPTIONS ",
    b"CONNECT ",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"Host: a.example.com\r\n",
    b"Host: b.example.com:8080\r\n",
    b"Host: [::1]:80\r\n",
    b"Host: x.example.com\r\n",
    b"Host: a@b\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Connection: close, host, x-forwarded-for\r\n",
    b"Connection: keep-alive, upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"X-Forwarded-For: 10.0.0.1\r\n",
    b"X-Original-URL: /admin\r\n",
    b"Forwarded: for=1.2.3.4\r\n",
    b"X-Canary: on\r\n",
    b"TE: trailers\r\n",
    b"/api/../../x",
    b"/%2e%2e/%61",
    b"//",
    b"*",
    b"http://a.example.com/",
    b"?q=1&x",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"ffffffffffffffff\r\n",
    b"3;ext=1\r\nabc\r\n",
    b"0\r\nTrailer: x\r\n\r\n",
    b"\x00",
];

/// Checks the head the relay would send a target for `request` (which it forwarded).
fn check_forwarded(request: &[u8], head_len: usize, upstream: &[u8]) {
    assert!(head_len <= request.len(), "head_len past the input");
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(upstream);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(n)) if n == upstream.len()),
        "the upstream head is not exactly one request: {:?}",
        String::from_utf8_lossy(upstream)
    );
    assert!(
        req.path.is_some_and(|p| p.starts_with('/')),
        "target {:?}",
        req.path
    );
    let headers: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
    let named = |n: &'static str| {
        headers
            .iter()
            .filter(move |(name, _)| name.eq_ignore_ascii_case(n))
            .map(|(_, v)| *v)
    };
    let hosts: Vec<&[u8]> = named("host").collect();
    assert_eq!(
        hosts.len(),
        1,
        "one Host: {:?}",
        String::from_utf8_lossy(upstream)
    );
    let xfh: Vec<&[u8]> = named("x-forwarded-host").collect();
    assert_eq!(xfh, hosts, "X-Forwarded-Host is the Host");
    // The client's Host, parsed the same way, is the one forwarded.
    let mut cheaders = [httparse::EMPTY_HEADER; 256];
    let mut creq = httparse::Request::new(&mut cheaders);
    if let Ok(httparse::Status::Complete(_)) = creq.parse(&request[..head_len]) {
        let client_hosts: Vec<&[u8]> = creq
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value)
            .collect();
        assert_eq!(
            client_hosts, hosts,
            "the forwarded Host is the client's only Host"
        );
    }
    for n in [
        "x-original-url",
        "forwarded",
        "true-client-ip",
        "proxy",
        "transfer-encoding",
    ] {
        assert_eq!(named(n).count(), 0, "{n} forwarded");
    }
    let xff: Vec<&[u8]> = named("x-forwarded-for").collect();
    assert_eq!(xff, [b"127.0.0.1"], "X-Forwarded-For");
    assert!(
        named("content-length").all(|v| v.trim_ascii() == b"0"),
        "a body-less request forwarded with a length"
    );
}

#[test]
fn http1_relay() {
    let (snapshot, _) = parse_manifests("relay.yaml", RELAY_MODEL, false);
    let model = build(&snapshot, &options(ProviderKind::Proxy)).model;
    let harness = RelayHarness::new(&model).expect("proxy");
    let seeds: Vec<Vec<u8>> = [
        &b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n\0HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        b"GET /api/v1?x=1 HTTP/1.1\r\nHost: a.example.com\r\nConnection: x-y\r\nX-Y: 1\r\n\r\n\0HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HEAD /x HTTP/1.1\r\nHost: q.example.com\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n\0HTTP/1.1 304 Not Modified\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: b.example.com\r\nX-Canary: on\r\n\r\n\0HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil close",
        b"POST / HTTP/1.1\r\nHost: b.example.com\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\0",
        b"GET http://a.example.com/ HTTP/1.1\r\nHost: b.example.com\r\n\r\n\0",
        b"\0a\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    let report = run(
        "http1_relay",
        seeds,
        HTTP_WORDS,
        budget(),
        seed_of("http1_relay"),
        |input| {
            let (request, rest) = match input.iter().position(|b| *b == 0) {
                Some(i) => (&input[..i], &input[i + 1..]),
                None => (input, &[][..]),
            };
            let outcome = harness.request_head(request);
            let class = match &outcome {
                RequestOutcome::Incomplete => 1,
                RequestOutcome::Handover => 2,
                RequestOutcome::Reject(s) => 3 + u64::from(*s),
                RequestOutcome::Forward { head_len, upstream } => {
                    check_forwarded(request, *head_len, upstream);
                    1000
                }
            };
            let resp = response_head(rest, false);
            if let tollgate_proxy::fuzzing::ResponseOutcome::Final { len, .. } = resp {
                assert!(len <= rest.len());
            }
            let _ = response_head(rest, true);
            // Split points from the input's last bytes.
            let pieces: Vec<usize> = rest
                .iter()
                .rev()
                .take(4)
                .map(|b| usize::from(*b) % (rest.len() + 1))
                .collect();
            let mut sorted = pieces.clone();
            sorted.sort_unstable();
            let (end, agrees) = chunked_end(rest, &sorted);
            assert!(
                agrees,
                "a chunked body's end depends on how it arrived: {sorted:?}"
            );
            if let Ok(Some(n)) = end {
                assert!(n <= rest.len());
            }
            class * 4 + u64::from(end.is_ok()) * 2 + u64::from(matches!(end, Ok(Some(_))))
        },
    );
    assert_clean("http1_relay", report);
}

const RULE_HOSTS: &[&str] = &[
    "a.com",
    "x.a.com",
    "b.x.a.com",
    "xn--bcher-kva.example",
    "a.com.",
];
const RULE_PATHS: &[&str] = &[
    "/", "/a", "/a/", "/a/b", "/ab", "/a/b/c", "/b", "/A", "/%61",
];
const REGEXES: &[&str] = &[
    "/a(/|$)(.*)",
    "/[a-z]+",
    "/(",
    "/a{2,}",
    "/.*",
    "/b$",
    "/\\d+",
    "(?-i)/A",
];

/// Reads small numbers off the input, 0 once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[usize::from(self.byte()) % from.len()]
    }
    /// A short string from the input itself.
    fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 8);
        (0..n)
            .map(|_| char::from(b'!' + self.byte() % 94))
            .collect()
    }
}

fn fuzz_rule(b: &mut Bytes<'_>) -> Rule {
    let flags = b.byte();
    let host = match flags % 4 {
        0 => None,
        1 => Some(HostMatch::Exact(b.pick(RULE_HOSTS).to_string())),
        2 => Some(HostMatch::Wildcard(b.pick(RULE_HOSTS).to_string())),
        _ => Some(HostMatch::Exact(b.text().to_ascii_lowercase())),
    };
    let path = match (flags >> 2) % 6 {
        0 => None,
        1 => Some(PathMatch {
            kind: PathKind::Exact,
            path: b.pick(RULE_PATHS).into(),
        }),
        2 => Some(PathMatch {
            kind: PathKind::Prefix,
            path: b.pick(RULE_PATHS).into(),
        }),
        3 => Some(PathMatch {
            kind: PathKind::Regex,
            path: b.pick(REGEXES).into(),
        }),
        _ => Some(PathMatch {
            kind: PathKind::Prefix,
            path: format!("/{}", b.text()),
        }),
    };
    let mut c = Conditions {
        host,
        path,
        ..Default::default()
    };
    if flags & 0x20 != 0 {
        c.methods = vec![b.pick(&["GET", "POST", "get"]).into()];
    }
    if flags & 0x40 != 0 {
        c.headers = vec![HeaderMatch {
            name: b.pick(&["x-a", "X-A", "host"]).into(),
            values: vec![b.pick(&["1", "*", "a*b", "?"]).into()],
            regex: false,
        }];
    }
    if flags & 0x80 != 0 {
        if b.byte() % 2 == 0 {
            c.query = vec![QueryMatch {
                pairs: vec![QueryPair {
                    key: Some(b.pick(&["a", "b"]).into()),
                    value: b.pick(&["1", "*", ""]).into(),
                }],
            }];
        } else {
            c.source_ips = vec![b
                .pick(&["127.0.0.0/8", "10.0.0.0/8", "::1/128", "bad"])
                .into()];
        }
    }
    Rule {
        ingress: ObjectRef::new("ns", "ing"),
        conditions: c,
        authenticate: None,
        action: Action::FixedResponse(FixedResponse::not_found()),
    }
}

/// First match in the model's order, regex paths as the proxy reads them (anchored at the
/// start, case-insensitive; a regex that does not compile matches nothing).
fn first_match(l: &Listener, req: &RequestFacts<'_>) -> Option<usize> {
    l.rules.iter().position(|r| {
        let mut c = r.conditions.clone();
        if let Some(PathMatch {
            kind: PathKind::Regex,
            path,
        }) = &c.path
        {
            let ok = regex::Regex::new(&format!("(?i)^(?:{path})"))
                .is_ok_and(|re| re.is_match(req.path));
            if !ok {
                return false;
            }
            c.path = None;
        }
        c.matches(req)
    })
}

#[test]
fn route_table() {
    let seeds = vec![
        vec![0x01, 0, 0x05, 1, 0x0a, 2, 0x0f, 3, 0xff, 0, 1, 2, 3, 4, 5],
        vec![0x06, 1, 0x0d, 2, 0x22, 0, 1, 0x43, 0, 1, 2, 0x81, 0, 0, 1],
    ];
    let report = run(
        "route_table",
        seeds,
        &[b"\x00", b"\xff", b"\x01\x01\x01\x01"],
        budget(),
        seed_of("route_table"),
        |input| {
            let mut b = Bytes(input);
            let n_rules = usize::from(b.byte() % 24);
            let rules: Vec<Rule> = (0..n_rules).map(|_| fuzz_rule(&mut b)).collect();
            let listener = Listener {
                port: 80,
                protocol: ListenerProtocol::Http,
                certificates: vec![],
                ssl_policy: None,
                rules: rules.into(),
                default_action: Action::FixedResponse(FixedResponse::not_found()),
                default_authenticate: None,
                attributes: Default::default(),
                mutual_authentication: None,
            };
            let table = ListenerRoutes::compile(&listener);
            let mut class = 0;
            for _ in 0..8 {
                let raw_host = match b.byte() % 3 {
                    0 => b
                        .pick(&[
                            "a.com",
                            "X.A.com",
                            "b.x.a.com",
                            "y.a.com",
                            "a.com.",
                            "A.COM:80",
                            "[::1]:8080",
                            ".a.com",
                            "",
                        ])
                        .to_string(),
                    1 => b.pick(RULE_HOSTS).to_string(),
                    _ => b.text(),
                };
                let host = normalize_host(&raw_host);
                let path = match b.byte() % 3 {
                    0 => b.pick(RULE_PATHS).to_string(),
                    1 => b
                        .pick(&["/a/b/c/d", "/aa", "/123", "/A/B", "/"])
                        .to_string(),
                    _ => format!("/{}", b.text()),
                };
                let headers = vec![(
                    "x-a".to_string(),
                    b.pick(&["1", "a-b", "axb", "?"]).to_string(),
                )];
                let ip: IpAddr = if b.byte() % 2 == 0 {
                    [127, 0, 0, 1].into()
                } else {
                    [10, 1, 2, 3].into()
                };
                let req = RequestFacts {
                    host: &host,
                    path: &path,
                    method: b.pick(&["GET", "POST"]),
                    query: b.pick(&["", "a=1", "b=", "a=1&b=2"]),
                    headers: &headers,
                    source_ip: Some(ip),
                };
                let got = table.lookup(&req);
                let want = first_match(&listener, &req);
                assert_eq!(got, want, "request {req:?}\nrules {:#?}", listener.rules);
                class = class * 3 + u64::from(got.is_some());
            }
            class % 4096
        },
    );
    assert_clean("route_table", report);
}
