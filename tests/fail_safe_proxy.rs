//! Last known good in the proxy, with real traffic: an Ingress that is served, then turned
//! invalid, keeps answering exactly as before; once fixed, its new version is served. And an
//! Ingress carrying a protective annotation the proxy does not honour is never served.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

/// The status and the echo backend that answered `host` `path`.
async fn answers(p: &TestProxy, host: &str, path: &str) -> (StatusCode, String) {
    match get(p.http, host, path).await {
        Ok((status, _, body)) => (status, served_by(&body)),
        Err(e) => panic!("GET {host}{path}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_then_invalid_then_fixed() {
    let a = echo("a").await;
    let b = echo("b").await;
    let services = format!("{}---\n{}", service("svc-a", &[a]), service("svc-b", &[b]));
    let v1 = ingress("app", "", &[("app.example.com", "/v1", "Prefix", "svc-a")]);
    let marker = |path: &str| {
        ingress(
            "marker",
            "",
            &[("marker.example.com", path, "Prefix", "svc-b")],
        )
    };
    let p = TestProxy::start(&format!("{services}---\n{v1}---\n{}", marker("/m1"))).await;
    assert_eq!(
        answers(&p, "app.example.com", "/v1/x").await.0,
        StatusCode::OK
    );
    assert_eq!(answers(&p, "app.example.com", "/v1/x").await.1, "a");

    // A broken edit (a bad annotation value, a new path and backend), written together with
    // a change of another Ingress: once the marker's new path answers, the broken version
    // has been read too.
    let broken = ingress(
        "app",
        "nginx.ingress.kubernetes.io/use-regex: maybe",
        &[("app.example.com", "/v2", "Prefix", "svc-b")],
    );
    p.write(
        "main.yaml",
        &format!("{services}---\n{broken}---\n{}", marker("/m2")),
    );
    wait_until(Duration::from_secs(10), "the marker's new path", || async {
        matches!(
            get(p.http, "marker.example.com", "/m2").await,
            Ok((StatusCode::OK, _, _))
        )
    })
    .await;
    assert_eq!(
        answers(&p, "app.example.com", "/v1/x").await,
        (StatusCode::OK, "a".to_string()),
        "the last valid version is still served"
    );
    assert_eq!(
        answers(&p, "app.example.com", "/v2/x").await.0,
        StatusCode::NOT_FOUND,
        "the broken version is not"
    );

    // Fixed: the new version replaces the old one.
    let fixed = ingress("app", "", &[("app.example.com", "/v2", "Prefix", "svc-b")]);
    p.write(
        "main.yaml",
        &format!("{services}---\n{fixed}---\n{}", marker("/m3")),
    );
    wait_until(Duration::from_secs(10), "the fixed version", || async {
        matches!(
            get(p.http, "app.example.com", "/v2/x").await,
            Ok((StatusCode::OK, _, _))
        )
    })
    .await;
    assert_eq!(answers(&p, "app.example.com", "/v2/x").await.1, "b");
    assert_eq!(
        answers(&p, "app.example.com", "/v1/x").await.0,
        StatusCode::NOT_FOUND
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protective_annotation_not_honoured_is_never_served() {
    let a = echo("a").await;
    let guarded = ingress(
        "guarded",
        "nginx.ingress.kubernetes.io/enable-modsecurity: 'true'",
        &[("guarded.example.com", "/", "Prefix", "svc-a")],
    );
    let open = ingress("open", "", &[("open.example.com", "/", "Prefix", "svc-a")]);
    let p = TestProxy::start(&format!(
        "{}---\n{guarded}---\n{open}",
        service("svc-a", &[a])
    ))
    .await;
    assert_eq!(answers(&p, "open.example.com", "/").await.0, StatusCode::OK);
    assert_eq!(
        answers(&p, "guarded.example.com", "/").await.0,
        StatusCode::NOT_FOUND,
        "an app behind a WAF must not be served without it"
    );
    p.stop().await;
}

/// ingress-nginx's allow- and deny-lists on real connections from 127.0.0.1: allowed or not
/// denied → the backend; otherwise 403, as ingress-nginx answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ranges_are_enforced_on_the_client_address() {
    let a = echo("a").await;
    let ing = |name: &str, host: &str, annotation: &str| {
        ingress(name, annotation, &[(host, "/", "Prefix", "svc-a")])
    };
    let p = TestProxy::start(&format!(
        "{}---\n{}---\n{}---\n{}---\n{}---\n{}",
        service("svc-a", &[a]),
        ing(
            "both",
            "both.example.com",
            "nginx.ingress.kubernetes.io/allowlist-source-range: '127.0.0.0/8', nginx.ingress.kubernetes.io/denylist-source-range: '127.0.0.1'"
        ),
        ing(
            "allowed",
            "allowed.example.com",
            "nginx.ingress.kubernetes.io/allowlist-source-range: '127.0.0.0/8'"
        ),
        ing(
            "not-allowed",
            "not-allowed.example.com",
            "nginx.ingress.kubernetes.io/whitelist-source-range: '10.0.0.0/8, 192.168.0.1'"
        ),
        ing(
            "denied",
            "denied.example.com",
            "nginx.ingress.kubernetes.io/denylist-source-range: '127.0.0.1'"
        ),
        ing(
            "not-denied",
            "not-denied.example.com",
            "nginx.ingress.kubernetes.io/denylist-source-range: '10.0.0.0/8'"
        ),
    ))
    .await;
    for (host, want) in [
        ("allowed.example.com", StatusCode::OK),
        ("not-allowed.example.com", StatusCode::FORBIDDEN),
        ("denied.example.com", StatusCode::FORBIDDEN),
        ("not-denied.example.com", StatusCode::OK),
        ("both.example.com", StatusCode::FORBIDDEN),
    ] {
        assert_eq!(answers(&p, host, "/x").await.0, want, "{host}");
        // Over HTTP/2 too (another request path).
        let (status, _, _) = h2c_get(p.http, host, "/x").await.expect("h2c");
        assert_eq!(status, want, "{host} over h2c");
    }
    p.stop().await;
}
