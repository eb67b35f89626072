//! Ingress conformance through the real proxy: requests over HTTP/1.1, h2c and TLS (h2 and
//! HTTP/1.1) to echo backends that say which Service answered. Cases come from the
//! Kubernetes Ingress documentation.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

/// A path of an Ingress: (path, pathType, service).
type PathSpec = (&'static str, &'static str, &'static str);
/// A row: the paths, the request path, the expected service (None: the default backend).
type Row = (&'static [PathSpec], &'static str, Option<&'static str>);

/// The documentation's path-type examples table.
const TABLE: &[Row] = &[
    (&[("/", "Prefix", "one")], "/anything/at/all", Some("one")),
    (&[("/foo", "Exact", "one")], "/foo", Some("one")),
    (&[("/foo", "Exact", "one")], "/bar", None),
    (&[("/foo", "Exact", "one")], "/foo/", None),
    (&[("/foo/", "Exact", "one")], "/foo", None),
    (&[("/foo", "Prefix", "one")], "/foo", Some("one")),
    (&[("/foo", "Prefix", "one")], "/foo/", Some("one")),
    (&[("/foo/", "Prefix", "one")], "/foo", Some("one")),
    (&[("/foo/", "Prefix", "one")], "/foo/", Some("one")),
    (&[("/aaa/bb", "Prefix", "one")], "/aaa/bbb", None),
    (&[("/aaa/bbb", "Prefix", "one")], "/aaa/bbb", Some("one")),
    (&[("/aaa/bbb/", "Prefix", "one")], "/aaa/bbb", Some("one")),
    (&[("/aaa/bbb", "Prefix", "one")], "/aaa/bbb/", Some("one")),
    (
        &[("/aaa/bbb", "Prefix", "one")],
        "/aaa/bbb/ccc",
        Some("one"),
    ),
    (&[("/aaa/bbb", "Prefix", "one")], "/aaa/bbbxyz", None),
    (
        &[("/", "Prefix", "one"), ("/aaa", "Prefix", "two")],
        "/aaa/ccc",
        Some("two"),
    ),
    (
        &[
            ("/", "Prefix", "one"),
            ("/aaa", "Prefix", "two"),
            ("/aaa/bbb", "Prefix", "three"),
        ],
        "/aaa/bbb",
        Some("three"),
    ),
    (
        &[
            ("/", "Prefix", "one"),
            ("/aaa", "Prefix", "two"),
            ("/aaa/bbb", "Prefix", "three"),
        ],
        "/ccc",
        Some("one"),
    ),
    (&[("/aaa", "Prefix", "one")], "/ccc", None),
    (
        &[("/foo", "Prefix", "one"), ("/foo", "Exact", "two")],
        "/foo",
        Some("two"),
    ),
];

async fn backends() -> String {
    let mut m = String::new();
    for name in ["one", "two", "three", "web", "api", "fallback"] {
        let addr = echo(name).await;
        m.push_str(&service(name, &[addr]));
        m.push_str("---\n");
    }
    m
}

/// Asserts a request is answered by `want` (a Service) or by the 404 default backend.
fn check(got: Result<Resp, String>, want: Option<&str>, what: &str) {
    let (status, headers, body) = got.unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    match want {
        Some(svc) => {
            assert_eq!(status, StatusCode::OK, "{what}: {body}");
            assert_eq!(served_by(&body), svc, "{what}");
        }
        None => {
            assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
            for h in ["content-length", "content-type", "date", "server"] {
                assert!(headers.contains_key(h), "{what}: 404 lacks {h}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_types_as_the_documentation_table_says() {
    let mut m = backends().await;
    for (i, (paths, _, _)) in TABLE.iter().enumerate() {
        let host = format!("row{i}.example.com");
        let routes: Vec<(&str, &str, &str, &str)> = paths
            .iter()
            .map(|(p, t, s)| (host.as_str(), *p, *t, *s))
            .collect();
        m.push_str(&ingress(&format!("row{i}"), "", &routes));
        m.push_str("---\n");
    }
    let p = TestProxy::start(&m).await;
    let both: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    for (i, (_, request, want)) in TABLE.iter().enumerate() {
        let host = format!("row{i}.example.com");
        check(
            get(p.http, &host, request).await,
            *want,
            &format!("row {i} {request} over HTTP/1.1"),
        );
        check(
            h2c_get(p.http, &host, request).await,
            *want,
            &format!("row {i} {request} over h2c"),
        );
        let h2 = tls_get(p.https, Some(&host), &host, request, &["h2"], both)
            .await
            .map(|r| {
                assert_eq!(r.alpn.as_deref(), Some(&b"h2"[..]));
                r.resp
            });
        check(h2, *want, &format!("row {i} {request} over TLS h2"));
        let h1 = tls_get(p.https, Some(&host), &host, request, &["http/1.1"], both)
            .await
            .map(|r| r.resp);
        check(h1, *want, &format!("row {i} {request} over TLS HTTP/1.1"));
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_wildcards_fanout_virtual_hosts_and_default_backend() {
    let mut m = backends().await;
    // Name-based virtual hosting with a host-less catch-all, a wildcard, a fanout.
    m.push_str(&ingress(
        "vhosts",
        "",
        &[
            ("first.bar.com", "/", "Prefix", "one"),
            ("second.bar.com", "/", "Prefix", "two"),
            ("", "/", "Prefix", "three"),
            ("*.foo.com", "/foo", "Prefix", "web"),
            ("fan.example.com", "/api", "Prefix", "api"),
            ("fan.example.com", "/web", "Prefix", "web"),
        ],
    ));
    let p = TestProxy::start(&m).await;
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("first.bar.com", "/x", Some("one")),
        ("FIRST.Bar.com", "/x", Some("one")), // host matching is case-insensitive
        ("first.bar.com:8080", "/x", Some("one")), // the port is ignored
        ("second.bar.com", "/", Some("two")),
        ("unknown.org", "/", Some("three")),    // host-less rule
        ("bar.foo.com", "/foo/x", Some("web")), // wildcard: one label
        ("baz.bar.foo.com", "/foo", Some("three")), // two labels: not the wildcard
        ("foo.com", "/foo", Some("three")),     // zero labels: not the wildcard
        ("bar.foo.com", "/other", None),        // wildcard host selected, no path: default
        ("fan.example.com", "/api/v1", Some("api")),
        ("fan.example.com", "/web", Some("web")),
        ("fan.example.com", "/", None), // exact host selected: no fall-through
    ];
    for (host, path, want) in cases {
        check(
            get(p.http, host, path).await,
            *want,
            &format!("{host}{path}"),
        );
    }
    // spec.defaultBackend answers what no rule matches.
    p.write("default.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: dflt}\nspec:\n  ingressClassName: tollgate\n  defaultBackend: {service: {name: fallback, port: {number: 80}}}\n");
    let http = p.http;
    wait_until(
        Duration::from_secs(5),
        "default backend to apply",
        || async move {
            get(http, "fan.example.com", "/")
                .await
                .is_ok_and(|r| served_by(&r.2) == "fallback")
        },
    )
    .await;
    check(
        get(p.http, "bar.foo.com", "/other").await,
        Some("fallback"),
        "wildcard host, unmatched path",
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ingresses_merge_on_one_host() {
    let mut m = backends().await;
    m.push_str(&ingress(
        "site",
        "",
        &[("shop.example.com", "/", "Prefix", "web")],
    ));
    m.push_str("---\n");
    m.push_str(&ingress(
        "api",
        "",
        &[
            ("shop.example.com", "/api", "Prefix", "api"),
            ("shop.example.com", "/api/v1/exact", "Exact", "one"),
        ],
    ));
    m.push_str("---\n");
    // Claims the same host and path as "site" but is newer: loses.
    m.push_str(
        &ingress("zz-late", "", &[("shop.example.com", "/", "Prefix", "two")]).replace(
            "metadata: {name: zz-late,",
            "metadata: {name: zz-late, creationTimestamp: '2030-01-01T00:00:00Z',",
        ),
    );
    let p = TestProxy::start(&m).await;
    check(get(p.http, "shop.example.com", "/").await, Some("web"), "/");
    check(
        get(p.http, "shop.example.com", "/api/users").await,
        Some("api"),
        "/api/users",
    );
    check(
        get(p.http, "shop.example.com", "/api/v1/exact").await,
        Some("one"),
        "exact beats prefix",
    );
    check(
        get(p.http, "shop.example.com", "/apix").await,
        Some("web"),
        "element-wise prefix",
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_by_sni() {
    let mut m = backends().await;
    let (a_crt, a_key, a_der) = self_signed(&["a.example.com"]);
    let (w_crt, w_key, w_der) = self_signed(&["*.example.com"]);
    let (_, other_key, _) = self_signed(&["x"]);
    m.push_str(&tls_secret("a-tls", &a_crt, &a_key));
    m.push_str("---\n");
    m.push_str(&tls_secret("wild-tls", &w_crt, &w_key));
    m.push_str("---\n");
    m.push_str(&tls_secret("bad-tls", &a_crt, &other_key)); // key does not match: skipped
    m.push_str("---\n");
    m.push_str(&ingress("tls", "", &[("a.example.com", "/", "Prefix", "one"), ("b.example.com", "/", "Prefix", "two")]).replace(
        "  rules:\n",
        "  tls:\n  - {hosts: [a.example.com], secretName: a-tls}\n  - {hosts: ['*.example.com'], secretName: wild-tls}\n  - {hosts: [c.example.com], secretName: bad-tls}\n  rules:\n",
    ));
    let p = TestProxy::start(&m).await;
    let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let tls12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

    let r = tls_get(
        p.https,
        Some("a.example.com"),
        "a.example.com",
        "/",
        &["h2"],
        tls13,
    )
    .await
    .expect("a");
    assert_eq!(r.server_cert, a_der, "exact SNI match");
    assert_eq!(served_by(&r.resp.2), "one");
    let r = tls_get(
        p.https,
        Some("b.example.com"),
        "b.example.com",
        "/",
        &["http/1.1"],
        tls12,
    )
    .await
    .expect("b");
    assert_eq!(r.server_cert, w_der, "wildcard SNI match");
    assert_eq!(r.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(served_by(&r.resp.2), "two");
    for sni in [Some("c.example.com.evil"), Some("other.org"), None] {
        let r = tls_get(p.https, sni, "a.example.com", "/", &["h2"], tls13)
            .await
            .expect("default cert");
        assert_ne!(r.server_cert, a_der, "{sni:?}");
        assert_ne!(r.server_cert, w_der, "{sni:?}");
        assert!(!r.server_cert.is_empty());
    }
    // c.example.com's Secret is broken: it gets the wildcard, and the rest keeps working.
    let r = tls_get(
        p.https,
        Some("c.example.com"),
        "a.example.com",
        "/",
        &["h2"],
        tls13,
    )
    .await
    .expect("c");
    assert_eq!(r.server_cert, w_der);

    // The Secret rotates: the new certificate is served. Then a change that touches no
    // certificate (a route added) keeps serving it: the store is kept, not lost.
    let (a2_crt, a2_key, a2_der) = self_signed(&["a.example.com"]);
    let rotated = m.replace(
        &tls_secret("a-tls", &a_crt, &a_key),
        &tls_secret("a-tls", &a2_crt, &a2_key),
    );
    assert_ne!(rotated, m);
    p.write("main.yaml", &rotated);
    let served = |want: Vec<u8>| {
        let https = p.https;
        move || {
            let want = want.clone();
            async move {
                tls_get(
                    https,
                    Some("a.example.com"),
                    "a.example.com",
                    "/",
                    &["h2"],
                    &[&rustls::version::TLS13],
                )
                .await
                .is_ok_and(|r| r.server_cert == want)
            }
        }
    };
    wait_until(
        Duration::from_secs(10),
        "the rotated certificate",
        served(a2_der.clone()),
    )
    .await;
    let old_route = "paths: [{path: '/', pathType: Prefix, backend: {service: {name: two,";
    assert!(rotated.contains(old_route));
    p.write(
        "main.yaml",
        &rotated.replace(
            old_route,
            "paths: [{path: '/new', pathType: Prefix, backend: {service: {name: two, port: {number: 80}}}}, {path: '/', pathType: Prefix, backend: {service: {name: two,",
        ),
    );
    wait_until(Duration::from_secs(10), "the new route", || async {
        get(p.http, "b.example.com", "/new")
            .await
            .is_ok_and(|r| r.0 == 200)
    })
    .await;
    let r = tls_get(
        p.https,
        Some("a.example.com"),
        "a.example.com",
        "/",
        &["h2"],
        tls13,
    )
    .await
    .expect("a after an unrelated change");
    assert_eq!(r.server_cert, a2_der, "still the rotated certificate");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_redirect_rewrite_target_and_forwarded_headers() {
    let mut m = backends().await;
    m.push_str(&ingress(
        "secure",
        "nginx.ingress.kubernetes.io/force-ssl-redirect: 'true'",
        &[("secure.example.com", "/", "Prefix", "one")],
    ));
    m.push_str("---\n");
    m.push_str(&ingress(
        "rewrite",
        "nginx.ingress.kubernetes.io/rewrite-target: /$2",
        &[(
            "rw.example.com",
            "/something(/|$)(.*)",
            "ImplementationSpecific",
            "two",
        )],
    ));
    m.push_str("---\n");
    m.push_str(&ingress(
        "plain",
        "",
        &[
            ("plain.example.com", "/admin", "Prefix", "api"),
            ("plain.example.com", "/", "Prefix", "web"),
        ],
    ));
    let p = TestProxy::start(&m).await;

    let (status, headers, _) = get(p.http, "secure.example.com", "/a/b?x=1")
        .await
        .expect("redirect");
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("https://secure.example.com:{}/a/b?x=1", p.https.port()).as_str())
    );
    let r = tls_get(
        p.https,
        Some("secure.example.com"),
        "secure.example.com",
        "/a",
        &["h2"],
        &[&rustls::version::TLS13],
    )
    .await
    .expect("https");
    assert_eq!(
        served_by(&r.resp.2),
        "one",
        "HTTPS is served, not redirected"
    );

    let (_, _, body) = get(p.http, "rw.example.com", "/something/new/path")
        .await
        .expect("rewrite");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["path"], "/new/path");

    // Client-supplied forwarding headers are replaced with what the proxy saw.
    let mut c = H1::connect(p.http).await.expect("connect");
    let req = http::Request::get("/x")
        .header("host", "plain.example.com")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    // What the echo backend saw, for a request to plain.example.com over plain HTTP.
    let forwarded_as_seen_by_proxy = |body: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        let h = &v["headers"];
        assert_eq!(h["host"], "plain.example.com");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-real-ip"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "plain.example.com");
        assert_eq!(h["x-forwarded-port"], p.http.port().to_string());
        v
    };
    let (_, _, body) = c.request(req).await.expect("forwarded");
    forwarded_as_seen_by_proxy(&body);

    // The same from an HTTP/2 client, whose host arrives as `:authority` (no Host header):
    // the target still gets Host, and the forwarding headers are the proxy's.
    let req = http::Request::get("http://plain.example.com/x?k=v")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-host", "evil.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, _, body) = h2c_request(p.http, req).await.expect("h2c forwarded");
    assert_eq!(status, StatusCode::OK);
    let v = forwarded_as_seen_by_proxy(&body);
    assert_eq!(v["path"], "/x");
    assert_eq!(v["query"], "k=v");
    // A rewritten path over HTTP/2 keeps the query.
    let (_, _, body) = h2c_get(p.http, "rw.example.com", "/something/new/path?q=1")
        .await
        .expect("h2c rewrite");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["path"], "/new/path");
    assert_eq!(v["query"], "q=1");

    // Dot segments cannot slip a request past a more specific rule.
    let (_, _, body) = get(p.http, "plain.example.com", "/public/../admin/x")
        .await
        .expect("normalized");
    assert_eq!(served_by(&body), "api");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["path"], "/admin/x");
    p.stop().await;
}

/// The AWS Load Balancer Controller's `actions.*` and `conditions.*` annotations, served by
/// the proxy: a redirect (the widely copied PascalCase form), a fixed response, a weighted
/// forward, and a header condition choosing between two backends of the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alb_actions_and_conditions() {
    let mut m = backends().await;
    m.push_str(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: alb
  annotations:
    alb.ingress.kubernetes.io/actions.ssl-redirect: '{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}'
    alb.ingress.kubernetes.io/actions.moved: '{"type":"redirect","redirectConfig":{"host":"new.example.com","path":"/landing","statusCode":"HTTP_302"}}'
    alb.ingress.kubernetes.io/actions.maintenance: '{"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"503","messageBody":"down for maintenance"}}'
    alb.ingress.kubernetes.io/actions.canary: '{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"one","servicePort":"80","weight":0},{"serviceName":"two","servicePort":80,"weight":100}]}}'
    alb.ingress.kubernetes.io/conditions.three: '[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X-Beta","values":["yes"]}}]'
spec:
  ingressClassName: tollgate
  rules:
  - host: actions.example.com
    http:
      paths:
      - {path: /old, pathType: Prefix, backend: {service: {name: ssl-redirect, port: {name: use-annotation}}}}
      - {path: /moved, pathType: Exact, backend: {service: {name: moved, port: {name: use-annotation}}}}
      - {path: /down, pathType: Prefix, backend: {service: {name: maintenance, port: {name: use-annotation}}}}
      - {path: /canary, pathType: Prefix, backend: {service: {name: canary, port: {name: use-annotation}}}}
      - {path: /missing, pathType: Prefix, backend: {service: {name: nothing-here, port: {name: use-annotation}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: three, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: one, port: {number: 80}}}}
---
# The AWS Load Balancer Controller documentation's example: host-header and path-pattern
# values add to the rule's own host and path.
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: docs-example
  annotations:
    alb.ingress.kubernetes.io/actions.rule-path1: '{"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"200","messageBody":"Host is www.example.com OR anno.example.com"}}'
    alb.ingress.kubernetes.io/conditions.rule-path1: '[{"field":"host-header","hostHeaderConfig":{"values":["anno.example.com"]}}]'
    alb.ingress.kubernetes.io/actions.rule-path2: '{"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"200","messageBody":"Path is /path2 OR /anno/path2"}}'
    alb.ingress.kubernetes.io/conditions.rule-path2: '[{"field":"path-pattern","pathPatternConfig":{"values":["/anno/path2"]}}]'
spec:
  ingressClassName: tollgate
  rules:
  - host: www.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: rule-path1, port: {name: use-annotation}}}}]}
  - host: docs.example.com
    http: {paths: [{path: /path2, pathType: Exact, backend: {service: {name: rule-path2, port: {name: use-annotation}}}}]}
"#,
    );
    let p = TestProxy::start(&m).await;
    for (h, path, want) in [
        ("www.example.com", "/", Some("Host is")),
        ("anno.example.com", "/x", Some("Host is")),
        ("docs.example.com", "/path2", Some("Path is")),
        ("docs.example.com", "/anno/path2", Some("Path is")),
        ("docs.example.com", "/other", None),
    ] {
        let (status, _, body) = get(p.http, h, path).await.expect("docs example");
        match want {
            Some(text) => assert!(
                status == StatusCode::OK && body.starts_with(text),
                "{h}{path}: {status} {body}"
            ),
            None => assert_eq!(status, StatusCode::NOT_FOUND, "{h}{path}"),
        }
    }
    let host = "actions.example.com";

    let (status, headers, _) = get(p.http, host, "/old/page?q=1").await.expect("redirect");
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    let location = |h: &http::HeaderMap| {
        h.get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        location(&headers),
        Some(format!("https://{host}:{}/old/page?q=1", p.https.port()))
    );
    // Left-out parts keep the request's: still http, still this port.
    let (status, headers, _) = get(p.http, host, "/moved").await.expect("moved");
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        location(&headers),
        Some(format!("http://new.example.com:{}/landing", p.http.port()))
    );

    let (status, _, body) = get(p.http, host, "/down/x").await.expect("fixed");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "down for maintenance");

    for _ in 0..20 {
        let (status, _, body) = get(p.http, host, "/canary").await.expect("canary");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served_by(&body), "two", "weight 0 never serves");
    }

    // A use-annotation backend without its annotation answers 503; the rest is served.
    let (status, _, _) = get(p.http, host, "/missing").await.expect("missing");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let (_, _, body) = get(p.http, host, "/page").await.expect("plain");
    assert_eq!(served_by(&body), "one");
    let mut c = H1::connect(p.http).await.expect("connect");
    let req = http::Request::get("/page")
        .header("host", host)
        .header("x-beta", "yes")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (_, _, body) = c.request(req).await.expect("beta");
    assert_eq!(
        served_by(&body),
        "three",
        "the header condition picks three"
    );
    p.stop().await;
}

/// Paths as the AWS Load Balancer Controller's documentation writes them
/// (`pathType: ImplementationSpecific`, `path: /*`, `/api/*`): ALB path patterns, matched
/// whole and case-sensitively, `*` across `/`, `?` one character, tried in the order they are
/// listed (after Exact paths); `/api` is not `/api/*`'s (ALB's does not match it either), so
/// `/*` serves it. A
/// `conditions.*` path-pattern glob widens its rule the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alb_controller_style_path_patterns() {
    let mut m = backends().await;
    m.push_str(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ingress-2048
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/target-type: ip
    alb.ingress.kubernetes.io/conditions.three: '[{"field":"path-pattern","pathPatternConfig":{"values":["/beta/*"]}}]'
spec:
  ingressClassName: tollgate
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /legacy, pathType: Exact, backend: {service: {name: three, port: {number: 80}}}}
      - {path: /api/*, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /img/*.png, pathType: ImplementationSpecific, backend: {service: {name: one, port: {number: 80}}}}
      - {path: /v?/status, pathType: ImplementationSpecific, backend: {service: {name: two, port: {number: 80}}}}
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /late/*, pathType: ImplementationSpecific, backend: {service: {name: one, port: {number: 80}}}}
"#,
    );
    let p = TestProxy::start(&m).await;
    let cases: &[(&str, &str)] = &[
        ("/", "web"),
        ("/anything/at/all", "web"),
        ("/api/", "api"),
        ("/api/v1/orders", "api"),
        ("/api", "web"),
        ("/API/x", "web"),
        ("/img/a/b.png", "one"),
        ("/img/a.png.txt", "web"),
        ("/v1/status", "two"),
        ("/v10/status", "web"),
        ("/legacy", "three"),
        ("/beta/feature", "three"),
        ("/beta", "web"),
        // Path patterns keep the order they are listed in, after Exact and Prefix paths (the
        // AWS Load Balancer Controller's order): `/late/*` comes after `/*`, so `/*` serves it.
        ("/late/x", "web"),
    ];
    for (path, want) in cases {
        check(
            get(p.http, "shop.example.com", path).await,
            Some(want),
            path,
        );
    }
    p.stop().await;
}

/// `use-regex-path-match` and `regexValues` as the AWS Load Balancer Controller's
/// documentation writes them: the path after its leading `/` is an expression searched in
/// the request path, case-sensitive (`/^/api/(.+)$` → `^/api/(.+)$`); a `conditions.*`
/// path-pattern `regexValues` widens its rule the same way, and an `http-header`
/// `regexValues` narrows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alb_controller_regex_paths_and_conditions() {
    let mut m = backends().await;
    m.push_str(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: regex
  annotations:
    alb.ingress.kubernetes.io/use-regex-path-match: "true"
    alb.ingress.kubernetes.io/conditions.three: '[{"field":"path-pattern","pathPatternConfig":{"regexValues":["^/beta/[0-9]+$"]}}]'
    alb.ingress.kubernetes.io/conditions.two: '[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"User-Agent","regexValues":[".+Chrome.+"]}}]'
spec:
  ingressClassName: tollgate
  rules:
  - host: re.example.com
    http:
      paths:
      - {path: /^/api/(.+)$, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /^/ua$, pathType: ImplementationSpecific, backend: {service: {name: two, port: {number: 80}}}}
      - {path: /^/legacy$, pathType: ImplementationSpecific, backend: {service: {name: three, port: {number: 80}}}}
      - {path: /.*, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: host-regex
  annotations:
    alb.ingress.kubernetes.io/conditions.one: '[{"field":"host-header","hostHeaderConfig":{"regexValues":["^(.+)\\.regex\\.example$"]}}]'
spec:
  ingressClassName: tollgate
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: one, port: {number: 80}}}}
"#,
    );
    let p = TestProxy::start(&m).await;
    // A host expression (`hostHeaderConfig.regexValues`) on a host-less rule.
    check(
        get(p.http, "shop.regex.example", "/x").await,
        Some("one"),
        "host shop.regex.example",
    );
    let (status, _, _) = get(p.http, "regex.example", "/x").await.expect("get");
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a host the expression does not find"
    );
    let cases: &[(&str, &str)] = &[
        ("/api/orders", "api"),
        ("/api/", "web"),
        ("/API/orders", "web"),
        ("/x/api/orders", "web"),
        ("/beta/42", "three"),
        ("/beta/x", "web"),
        ("/legacy", "three"),
        ("/ua", "web"),
    ];
    for (path, want) in cases {
        check(get(p.http, "re.example.com", path).await, Some(want), path);
    }
    let mut c = H1::connect(p.http).await.expect("connect");
    let req = http::Request::get("/ua")
        .header("host", "re.example.com")
        .header("user-agent", "Mozilla/5.0 Chrome/120.0 Safari")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    check(
        c.request(req).await,
        Some("two"),
        "/ua with a Chrome user agent",
    );
    p.stop().await;
}

/// The legacy `actions.ssl-redirect` pattern of the AWS Load Balancer Controller's older
/// documentation: a redirect-to-HTTPS action on `/*` ahead of the real backend, on both
/// listeners. On HTTP it redirects; on HTTPS it would redirect to itself, so it is left off
/// there (as the controller's rule optimizer does) and the next route serves — no loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_ssl_redirect_action_does_not_loop() {
    let mut m = backends().await;
    let (crt, key, _) = self_signed(&["shop.example.com"]);
    m.push_str(&tls_secret("shop-tls", &crt, &key));
    m.push_str(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy
  annotations:
    alb.ingress.kubernetes.io/listen-ports: '[{"HTTP": 80}, {"HTTPS":443}]'
    alb.ingress.kubernetes.io/actions.ssl-redirect: '{"Type": "redirect", "RedirectConfig": { "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}'
spec:
  ingressClassName: tollgate
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: ssl-redirect, port: {name: use-annotation}}}}
      - {path: /users/*, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
"#,
    );
    let p = TestProxy::start(&m).await;
    // Listed after the redirect, `/users/*` is redirected on HTTP too (path patterns keep
    // their listed order, as with the AWS Load Balancer Controller): nothing is served in
    // plain text that was redirected before.
    let (status, _, _) = get(p.http, "shop.example.com", "/users/7")
        .await
        .expect("http");
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "/users/* on HTTP");
    let (status, headers, _) = get(p.http, "shop.example.com", "/cart?x=1")
        .await
        .expect("http");
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(
        location,
        format!("https://shop.example.com:{}/cart?x=1", p.https.port())
    );
    let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let r = tls_get(
        p.https,
        Some("shop.example.com"),
        "shop.example.com",
        "/cart",
        &["http/1.1"],
        tls13,
    )
    .await
    .expect("https");
    assert_eq!(
        r.resp.0,
        StatusCode::OK,
        "served over HTTPS, not redirected again"
    );
    assert_eq!(served_by(&r.resp.2), "web");
    let r = tls_get(
        p.https,
        Some("shop.example.com"),
        "shop.example.com",
        "/users/7",
        &["http/1.1"],
        tls13,
    )
    .await
    .expect("https");
    assert_eq!(served_by(&r.resp.2), "api", "/users/* over HTTPS");
    p.stop().await;
}

/// ingress-nginx's `permanent-redirect` / `temporal-redirect` (its e2e tests
/// `annotations/permanentredirect.go` and `redirect.go`): every path of the Ingress answers
/// with the given URL exactly (301, or the `-code`; 302 for the temporal one, which takes
/// precedence), nothing is forwarded; a URL that is not http(s) refuses the Ingress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_and_temporal_redirects() {
    let mut m = backends().await;
    for (name, host, annotations) in [
        ("perm", "perm.example.com", "nginx.ingress.kubernetes.io/permanent-redirect: 'https://www.example.org/landing?from=old'"),
        ("perm308", "perm308.example.com", "nginx.ingress.kubernetes.io/permanent-redirect: 'http://other.example.net:8080/x', nginx.ingress.kubernetes.io/permanent-redirect-code: '308'"),
        ("both", "both.example.com", "nginx.ingress.kubernetes.io/permanent-redirect: 'https://a.example.org/', nginx.ingress.kubernetes.io/temporal-redirect: 'https://b.example.org/'"),
        ("bad", "bad.example.com", "nginx.ingress.kubernetes.io/permanent-redirect: 'ftp://files.example.org/'"),
    ] {
        m.push_str(&ingress(name, annotations, &[(host, "/", "Prefix", "web")]));
        m.push_str("---\n");
    }
    let p = TestProxy::start(&m).await;
    let cases: &[(&str, StatusCode, &str)] = &[
        (
            "perm.example.com",
            StatusCode::MOVED_PERMANENTLY,
            "https://www.example.org/landing?from=old",
        ),
        (
            "perm308.example.com",
            StatusCode::PERMANENT_REDIRECT,
            "http://other.example.net:8080/x",
        ),
        (
            "both.example.com",
            StatusCode::FOUND,
            "https://b.example.org/",
        ),
    ];
    for (host, status, location) in cases {
        let (got, headers, _) = get(p.http, host, "/some/path?q=1").await.expect(host);
        assert_eq!(got, *status, "{host}");
        assert_eq!(
            headers.get("location").and_then(|v| v.to_str().ok()),
            Some(*location),
            "{host}"
        );
    }
    // Like any invalid annotation value, a URL that is not http(s) refuses the Ingress (an
    // Error naming the annotation) rather than serve it without the redirect asked for.
    check(get(p.http, "bad.example.com", "/").await, None, "a bad URL");
    p.stop().await;
}

/// ingress-nginx's `app-root` (e2e `annotations/approot.go`): `/` on the Ingress's host
/// answers 302 to the application root, scheme and host kept, query dropped; every other
/// path is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_root_redirects_slash() {
    let mut m = backends().await;
    m.push_str(&ingress(
        "approot",
        "nginx.ingress.kubernetes.io/app-root: /foo",
        &[("approot.example.com", "/", "Prefix", "web")],
    ));
    let p = TestProxy::start(&m).await;
    for path in ["/", "/?x=1"] {
        let (status, headers, _) = get(p.http, "approot.example.com", path).await.expect(path);
        assert_eq!(status, StatusCode::FOUND, "{path}");
        assert_eq!(
            headers.get("location").and_then(|v| v.to_str().ok()),
            Some(format!("http://approot.example.com:{}/foo", p.http.port()).as_str()),
            "{path}"
        );
    }
    check(
        get(p.http, "approot.example.com", "/foo").await,
        Some("web"),
        "/foo",
    );
    check(
        get(p.http, "approot.example.com", "/bar").await,
        Some("web"),
        "/bar",
    );
    p.stop().await;
}

/// ingress-nginx's from-to-www-redirect (its e2e: test/e2e/annotations/fromtowwwredirect.go):
/// the other form of each host (`www.` added or removed) answers 308 to the host, scheme,
/// path and query kept, on the scheme's own port (`$scheme://host$request_uri`, not the port
/// the proxy listens on); a form some Ingress serves itself is left to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_to_www_redirects_both_ways_unless_the_other_host_is_served() {
    let mut m = backends().await;
    let www = "nginx.ingress.kubernetes.io/from-to-www-redirect: 'true'";
    m.push_str(&ingress(
        "shop",
        www,
        &[("shop.example.com", "/", "Prefix", "one")],
    ));
    m.push_str("---\n");
    m.push_str(&ingress(
        "blog",
        www,
        &[("www.blog.example.com", "/", "Prefix", "two")],
    ));
    m.push_str("---\n");
    m.push_str(&ingress(
        "app",
        www,
        &[("app.example.com", "/", "Prefix", "three")],
    ));
    m.push_str("---\n");
    m.push_str(&ingress(
        "app-www",
        "",
        &[("www.app.example.com", "/", "Prefix", "web")],
    ));
    let p = TestProxy::start(&m).await;

    let (status, headers, _) = get(p.http, "www.shop.example.com", "/a/b?x=1")
        .await
        .expect("www.shop");
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some("http://shop.example.com/a/b?x=1")
    );
    let (status, headers, _) = get(p.http, "blog.example.com", "/").await.expect("blog");
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some("http://www.blog.example.com/")
    );
    check(
        get(p.http, "shop.example.com", "/a").await,
        Some("one"),
        "the host itself",
    );
    check(
        get(p.http, "www.app.example.com", "/").await,
        Some("web"),
        "served by its own Ingress, not redirected",
    );
    let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let r = tls_get(
        p.https,
        Some("www.shop.example.com"),
        "www.shop.example.com",
        "/s",
        &["http/1.1"],
        tls13,
    )
    .await
    .expect("https");
    assert_eq!(r.resp.0, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.resp.1.get("location").and_then(|v| v.to_str().ok()),
        Some("https://shop.example.com/s"),
        "the scheme is kept"
    );
    p.stop().await;
}
