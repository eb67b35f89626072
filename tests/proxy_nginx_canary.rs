//! ingress-nginx canaries served by the proxy, on real sockets, as ingress-nginx's
//! test/e2e/annotations/canary.go pins them: `canary-by-header` (`always`/`never`, or only
//! `canary-by-header-value`), `canary-by-cookie`, `canary-weight` (0, all, and a split seen
//! from both sides), header before cookie before weight, and a canary with no main Ingress
//! not served.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

/// Which backend answered a GET of `host` with `headers`.
async fn answered(p: &TestProxy, host: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut c = H1::connect(p.http).await.expect("connect");
    let mut b = Request::get("/").header("host", host);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let req = b.body(Full::new(Bytes::new())).expect("request");
    let (status, _, body) = c.request(req).await.expect("response");
    (status, served_by(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_as_ingress_nginx_routes_them() {
    let main = echo("main").await;
    let canary = echo("canary").await;
    let n = "nginx.ingress.kubernetes.io";
    let mains = ["header", "value", "cookie", "both", "all", "none", "split"]
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
