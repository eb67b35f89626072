//! ingress-nginx routing served by the proxy, on real sockets. Canaries, as ingress-nginx's
//! test/e2e/annotations/canary.go pins them: `canary-by-header` (`always`/`never`, or only
//! `canary-by-header-value`), `canary-by-cookie`, `canary-weight` (0, all, and a split seen
//! from both sides), header before cookie before weight, and a canary with no main Ingress
//! not served. Session affinity (`affinity: cookie`, test/e2e/annotations/affinity.go):
//! the cookie and its attributes, requests with it kept on their backend, the path it gets;
//! and `upstream-hash-by`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

/// Which backend answered a GET of `host` with `headers`.
async fn answered(p: &TestProxy, host: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let (status, _, by) = answered_at(p, host, "/", headers).await;
    (status, by)
}

/// Status, `Set-Cookie` and backend of a GET of `host` and `path`.
async fn answered_at(
    p: &TestProxy,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let mut c = H1::connect(p.http).await.expect("connect");
    let mut b = Request::get(path).header("host", host);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let req = b.body(Full::new(Bytes::new())).expect("request");
    let (status, headers, body) = c.request(req).await.expect("response");
    let cookie = headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    (status, cookie, served_by(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_as_ingress_nginx_routes_them() {
    let main = echo("main").await;
    let canary = echo("canary").await;
    let n = "nginx.ingress.kubernetes.io";
    let mains = [
        "header", "value", "pattern", "cookie", "both", "all", "none", "split",
    ]
    .iter()
    .map(|h| {
        ingress(
            &format!("{h}-main"),
            "",
            &[(&format!("{h}.example.com"), "/", "Prefix", "main")],
        )
    })
    .collect::<Vec<_>>();
    let canaries = [
        ("header", format!("{n}/canary: 'true', {n}/canary-by-header: CanaryByHeader")),
        ("value", format!("{n}/canary: 'true', {n}/canary-by-header: CanaryByHeader, {n}/canary-by-header-value: DoCanary")),
        ("pattern", format!("{n}/canary: 'true', {n}/canary-by-header: CanaryByHeader, {n}/canary-by-header-pattern: '^Do[A-Z][a-z]+y$'")),
        ("cookie", format!("{n}/canary: 'true', {n}/canary-by-cookie: Canary-By-Cookie")),
        ("both", format!("{n}/canary: 'true', {n}/canary-by-header: CanaryByHeader, {n}/canary-by-cookie: Canary-By-Cookie")),
        ("all", format!("{n}/canary: 'true', {n}/canary-weight: '1000', {n}/canary-weight-total: '1000'")),
        ("none", format!("{n}/canary: 'true', {n}/canary-weight: '0'")),
        ("split", format!("{n}/canary: 'true', {n}/canary-weight: '100', {n}/canary-weight-total: '200'")),
        ("lonely", format!("{n}/canary: 'true', {n}/canary-weight: '100'")),
    ]
    .iter()
    .map(|(h, a)| ingress(&format!("{h}-canary"), a, &[(&format!("{h}.example.com"), "/", "Prefix", "canary")]))
    .collect::<Vec<_>>();
    let m = [
        vec![service("main", &[main]), service("canary", &[canary])],
        mains,
        canaries,
    ]
    .concat()
    .join("---\n");
    let p = TestProxy::start(&m).await;
    let ask = |host: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let p = &p;
        async move { answered(p, host, headers).await.1 }
    };

    // canary-by-header: always → canary; never and anything else → main.
    assert_eq!(
        ask("header.example.com", &[("CanaryByHeader", "always")]).await,
        "canary"
    );
    assert_eq!(
        ask("header.example.com", &[("CanaryByHeader", "never")]).await,
        "main"
    );
    assert_eq!(
        ask(
            "header.example.com",
            &[("CanaryByHeader", "badheadervalue")]
        )
        .await,
        "main"
    );
    assert_eq!(ask("header.example.com", &[]).await, "main");
    // With a value, only that value; always is just another value.
    assert_eq!(
        ask("value.example.com", &[("CanaryByHeader", "DoCanary")]).await,
        "canary"
    );
    assert_eq!(
        ask("value.example.com", &[("CanaryByHeader", "always")]).await,
        "main"
    );
    assert_eq!(
        ask(
            "value.example.com",
            &[("CanaryByHeader", "otherheadervalue")]
        )
        .await,
        "main"
    );
    // ingress-nginx compares the value exactly.
    assert_eq!(
        ask("value.example.com", &[("CanaryByHeader", "docanary")]).await,
        "main"
    );
    // canary-by-header-pattern (e2e "should route requests to the correct upstream if the
    // header matches the pattern"): a value the expression matches; always no longer does.
    assert_eq!(
        ask("pattern.example.com", &[("CanaryByHeader", "DoCanary")]).await,
        "canary"
    );
    assert_eq!(
        ask("pattern.example.com", &[("CanaryByHeader", "DoSomething")]).await,
        "main"
    );
    assert_eq!(
        ask("pattern.example.com", &[("CanaryByHeader", "always")]).await,
        "main"
    );
    assert_eq!(ask("pattern.example.com", &[]).await, "main");
    // canary-by-cookie, wherever the cookie sits in the header.
    assert_eq!(
        ask(
            "cookie.example.com",
            &[("cookie", "Canary-By-Cookie=always")]
        )
        .await,
        "canary"
    );
    assert_eq!(
        ask(
            "cookie.example.com",
            &[("cookie", "a=1; Canary-By-Cookie=always; b=2")]
        )
        .await,
        "canary"
    );
    assert_eq!(
        ask(
            "cookie.example.com",
            &[("cookie", "Canary-By-Cookie=never")]
        )
        .await,
        "main"
    );
    assert_eq!(
        ask(
            "cookie.example.com",
            &[("cookie", "Canary-By-Cookie=badcookievalue")]
        )
        .await,
        "main"
    );
    assert_eq!(
        ask(
            "cookie.example.com",
            &[("cookie", "XCanary-By-Cookie=always")]
        )
        .await,
        "main"
    );
    // The header decides before the cookie; a header value it does not know falls through.
    assert_eq!(
        ask(
            "both.example.com",
            &[
                ("CanaryByHeader", "never"),
                ("cookie", "Canary-By-Cookie=always")
            ]
        )
        .await,
        "main"
    );
    assert_eq!(
        ask(
            "both.example.com",
            &[
                ("CanaryByHeader", "maybe"),
                ("cookie", "Canary-By-Cookie=always")
            ]
        )
        .await,
        "canary"
    );
    // Weights: all, none, and a split that reaches both.
    for _ in 0..20 {
        assert_eq!(ask("all.example.com", &[]).await, "canary");
        assert_eq!(ask("none.example.com", &[]).await, "main");
    }
    let mut canary_share = 0;
    for _ in 0..400 {
        if ask("split.example.com", &[]).await == "canary" {
            canary_share += 1;
        }
    }
    assert!(
        (100..=300).contains(&canary_share),
        "{canary_share} of 400 to the canary at 50%"
    );
    // A canary with no main Ingress is not served.
    assert_eq!(
        answered(&p, "lonely.example.com", &[]).await.0,
        StatusCode::NOT_FOUND
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_and_hashing_as_ingress_nginx_applies_them() {
    let backends = [echo("one").await, echo("two").await, echo("three").await];
    let n = "nginx.ingress.kubernetes.io";
    let m = [
        service("app", &backends),
        ingress(
            "sticky",
            &format!("{n}/affinity: cookie, {n}/session-cookie-name: SERVERID, {n}/session-cookie-expires: '172800', {n}/session-cookie-max-age: '259200', {n}/session-cookie-domain: foo.bar"),
            &[
                ("sticky.example.com", "/something", "Prefix", "app"),
                ("sticky.example.com", "/somewhereelse", "Prefix", "app"),
            ],
        ),
        ingress("plain", "", &[("sticky.example.com", "/foo", "Prefix", "app")]),
        ingress(
            "hashed",
            &format!("{n}/upstream-hash-by: '$arg_user'"),
            &[("hashed.example.com", "/", "Prefix", "app")],
        ),
        ingress(
            "rr",
            &format!("{n}/load-balance: round_robin"),
            &[("rr.example.com", "/", "Prefix", "app")],
        ),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;

    // The first request gets the cookie, with affinity.go's attributes and its path.
    let (status, cookie, first) = answered_at(&p, "sticky.example.com", "/something", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = cookie.expect("a Set-Cookie on the first request");
    assert!(cookie.starts_with("SERVERID="), "{cookie}");
    for part in [
        "; Expires=",
        "; Max-Age=259200",
        "; Domain=foo.bar",
        "; Path=/something",
        "; HttpOnly",
    ] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without session-cookie-secure: {cookie}"
    );
    // With it, every request stays on that backend and gets no new cookie.
    let sent = cookie.split(';').next().unwrap();
    for _ in 0..15 {
        let (_, again, by) = answered_at(
            &p,
            "sticky.example.com",
            "/something/x",
            &[("cookie", sent)],
        )
        .await;
        assert_eq!(by, first);
        assert_eq!(again, None);
    }
    // Without it, requests spread.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(
            answered_at(&p, "sticky.example.com", "/something", &[])
                .await
                .2,
        );
    }
    assert!(seen.len() > 1, "{seen:?}");
    // Each path's cookie carries that path; a path of an Ingress without affinity, none.
    let (_, other, _) = answered_at(&p, "sticky.example.com", "/somewhereelse", &[]).await;
    assert!(other.unwrap_or_default().contains("; Path=/somewhereelse"));
    assert_eq!(
        answered_at(&p, "sticky.example.com", "/foo", &[]).await.1,
        None
    );

    // upstream-hash-by: one user, one backend; users spread over the backends.
    let mut by_user = std::collections::BTreeMap::new();
    for round in 0..3 {
        for u in 0..12 {
            let path = format!("/?user=u{u}");
            let by = answered_at(&p, "hashed.example.com", &path, &[]).await.2;
            let was = by_user.entry(u).or_insert_with(|| by.clone());
            assert_eq!(*was, by, "user u{u}, round {round}");
        }
    }
    let spread: std::collections::BTreeSet<_> = by_user.values().collect();
    assert!(spread.len() > 1, "{by_user:?}");
    // load-balance: round_robin takes each backend in turn.
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..9 {
        *counts
            .entry(answered_at(&p, "rr.example.com", "/", &[]).await.2)
            .or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![3, 3, 3],
        "{counts:?}"
    );
    p.stop().await;
}

/// Ingress with `tls` on `host` (a self-signed certificate), forwarding to `svc`.
fn tls_ingress(name: &str, annotations: &str, host: &str, svc: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: tollgate\n  tls: [{{hosts: ['{host}'], secretName: {name}-tls}}]\n  rules:\n  - host: '{host}'\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]\n"
    )
}

/// `--ingress-nginx-defaults`: an Ingress with `tls` redirects HTTP to HTTPS (308) and its
/// HTTPS answers carry HSTS, unless its annotations say otherwise; bodies over 1m get 413;
/// an Ingress without `tls` is served on HTTP as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_defaults_when_switched_on() {
    let app = echo("app").await;
    let (cert, key, _) = self_signed(&[
        "secure.example.com",
        "optout.example.com",
        "keep.example.com",
    ]);
    let m = [
        service("app", &[app]),
        tls_secret("secure-tls", &cert, &key),
        tls_secret("optout-tls", &cert, &key),
        tls_ingress("secure", "", "secure.example.com", "app"),
        tls_ingress(
            "optout",
            "nginx.ingress.kubernetes.io/ssl-redirect: 'false', nginx.ingress.kubernetes.io/proxy-body-size: 8m",
            "optout.example.com",
            "app",
        ),
        ingress("plain", "", &[("plain.example.com", "/", "Prefix", "app")]),
        tls_secret("keep-tls", &cert, &key),
        tls_ingress(
            "keep",
            "nginx.ingress.kubernetes.io/preserve-trailing-slash: 'true'",
            "keep.example.com",
            "app",
        ),
    ]
    .join("---\n");
    let p = TestProxy::start_with(&m, |o| o.build.ingress_nginx_defaults = true).await;
    // ingress-nginx's redirect drops one `/` ending the URI, unless preserve-trailing-slash.
    let location = |host: &str, path: &str| {
        let http = p.http;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        async move { header_of(&raw(http, req.as_bytes()).await, "location") }
    };
    let https = p.https.port();
    assert_eq!(
        location("secure.example.com", "/dir/").await,
        Some(format!("https://secure.example.com:{https}/dir"))
    );
    assert_eq!(
        location("secure.example.com", "/").await,
        Some(format!("https://secure.example.com:{https}"))
    );
    assert_eq!(
        location("keep.example.com", "/dir/").await,
        Some(format!("https://keep.example.com:{https}/dir/"))
    );
    let r = raw(
        p.http,
        b"GET /x?y=1 HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&r).contains("308"), "{r}");
    assert!(
        r.to_ascii_lowercase().contains(&format!(
            "location: https://secure.example.com:{}/x?y=1",
            p.https.port()
        )),
        "{r}"
    );
    let both = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let tls = tls_get(
        p.https,
        Some("secure.example.com"),
        "secure.example.com",
        "/",
        &["http/1.1"],
        both,
    )
    .await
    .expect("HTTPS");
    assert_eq!(tls.resp.0, StatusCode::OK);
    assert_eq!(
        tls.resp
            .1
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000; includeSubDomains")
    );
    // ssl-redirect: "false" keeps HTTP; an Ingress without tls is served on HTTP, no HSTS.
    let (status, headers, _) = get(p.http, "optout.example.com", "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("strict-transport-security").is_none());
    let (status, headers, _) = get(p.http, "plain.example.com", "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("strict-transport-security").is_none());
    // The 1m body limit, and an Ingress's own proxy-body-size over it.
    let big = format!(
        "POST / HTTP/1.1\r\nHost: plain.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        2 * 1024 * 1024
    );
    assert!(status_line(&raw(p.http, big.as_bytes()).await).contains("413"));
    let big = big.replace("plain.example.com", "optout.example.com");
    let r = raw(p.http, big.as_bytes()).await;
    assert!(!status_line(&r).contains("413"), "{r}");
    p.stop().await;
}

/// `service-upstream: "true"`: the Service's cluster IP is the one target (kube-proxy
/// balances); without it the endpoints are. `server-alias`: more names for the same paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_upstream_forwards_to_the_cluster_ip() {
    let vip = echo_on("127.0.0.2:0".parse().unwrap(), "cluster-ip").await;
    let pod = echo_on(
        format!("127.0.0.1:{}", vip.port()).parse().unwrap(),
        "endpoint",
    )
    .await;
    let svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: app}}\nspec: {{clusterIP: 127.0.0.2, ports: [{{name: http, port: {port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: app-1, labels: {{kubernetes.io/service-name: app}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: ['{ip}'], conditions: {{ready: true}}}}]\n",
        port = vip.port(),
        ip = pod.ip()
    );
    let route = |name: &str, host: &str, annotations: &str| {
        ingress(name, annotations, &[(host, "/", "Prefix", "app")]).replace(
            "port: {number: 80}",
            &format!("port: {{number: {}}}", vip.port()),
        )
    };
    let m = [
        svc,
        route(
            "vip",
            "vip.example.com",
            "nginx.ingress.kubernetes.io/service-upstream: 'true'",
        ),
        route("pods", "pods.example.com", ""),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;
    assert_eq!(
        answered(&p, "vip.example.com", &[]).await,
        (StatusCode::OK, "cluster-ip".into())
    );
    assert_eq!(
        answered(&p, "pods.example.com", &[]).await,
        (StatusCode::OK, "endpoint".into())
    );
    p.stop().await;
}

/// ingress-nginx's `default-backend` with `custom-http-errors`: a listed status from the
/// route's Service is answered by the default backend, told which by X-Code and the other
/// headers its custom error pages get; other statuses pass; a Service with no ready
/// endpoint is served by the default backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_http_errors_go_to_the_default_backend() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = tcp_target(|mut s| async move {
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        let status = if head.starts_with("GET /missing") {
            "404 Not Found"
        } else if head.starts_with("GET /boom") {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let _ = s
            .write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 3\r\nconnection: close\r\n\r\napp")
                    .as_bytes(),
            )
            .await;
    })
    .await;
    let (errors, seen) = recorder().await;
    let n = "nginx.ingress.kubernetes.io";
    let empty = "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec: {ports: [{name: http, port: 80}]}\n";
    let m = [
        service("app", &[app]),
        service("errors", &[errors]),
        empty.to_string(),
        ingress(
            "pages",
            &format!("{n}/default-backend: errors, {n}/custom-http-errors: '404,415'"),
            &[("pages.example.com", "/", "Prefix", "app")],
        ),
        ingress(
            "fallback",
            &format!("{n}/default-backend: errors"),
            &[("fallback.example.com", "/", "Prefix", "empty")],
        ),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;
    let ask = |host: &str, path: &str| {
        let http = p.http;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        async move { raw(http, req.as_bytes()).await }
    };
    let r = ask("pages.example.com", "/missing?x=1").await;
    assert!(
        status_line(&r).contains("200") && r.ends_with("ok"),
        "answered by the default backend: {r}"
    );
    {
        let seen = seen.lock().unwrap();
        let head = &seen[0];
        for (name, want) in [
            ("x-code", "404"),
            ("x-format", "application/json"),
            ("x-original-uri", "/missing?x=1"),
            ("x-namespace", "default"),
            ("x-ingress-name", "pages"),
            ("x-service-name", "app"),
            ("x-service-port", "80"),
        ] {
            assert_eq!(
                values(head, name),
                vec![want.to_string()],
                "{name} in {head}"
            );
        }
    }
    let r = ask("pages.example.com", "/boom").await;
    assert!(
        status_line(&r).contains("503") && r.ends_with("app"),
        "not listed: passed on: {r}"
    );
    let r = ask("pages.example.com", "/fine").await;
    assert!(status_line(&r).contains("200") && r.ends_with("app"), "{r}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let r = ask("fallback.example.com", "/").await;
    assert!(
        status_line(&r).contains("200") && r.ends_with("ok"),
        "no endpoints: the default backend: {r}"
    );
    p.stop().await;
}

/// ingress-nginx's `proxy-next-upstream`: with `http_503` a target's 503 sends the request
/// on to another target; without it (or with a single try) the 503 is the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_upstream_moves_past_listed_statuses() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failing = tcp_target(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown")
            .await;
    })
    .await;
    let healthy = echo("healthy").await;
    let n = "nginx.ingress.kubernetes.io";
    let m = [
        service("pair", &[failing, healthy]),
        ingress(
            "retry",
            &format!("{n}/proxy-next-upstream: 'error timeout http_503'"),
            &[("retry.example.com", "/", "Prefix", "pair")],
        ),
        ingress(
            "once",
            &format!("{n}/proxy-next-upstream: 'error timeout http_503', {n}/proxy-next-upstream-tries: '1'"),
            &[("once.example.com", "/", "Prefix", "pair")],
        ),
        ingress("plain", "", &[("plain.example.com", "/", "Prefix", "pair")]),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;
    for _ in 0..20 {
        assert_eq!(
            answered(&p, "retry.example.com", &[]).await,
            (StatusCode::OK, "healthy".into())
        );
    }
    let mut unavailable = (0, 0);
    for _ in 0..40 {
        if answered(&p, "once.example.com", &[]).await.0 == StatusCode::SERVICE_UNAVAILABLE {
            unavailable.0 += 1;
        }
        if answered(&p, "plain.example.com", &[]).await.0 == StatusCode::SERVICE_UNAVAILABLE {
            unavailable.1 += 1;
        }
    }
    assert!(
        unavailable.0 > 0 && unavailable.1 > 0,
        "{unavailable:?}: without retries the 503 is the answer"
    );
    p.stop().await;
}

/// ssl-passthrough, as test/e2e/settings/ssl_passthrough.go checks it: TLS naming the
/// annotated host reaches the backend untouched (the client sees the backend's own
/// certificate); another host on the same listener is served by the proxy's TLS; plain HTTP
/// to the passthrough host still goes to the backend, over TLS as ingress-nginx sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_passthrough_hands_tls_to_the_backend() {
    use tokio::io::AsyncWriteExt;
    let (cert, key, backend_der) = self_signed(&["pass.example.com"]);
    let acceptor = acceptor_for(&cert, &key, &[b"http/1.1"]);
    let backend = tcp_target(move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(s).await else {
                return;
            };
            if !read_request_head(&mut tls).await {
                return;
            }
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\npassthrough")
                .await;
            let _ = tls.shutdown().await;
        }
    })
    .await;
    let plain = echo("terminated").await;
    let n = "nginx.ingress.kubernetes.io";
    let m = [
        service("tls-backend", &[backend]),
        service("plain", &[plain]),
        ingress(
            "pass",
            &format!("{n}/ssl-passthrough: 'true'"),
            &[("pass.example.com", "/", "Prefix", "tls-backend")],
        ),
        ingress(
            "normal",
            "",
            &[("normal.example.com", "/", "Prefix", "plain")],
        ),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;
    let both = &[&rustls::version::TLS13, &rustls::version::TLS12];

    let passed = tls_get(
        p.https,
        Some("pass.example.com"),
        "pass.example.com",
        "/",
        &["http/1.1"],
        both,
    )
    .await
    .expect("TLS through to the backend");
    assert_eq!(
        passed.server_cert, backend_der,
        "the backend's own certificate"
    );
    assert_eq!(passed.resp.0, StatusCode::OK);
    assert_eq!(passed.resp.2, "passthrough");
    // The server name is matched without regard to case, as DNS names are.
    let upper = tls_get(
        p.https,
        Some("PASS.example.com"),
        "pass.example.com",
        "/",
        &["http/1.1"],
        both,
    )
    .await
    .expect("TLS through to the backend");
    assert_eq!(upper.server_cert, backend_der);

    let terminated = tls_get(
        p.https,
        Some("normal.example.com"),
        "normal.example.com",
        "/",
        &["http/1.1", "h2"],
        both,
    )
    .await
    .expect("the proxy's TLS");
    assert_ne!(terminated.server_cert, backend_der);
    assert_eq!(served_by(&terminated.resp.2), "terminated");
    // No server name: the proxy's own TLS, never the passthrough backend.
    let unnamed = tls_get(p.https, None, "pass.example.com", "/", &["http/1.1"], both).await;
    if let Ok(r) = unnamed {
        assert_ne!(r.server_cert, backend_der);
    }

    // Plain HTTP to the passthrough host: forwarded to the backend over TLS.
    let (status, _, body) = get(p.http, "pass.example.com", "/").await.expect("HTTP");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "passthrough");
    p.stop().await;
}

/// proxy-send-timeout (test/e2e/annotations/proxy.go checks `proxy_send_timeout` in the
/// configuration; here what it does): a target that stops taking the request body gets the
/// request answered 504 once the timeout passes — long before the read timeout would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_stops_taking_the_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Reads the request head, then nothing more, and never answers; holds the socket open.
    let target = tcp_target(|mut s| async move {
        if !read_request_head(&mut s).await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let n = "nginx.ingress.kubernetes.io";
    let m = [
        service("stuck", &[target]),
        ingress(
            "upload",
            &format!("{n}/proxy-send-timeout: '1', {n}/proxy-read-timeout: '30'"),
            &[("upload.example.com", "/", "Prefix", "stuck")],
        ),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;
    const BODY: usize = 256 << 20; // far more than the sockets on the way can hold
    let s = tokio::net::TcpStream::connect(p.http)
        .await
        .expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST /up HTTP/1.1\r\nHost: upload.example.com\r\nContent-Length: {BODY}\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < BODY {
            wr.write_all(&chunk).await?;
            sent += chunk.len();
        }
        Ok::<_, std::io::Error>(())
    });
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while find_bytes(&resp, b"\r\n\r\n").is_none() {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => resp.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer within 20 s (the read timeout is 30 s)"
    );
    let text = String::from_utf8_lossy(&resp).to_string();
    assert!(status_line(&text).contains("504"), "{text}");
    writer.abort();
    p.stop().await;
}
