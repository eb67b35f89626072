//! The HTTP/1.1 relay (`providers/proxy/src/http1_relay.rs`), through real sockets: response
//! framings passed through as they come (chunked with trailers, long Content-Length bodies,
//! until close, HEAD, interim 1xx), hop-by-hop and forwarding headers, pipelining, pooled
//! upstream connections the target closed meanwhile, and the hand-over to hyper when a
//! request has a body — on one keepalive connection, as clients use it.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A target answering by path with fixed bytes, counting the connections it accepted.
/// `/drop` answers and then closes the connection without saying so (as a target whose idle
/// timeout just fired does); `/head-echo` answers with the request head it received.
async fn scripted_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let addr = tcp_target(move |s| {
        count.fetch_add(1, Ordering::SeqCst);
        serve_scripted(s)
    })
    .await;
    (addr, accepted)
}

/// Connections `/drop` has closed, as (target side, proxy side) addresses, so a test can
/// wait until the proxy's side has seen the close.
static DROPPED: std::sync::Mutex<Vec<(SocketAddr, SocketAddr)>> = std::sync::Mutex::new(Vec::new());

/// Whether the kernel has delivered the target's close to the proxy's side of a connection:
/// that socket is no longer ESTABLISHED in `/proc/net/tcp`, so the relay's check of a pooled
/// connection reads it as closed. `close()` returning says only that the FIN left; under load
/// it can reach the other socket later. Without `/proc` there is nothing to wait for.
fn proxy_saw_close(target: SocketAddr, proxy: SocketAddr) -> bool {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(proxy), hex(target));
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    !table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1] == local && f[2] == remote && f[3] == "01"
    })
}

async fn serve_scripted(mut s: TcpStream) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head: Vec<u8> = pending.drain(..end).collect();
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut line = text.split_whitespace();
        let method = line.next().unwrap_or("").to_string();
        let path = line.next().unwrap_or("").to_string();
        let answer: Vec<u8> = match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\n".to_vec(),
            "/big" => {
                let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
                a.extend(std::iter::repeat_n(b'x', 1_000_000));
                a
            }
            "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_vec(),
            "/head" if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            "/hop" => b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/many-hops" => {
                // More headers named in Connection than the proxy keeps inline.
                let mut a = b"HTTP/1.1 200 OK\r\nConnection: X-H1, X-H2, X-H3, X-H4, X-H5, X-H6\r\nConnection: X-H7, X-H8, X-H9, X-H10, X-H11\r\n".to_vec();
                for i in 1..=11 {
                    a.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
                }
                a.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
                a
            }
            "/until-close" => {
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close").await;
                return;
            }
            "/drop" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndropped").await;
                let ends = (s.local_addr(), s.peer_addr());
                drop(s);
                if let (Ok(target), Ok(proxy)) = ends {
                    DROPPED.lock().unwrap().push((target, proxy));
                }
                return;
            }
            "/post" => {
                // Read the Content-Length body and answer with it.
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: ").or_else(|| l.strip_prefix("Content-Length: ")))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while pending.len() < len {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
                let body: Vec<u8> = pending.drain(..len).collect();
                let mut a = format!("HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                a.extend_from_slice(&body);
                a
            }
            _ => {
                let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", head.len()).into_bytes();
                a.extend_from_slice(&head);
                a
            }
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

async fn relay_proxy(backend: SocketAddr) -> TestProxy {
    let m = format!(
        "{}---\n{}",
        service("scripted", &[backend]),
        ingress(
            "scripted",
            "",
            &[("r.example.com", "/", "Prefix", "scripted")]
        )
    );
    TestProxy::start(&m).await
}

async fn handovers(p: &TestProxy) -> f64 {
    let (_, _, body) = get(p.admin, "admin", "/metrics").await.expect("metrics");
    body.lines()
        .find(|l| l.starts_with("tollgate_proxy_http1_relay_handovers_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("handover metric")
}

fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "r.example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framings_and_headers_on_one_keepalive_connection() {
    let (backend, accepted) = scripted_backend().await;
    let p = relay_proxy(backend).await;
    let mut c = H1::connect(p.http).await.expect("connect");

    let (status, headers, body) = c.get("r.example.com", "/chunked").await.expect("chunked");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Wikipedia"));
    assert_eq!(
        headers.get("transfer-encoding").map(|v| v.as_bytes()),
        Some(&b"chunked"[..]),
        "chunked passes through as chunked"
    );

    let (status, _, body) = c.get("r.example.com", "/big").await.expect("big");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 1_000_000);
    assert!(body.bytes().all(|b| b == b'x'));

    let (status, headers, body) = c
        .request(request(Method::HEAD, "/head", &[]))
        .await
        .expect("head");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "", "no body after HEAD");
    assert_eq!(
        headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    let (_, _, body) = c.get("r.example.com", "/head").await.expect("after head");
    assert_eq!(body, "hello", "the connection is in step after a HEAD");

    let (status, _, body) = c.get("r.example.com", "/hints").await.expect("1xx");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "final"));

    let (status, headers, body) = c.get("r.example.com", "/hop").await.expect("hop");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    for hop in ["x-private", "keep-alive"] {
        assert!(
            headers.get(hop).is_none(),
            "{hop} must not reach the client"
        );
    }
    // The target never sends Date; the proxy adds one (RFC 9110 §6.6.1).
    let date = headers
        .get("date")
        .and_then(|v| v.to_str().ok())
        .expect("a Date header");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");

    let (status, headers, _) = c
        .get("r.example.com", "/many-hops")
        .await
        .expect("many hops");
    assert_eq!(status, StatusCode::OK);
    for i in 1..=11 {
        assert!(
            headers.get(format!("x-h{i}")).is_none(),
            "x-h{i} is named in Connection and must not reach the client"
        );
    }

    let (_, _, seen) = c
        .request(request(
            Method::GET,
            "/a/../echo-head?q=1",
            &[
                ("connection", "keep-alive, x-client-hop"),
                ("x-client-hop", "1"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
                ("te", "trailers"),
                ("x-custom", "kept"),
            ],
        ))
        .await
        .expect("head echo");
    let seen = seen.to_ascii_lowercase();
    assert!(
        seen.starts_with("get /echo-head?q=1 http/1.1\r\n"),
        "normalised path, query kept: {seen}"
    );
    for want in [
        "host: r.example.com",
        "x-custom: kept",
        "te: trailers",
        "x-forwarded-for: 127.0.0.1",
        "x-real-ip: 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: r.example.com",
        &format!("x-forwarded-port: {}", p.http.port()),
    ] {
        assert!(seen.contains(want), "{want} missing upstream: {seen}");
    }
    for gone in ["x-client-hop", "6.6.6.6", "connection:"] {
        assert!(!seen.contains(gone), "{gone} must not go upstream: {seen}");
    }

    // More named headers than are kept inline, from the client: none goes upstream.
    let named: Vec<String> = (1..=11).map(|i| format!("x-c{i}")).collect();
    let connection = format!("keep-alive, {}", named.join(", "));
    let mut headers: Vec<(&str, &str)> = vec![("connection", connection.as_str())];
    headers.extend(named.iter().map(|n| (n.as_str(), "1")));
    let (_, _, seen) = c
        .request(request(Method::GET, "/echo-head", &headers))
        .await
        .expect("many named request headers");
    let seen = seen.to_ascii_lowercase();
    assert!(seen.starts_with("get /echo-head http/1.1\r\n"), "{seen}");
    for n in &named {
        assert!(
            !seen.contains(&format!("{n}:")),
            "{n} must not go upstream: {seen}"
        );
    }

    assert!(!c.is_closed());
    assert_eq!(handovers(&p).await, 0.0, "all of it served by the relay");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection, reused for every request"
    );

    // A request with a body goes to hyper, on the same client connection.
    let post = Request::post("/post")
        .header("host", "r.example.com")
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("post");
    let (status, headers, body) = c.request(post).await.expect("post");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "payload"));
    assert!(
        headers.get("x-private").is_none(),
        "a header the target's Connection names must not reach the client through hyper either"
    );
    let (status, _, body) = c.get("r.example.com", "/head").await.expect("after post");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    assert_eq!(handovers(&p).await, 1.0);
    p.stop().await;
}

/// Reads from `s` until it closes (or 5 s pass).
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `bytes` on a new connection and reads until the proxy closes it.
async fn exchange_to_close(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_to_close(&mut s).await
}

/// A 200 that announces the end of its connection and ends with `body`.
fn assert_closing_200(text: &str, body: &str) {
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text:?}"
    );
    assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_until_close_and_ambiguous_lengths() {
    let (backend, _) = scripted_backend().await;
    let p = relay_proxy(backend).await;

    // Two requests in one write: two answers, in order; the last asks to close.
    let text = exchange_to_close(
        p.http,
        b"GET /head HTTP/1.1\r\nHost: r.example.com\r\n\r\nGET /chunked HTTP/1.1\r\nHost: r.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let first = text.find("hello").expect("first answer");
    let second = text
        .find("4\r\nWiki\r\n")
        .expect("second answer, chunks as sent");
    assert!(first < second, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        text.ends_with("X-Sum: 9\r\n\r\n"),
        "trailers pass through: {text:?}"
    );

    // A body delimited by the target closing: the client is told the connection closes.
    let text = exchange_to_close(
        p.http,
        b"GET /until-close HTTP/1.1\r\nHost: r.example.com\r\n\r\n",
    )
    .await;
    assert_closing_200(&text, "until close");

    // Content-Length with Transfer-Encoding: refused, nothing reaches the target.
    let text = exchange_to_close(
        p.http,
        b"GET /x HTTP/1.1\r\nHost: r.example.com\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_the_target_closed_are_replaced() {
    let (backend, accepted) = scripted_backend().await;
    let p = relay_proxy(backend).await;
    let mut c = H1::connect(p.http).await.expect("connect");
    for round in 0..5 {
        // The target closes after each answer; the proxy pooled the connection anyway (the
        // answer said nothing), so the next request meets a closed connection first.
        let (status, _, body) = c.get("r.example.com", "/drop").await.expect("get");
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "dropped"),
            "GET {round}"
        );
        // The target closes right after answering; the close must have reached the proxy's
        // socket before the next request, or no proxy could tell (the race is the target's,
        // not the relay's).
        let dropped = 2 * round + 1;
        wait_until(
            Duration::from_secs(5),
            "the proxy's side to see the target's close",
            || async move {
                let conns = DROPPED.lock().unwrap().clone();
                conns.len() >= dropped && conns.iter().all(|(t, p)| proxy_saw_close(*t, *p))
            },
        )
        .await;
        // A body-less POST may not be sent twice: the relay checks the pooled connection.
        let (status, _, body) = c
            .request(request(Method::POST, "/drop", &[]))
            .await
            .expect("post");
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "dropped"),
            "POST {round}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        10,
        "one connection per answer"
    );
    assert_eq!(handovers(&p).await, 0.0);
    p.stop().await;
}

/// HTTP/2 clients (and HTTP/1.1 connections hyper took over) reach HTTP/1.1 targets through
/// the same upstream exchange, the body decoded for hyper to frame again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_decoded_bodies_from_http1_targets() {
    use http_body_util::BodyExt;
    let (backend, accepted) = scripted_backend().await;
    let p = relay_proxy(backend).await;
    let s = TcpStream::connect(p.http).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let mut call = async |method: Method, path: &str| {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://r.example.com{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    };
    let (status, _, body) = call(Method::GET, "/chunked").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"Wikipedia"[..]));
    let (_, _, body) = call(Method::GET, "/big").await;
    assert_eq!(body.len(), 1_000_000);
    let (status, headers, body) = call(Method::HEAD, "/head").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(
        headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    let (_, _, body) = call(Method::GET, "/hints").await;
    assert_eq!(&body[..], b"final");
    let (_, headers, _) = call(Method::GET, "/hop").await;
    assert!(headers.get("x-private").is_none());
    let (_, _, body) = call(Method::GET, "/until-close").await;
    assert_eq!(&body[..], b"until close");
    let before = accepted.load(Ordering::SeqCst);
    for _ in 0..3 {
        let (status, _, body) = call(Method::GET, "/drop").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"dropped"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), before + 3);
    p.stop().await;
}

/// Shutdown: idle keepalive connections are closed, and a request in flight is answered,
/// with `Connection: close`, before its connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_answers_in_flight_ones_with_close() {
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let backend = tcp_target(move |mut s| {
        let (arrived_tx, held) = (arrived_tx.clone(), held.clone());
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let slow = head.starts_with(b"GET /slow ");
                head.clear();
                let body: &[u8] = if slow {
                    let _ = arrived_tx.send(());
                    held.notified().await;
                    b"slow"
                } else {
                    b"ok"
                };
                let answer = [
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    body,
                ]
                .concat();
                if s.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let p = relay_proxy(backend).await;

    let mut idle = H1::connect(p.http).await.expect("connect");
    let (status, _, body) = idle.get("r.example.com", "/").await.expect("get");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let mut in_flight = TcpStream::connect(p.http).await.expect("connect");
    in_flight
        .write_all(b"GET /slow HTTP/1.1\r\nHost: r.example.com\r\n\r\n")
        .await
        .expect("write");
    tokio::time::timeout(Duration::from_secs(5), arrived.recv())
        .await
        .expect("the slow request reached the target");

    p.signal_stop();
    wait_until(
        Duration::from_secs(5),
        "the idle keepalive connection to be closed",
        || {
            let closed = idle.is_closed();
            async move { closed }
        },
    )
    .await;
    release.notify_one();
    let text = read_to_close(&mut in_flight).await;
    assert_closing_200(&text, "slow");
    p.stop().await;
}
