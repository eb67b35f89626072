//! Client connections that send no requests cannot hold the proxy: keep-alive connections
//! close after the idle timeout on every path (the HTTP/1.1 relay, hyper after a request
//! with a body, h2c), an optional cap ends a connection after N requests, and at
//! `--max-connections` the connection that has waited longest for a request is closed to
//! admit a new client — only a connection with a request in flight keeps its place.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// `h.example.com` on an echo target, `slow.example.com` on a target that answers only once
/// `release` turns true (a request in flight for as long as the test needs).
async fn proxy_with(
    release: watch::Receiver<bool>,
    tweak: impl FnOnce(&mut tollgate::proxy_command::ProxyRunOptions),
) -> TestProxy {
    let web = echo("web").await;
    let slow = tcp_target(move |mut s| {
        let mut release = release.clone();
        async move {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = tokio::time::timeout(Duration::from_secs(30), release.wait_for(|r| *r)).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    })
    .await;
    let m = format!(
        "{}---\n{}---\n{}",
        service("web", &[web]),
        service("slow", &[slow]),
        ingress(
            "web",
            "",
            &[
                ("h.example.com", "/", "Prefix", "web"),
                ("slow.example.com", "/", "Prefix", "slow")
            ]
        )
    );
    TestProxy::start_with(&m, tweak).await
}

async fn proxy(tweak: impl FnOnce(&mut tollgate::proxy_command::ProxyRunOptions)) -> TestProxy {
    proxy_with(watch::channel(true).1, tweak).await
}

/// Reads one response (head and a `Content-Length` body) from a raw connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the proxy closes `s` within `within` (reads EOF or a reset).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 256];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn served(addr: SocketAddr) -> bool {
    get(addr, "h.example.com", "/")
        .await
        .is_ok_and(|r| r.0 == StatusCode::OK && served_by(&r.2) == "web")
}

/// A new client served one request, its keep-alive connection kept open.
async fn held_client(addr: SocketAddr) -> H1 {
    let mut c = H1::connect(addr).await.expect("connect");
    let r = c
        .get("h.example.com", "/")
        .await
        .expect("served at the limit");
    assert_eq!(r.0, StatusCode::OK);
    c
}

/// Waits (at most 5 s) until the proxy has closed an HTTP/2 connection (GOAWAY, or close).
async fn h2_closed(h2: &hyper::client::conn::http2::SendRequest<Full<Bytes>>, what: &str) {
    wait_until(Duration::from_secs(5), what, || {
        let closed = h2.is_closed();
        async move { closed }
    })
    .await;
}

/// An h2c connection with one answered request.
async fn h2c_connection(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("http://h.example.com/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.expect("h2c request");
    assert_eq!(resp.status(), StatusCode::OK);
    send
}

/// ingress-nginx's `keep-alive`: a connection that waits longer than the idle timeout for
/// its next request is closed — on the relay's path, after hyper took the connection over
/// (a request with a body), and over h2c with no stream open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed_on_every_path() {
    let p = proxy(|o| o.limits.idle_timeout = Duration::from_millis(500)).await;
    let mut relay = TcpStream::connect(p.http).await.unwrap();
    relay
        .write_all(b"GET / HTTP/1.1\r\nHost: h.example.com\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut relay).await.starts_with("HTTP/1.1 200"));
    let mut hyper_h1 = TcpStream::connect(p.http).await.unwrap();
    hyper_h1
        .write_all(b"POST / HTTP/1.1\r\nHost: h.example.com\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert!(read_response(&mut hyper_h1)
        .await
        .starts_with("HTTP/1.1 200"));
    let h2 = h2c_connection(p.http).await;

    assert!(
        closed_within(&mut relay, Duration::from_secs(5)).await,
        "relay connection kept open"
    );
    assert!(
        closed_within(&mut hyper_h1, Duration::from_secs(5)).await,
        "hyper HTTP/1.1 connection kept open"
    );
    h2_closed(&h2, "the idle h2c connection to close").await;
    p.stop().await;
}

/// The idle timeout counts from the end of the last response, not from the connection's
/// start: a connection used more often than the timeout stays open past it (the relay moves
/// its timer lazily, when it fires).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_keepalive_connections_outlive_the_idle_timeout() {
    let p = proxy(|o| o.limits.idle_timeout = Duration::from_millis(600)).await;
    let mut relay = TcpStream::connect(p.http).await.unwrap();
    let h2 = h2c_connection(p.http).await;
    // Five requests 250 ms apart: 1.25 s on each connection, twice the idle timeout.
    for i in 0..5 {
        relay
            .write_all(b"GET / HTTP/1.1\r\nHost: h.example.com\r\n\r\n")
            .await
            .unwrap();
        assert!(
            read_response(&mut relay).await.starts_with("HTTP/1.1 200"),
            "request {i}"
        );
        let mut h2c = h2.clone();
        let req = Request::get("http://h.example.com/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = h2c
            .send_request(req)
            .await
            .expect("h2c connection still open");
        assert_eq!(r.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    p.stop().await;
}

/// ingress-nginx's `keep-alive-requests`: with a cap of 2, the second response on a
/// connection says `Connection: close` and the connection ends; over h2c it gets GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_cap_ends_connections() {
    let p = proxy(|o| o.limits.max_requests_per_connection = 2).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    for i in 1..=2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: h.example.com\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut s).await.to_ascii_lowercase();
        assert!(r.starts_with("http/1.1 200"), "{r}");
        assert_eq!(r.contains("connection: close"), i == 2, "request {i}: {r}");
    }
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    let mut h2 = h2c_connection(p.http).await;
    let req = Request::get("http://h.example.com/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let second = h2
        .send_request(req)
        .await
        .expect("second request is served");
    assert_eq!(second.status(), StatusCode::OK);
    h2_closed(&h2, "GOAWAY after the second request").await;
    p.stop().await;
}

/// With every permit taken by connections that send nothing — fresh ones, keep-alive ones
/// after a request, h2c ones with no stream, TLS ones that never start a handshake — new
/// clients are still served: the longest-waiting connection is closed for each. (Each
/// listener has its own `--max-connections`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cannot_lock_clients_out() {
    let p = proxy(|o| o.limits.max_connections = 3).await;
    // Oldest first: a fresh socket, a relay keep-alive, an h2c connection.
    let mut fresh = TcpStream::connect(p.http).await.unwrap();
    let mut keepalive = TcpStream::connect(p.http).await.unwrap();
    keepalive
        .write_all(b"GET / HTTP/1.1\r\nHost: h.example.com\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut keepalive)
        .await
        .starts_with("HTTP/1.1 200"));
    let h2 = h2c_connection(p.http).await;

    // New clients keep their connections open, so the table stays full.
    let mut held = vec![held_client(p.http).await];
    assert!(
        closed_within(&mut fresh, Duration::from_secs(5)).await,
        "the longest-waiting (fresh) socket made room"
    );
    held.push(held_client(p.http).await);
    assert!(
        closed_within(&mut keepalive, Duration::from_secs(5)).await,
        "then the idle keep-alive one"
    );
    held.push(held_client(p.http).await);
    h2_closed(&h2, "then the idle h2c one").await;
    let metrics = get(p.admin, "admin", "/metrics").await.expect("metrics").2;
    assert!(
        metrics.contains("tollgate_proxy_connections_closed_for_room_total 3"),
        "each closed connection is counted: {metrics}"
    );
    // Many more clients than permits, one after another: each is served, each closing the
    // oldest of those before it.
    for _ in 0..10 {
        held.push(held_client(p.http).await);
        let oldest = held.remove(0);
        wait_until(
            Duration::from_secs(5),
            "the oldest held client to be closed",
            || {
                let closed = oldest.is_closed();
                async move { closed }
            },
        )
        .await;
    }

    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(p.https).await.unwrap());
    }
    let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let r = tls_get(
        p.https,
        Some("h.example.com"),
        "h.example.com",
        "/",
        &["http/1.1"],
        tls13,
    )
    .await;
    assert!(r.is_ok(), "a TLS client is admitted: {:?}", r.err());
    assert!(
        closed_within(&mut silent[0], Duration::from_secs(5)).await,
        "the silent TLS socket made room"
    );
    p.stop().await;
}

/// Only requests in flight hold a place: with every permit on a connection waiting for its
/// response, a new client is refused (and the busy ones are not cut off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_keep_their_place() {
    let (release, released) = watch::channel(false);
    let p = proxy_with(released, |o| o.limits.max_connections = 3).await;
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: slow.example.com\r\n\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    // The three are admitted once the proxy has read their heads; until then a new client
    // could still take a waiting one's place.
    let http = p.http;
    wait_until(
        Duration::from_secs(5),
        "a fourth client to be refused",
        || async move { get(http, "h.example.com", "/").await.is_err() },
    )
    .await;
    for s in &mut busy {
        assert!(
            !closed_within(s, Duration::from_millis(50)).await,
            "a busy connection was closed"
        );
    }
    let admin = p.admin;
    let metrics = get(admin, "admin", "/metrics").await.expect("metrics").2;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tollgate_proxy_connections_refused_total ") && !l.ends_with(" 0")
        ),
        "refusals are counted: {metrics}"
    );
    release.send_replace(true);
    for s in &mut busy {
        assert!(
            read_response(s).await.starts_with("HTTP/1.1 200"),
            "the busy requests are answered"
        );
    }
    wait_until(
        Duration::from_secs(5),
        "a permit to come back",
        || async move { served(http).await },
    )
    .await;
    p.stop().await;
}
