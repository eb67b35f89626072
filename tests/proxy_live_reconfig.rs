//! Live reconfiguration: 100 changes to Ingress, Service and EndpointSlice manifests while
//! clients keep sending on keepalive HTTP/1.1 and HTTP/2 connections. Not one request may
//! fail, and a request in flight to a target that is removed finishes normally. Two changes
//! in three turn ingress-nginx policies on the route (allow-list, a rate limit never
//! reached, CORS, cookie affinity) or off again, so swaps with them lose nothing either.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

async fn config_generation(admin: SocketAddr) -> u64 {
    match get(admin, "admin", "/metrics").await {
        Ok((_, _, body)) => body
            .lines()
            .find_map(|l| l.strip_prefix("tollgate_proxy_config_generation "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// ingress-nginx policies the clients all pass: they come from 127.0.0.1, stay far under
/// the limit, and need no cookie.
const POLICIES: &str = "nginx.ingress.kubernetes.io/whitelist-source-range: 127.0.0.0/8, nginx.ingress.kubernetes.io/limit-rps: '100000', nginx.ingress.kubernetes.io/enable-cors: 'true', nginx.ingress.kubernetes.io/affinity: cookie";

/// The manifests for change number `i`: the target set, the backing Service of `/` and an
/// extra path all vary; every variant keeps `live.example.com/` answerable.
fn manifests(i: usize, backends: &[SocketAddr]) -> String {
    let n = backends.len();
    // A rotating, never-empty subset of the backends.
    let subset: Vec<SocketAddr> = (0..n)
        .filter(|b| (i + b) % 3 != 0 || *b == i % n)
        .map(|b| backends[b])
        .collect();
    let svc = if i % 2 == 0 { "pool-a" } else { "pool-b" };
    let mut routes = vec![("live.example.com", "/", "Prefix", svc)];
    if i % 4 < 2 {
        routes.push(("live.example.com", "/extra", "Prefix", "pool-a"));
    }
    format!(
        "{}---\n{}---\n{}",
        service("pool-a", &subset),
        service("pool-b", &backends[..2]),
        ingress("live", if i % 3 == 0 { "" } else { POLICIES }, &routes)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_changes_under_keepalive_load_fail_nothing() {
    let mut backends = Vec::new();
    for i in 0..4 {
        backends.push(echo(&format!("b{i}")).await);
    }
    let p = TestProxy::start(&manifests(0, &backends)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(parking_failures());

    let mut clients = tokio::task::JoinSet::new();
    for c in 0..6 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), p.http);
        clients.spawn(async move {
            let mut conn = H1::connect(addr).await.expect("connect");
            while !stop.load(Ordering::Relaxed) {
                let path = if c % 2 == 0 { "/" } else { "/extra/x" };
                match conn.get("live.example.com", path).await {
                    Ok((StatusCode::OK, _, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // /extra comes and goes by design; the host's default answers 404 then.
                    Ok((StatusCode::NOT_FOUND, _, _)) if path != "/" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failed.record(format!("h1 client {c}: {:?}", other.map(|r| r.0))),
                }
                assert!(
                    !conn.is_closed(),
                    "the proxy must not close a keepalive connection"
                );
            }
        });
    }
    for c in 0..2 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), p.http);
        clients.spawn(async move {
            let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                    .await
                    .expect("h2");
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get("http://live.example.com/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match send.send_request(req).await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let _ = r.into_body().collect().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.record(format!("h2 client {c}: {:?}", other.map(|r| r.status())))
                    }
                }
            }
        });
    }

    // A request held at a target while that target is removed from the configuration must
    // still finish normally (draining). The target signals arrival and waits for release.
    let arrived = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let holder = holding_backend(arrived.clone(), release.clone()).await;
    p.write(
        "hold.yaml",
        &format!(
            "{}---\n{}",
            service("hold", &[holder]),
            ingress("hold", "", &[("hold.example.com", "/", "Prefix", "hold")])
        ),
    );
    let http = p.http;
    wait_until(Duration::from_secs(5), "hold route", || async move {
        // The holder answers 503 to probes so they are not held.
        get(http, "hold.example.com", "/probe")
            .await
            .is_ok_and(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    let held = tokio::spawn(async move { get(http, "hold.example.com", "/held").await });
    tokio::time::timeout(Duration::from_secs(5), arrived.notified())
        .await
        .expect("held request reached its target");
    std::fs::remove_file(p.path("hold.yaml")).expect("remove");
    wait_until(
        Duration::from_secs(5),
        "hold route removal",
        || async move {
            get(http, "hold.example.com", "/probe")
                .await
                .is_ok_and(|r| r.0 == StatusCode::NOT_FOUND)
        },
    )
    .await;
    release.notify_one();
    let held = held.await.expect("task").expect("held request");
    assert_eq!(
        (held.0, held.2.as_str()),
        (StatusCode::OK, "held"),
        "the removed target finished its request"
    );

    let mut last = config_generation(p.admin).await;
    for i in 1..=100 {
        p.write("main.yaml", &manifests(i, &backends));
        let admin = p.admin;
        let seen = last;
        wait_until(
            Duration::from_secs(5),
            &format!("change {i} to apply"),
            || async move { config_generation(admin).await > seen },
        )
        .await;
        last = config_generation(p.admin).await;
    }

    stop.store(true, Ordering::Relaxed);
    while let Some(r) = clients.join_next().await {
        r.expect("client task");
    }
    let failures = failed.take();
    let total = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 200, "clients sent only {total} requests");
    eprintln!("{total} requests across 100+ changes, 0 failed");
    p.stop().await;
}

/// A backend that answers `/held` only once released, after signalling arrival; anything
/// else gets 503 at once.
async fn holding_backend(
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
) -> SocketAddr {
    tcp_target(move |s| {
        let (arrived, release) = (arrived.clone(), release.clone());
        async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (arrived, release) = (arrived.clone(), release.clone());
                    async move {
                        if req.uri().path() == "/held" {
                            arrived.notify_one();
                            release.notified().await;
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"held"),
                            )))
                        } else {
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                            Ok(r)
                        }
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        }
    })
    .await
}

/// Failure messages collected from many tasks.
struct Failures(std::sync::Mutex<Vec<String>>);

fn parking_failures() -> Failures {
    Failures(std::sync::Mutex::new(Vec::new()))
}

impl Failures {
    fn record(&self, m: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(m);
        }
    }

    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}
