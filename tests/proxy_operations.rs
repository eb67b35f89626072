//! Operations: `/healthz`, `/readyz` and `/metrics` with real counts, and targets that speak
//! HTTPS (`backend-protocol: HTTPS`).

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use support::*;

fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_metrics_count_what_happened() {
    let web = echo("web").await;
    let m = format!(
        "{}---\n{}",
        service("web", &[web]),
        ingress("shop", "", &[("m.example.com", "/", "Prefix", "web")])
    );
    let p = TestProxy::start(&m).await;
    // Nothing served yet: no request series at all (an idle proxy with 10,000 Ingresses
    // exposed 150,000 zero series, 16 MB per scrape).
    let (_, _, idle) = get(p.admin, "a", "/metrics").await.expect("metrics");
    assert!(
        !idle.contains("tollgate_proxy_requests_total{"),
        "request series before any request:\n{idle}"
    );
    assert_eq!(
        get(p.admin, "a", "/healthz").await.expect("healthz").0,
        StatusCode::OK
    );
    assert_eq!(
        get(p.admin, "a", "/readyz").await.expect("readyz").0,
        StatusCode::OK
    );
    for _ in 0..7 {
        assert_eq!(
            get(p.http, "m.example.com", "/x").await.expect("ok").0,
            StatusCode::OK
        );
    }
    for _ in 0..3 {
        assert_eq!(
            get(p.http, "nothing.example.com", "/")
                .await
                .expect("404")
                .0,
            StatusCode::NOT_FOUND
        );
    }
    let tls = tls_get(
        p.https,
        Some("m.example.com"),
        "m.example.com",
        "/",
        &["h2"],
        &[&rustls::version::TLS13],
    )
    .await
    .expect("tls");
    assert_eq!(tls.resp.0, StatusCode::OK);

    let (status, headers, body) = get(p.admin, "a", "/metrics").await.expect("metrics");
    assert_eq!(status, StatusCode::OK);
    assert!(headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("openmetrics")));
    let ok = metric(
        &body,
        r#"tollgate_proxy_requests_total{ingress="default/shop",service="default/web",status_class="2xx"}"#,
    );
    assert_eq!(
        ok,
        Some(8.0),
        "7 plain + 1 TLS request served by the Ingress:\n{body}"
    );
    let not_found = metric(
        &body,
        r#"tollgate_proxy_requests_total{ingress="",service="",status_class="4xx"}"#,
    );
    assert_eq!(not_found, Some(3.0), "{body}");
    assert!(
        metric(&body, "tollgate_proxy_config_generation ").is_some_and(|g| g >= 1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "tollgate_proxy_upstream_response_seconds_count"),
        Some(8.0),
        "{body}"
    );
    assert!(
        metric(&body, "tollgate_proxy_tls_handshakes_total").is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(
        metric(&body, "tollgate_proxy_config_apply_seconds_count").is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert!(body.contains("tollgate_proxy_open_connections"), "{body}");
    assert_eq!(
        get(p.admin, "a", "/nope").await.expect("admin 404").0,
        StatusCode::NOT_FOUND
    );

    // The Ingress goes away: so do its counters (churning Ingresses must not grow the
    // exposition forever).
    p.write(
        "main.yaml",
        &format!(
            "{}---\n{}",
            service("web", &[web]),
            ingress("shop-v2", "", &[("m.example.com", "/", "Prefix", "web")])
        ),
    );
    wait_until(
        std::time::Duration::from_secs(10),
        "old counters pruned",
        || async {
            // A series appears with its first request.
            let _ = get(p.http, "m.example.com", "/x").await;
            let body = get(p.admin, "a", "/metrics")
                .await
                .map(|r| r.2)
                .unwrap_or_default();
            !body.contains(r#"ingress="default/shop""#)
                && body.contains(r#"ingress="default/shop-v2""#)
        },
    )
    .await;
    p.stop().await;
}

/// A target that speaks HTTPS with a self-signed certificate and says which path it saw.
async fn tls_backend() -> SocketAddr {
    tls_target(&["backend.internal"], &[], |tls| async move {
        let svc =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                    format!("tls-backend {}", req.uri().path()),
                ))))
            });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), svc)
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets() {
    let b = tls_backend().await;
    let m = format!(
        "{}---\n{}",
        service_with(
            "secure",
            &[b],
            "alb.ingress.kubernetes.io/backend-protocol: HTTPS"
        ),
        ingress("s", "", &[("s.example.com", "/", "Prefix", "secure")])
    );
    let p = TestProxy::start(&m).await;
    for i in 0..5 {
        let (status, _, body) = get(p.http, "s.example.com", &format!("/p{i}"))
            .await
            .expect("request");
        assert_eq!(
            (status, body),
            (StatusCode::OK, format!("tls-backend /p{i}"))
        );
    }
    p.stop().await;
}

/// A keepalive connection to a target that no request comes back for is closed after the
/// upstream idle timeout (and not before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = backend.local_addr().expect("addr");
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut s, _)) = backend.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        let served = std::time::Instant::now();
        // The proxy keeps the connection for reuse; wait for it to let go.
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = closed_tx.send(served.elapsed());
    });
    let m = format!(
        "{}---\n{}",
        service("raw", &[addr]),
        ingress("raw", "", &[("raw.example.com", "/", "Prefix", "raw")])
    );
    let p = TestProxy::start_with(&m, |o| {
        o.settings.upstream_idle_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let (status, _, body) = get(p.http, "raw.example.com", "/").await.expect("request");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let idle_for = tokio::time::timeout(std::time::Duration::from_secs(10), closed_rx)
        .await
        .expect("the proxy closed the idle upstream connection")
        .expect("backend task");
    assert!(
        idle_for >= std::time::Duration::from_secs(1),
        "not before the timeout: {idle_for:?}"
    );
    p.stop().await;
}
