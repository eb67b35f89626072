//! Hostile clients on raw sockets: smuggling shapes, oversized heads, slowloris, too many
//! connections. Each gets a clean refusal, and the proxy keeps serving everyone else.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy(tweak: impl FnOnce(&mut tollgate::proxy_command::ProxyRunOptions)) -> TestProxy {
    let e = echo("web").await;
    let m = format!(
        "{}---\n{}",
        service("web", &[e]),
        ingress("web", "", &[("h.example.com", "/", "Prefix", "web")])
    );
    TestProxy::start_with(&m, tweak).await
}

async fn still_serving(p: &TestProxy) {
    let r = get(p.http, "h.example.com", "/")
        .await
        .expect("normal request after abuse");
    assert_eq!(r.0, StatusCode::OK);
    assert_eq!(served_by(&r.2), "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_get_400() {
    let p = proxy(|_| {}).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "two different Content-Lengths",
            b"POST /echo HTTP/1.1\r\nHost: h.example.com\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "a Transfer-Encoding other than chunked",
            b"POST /echo HTTP/1.1\r\nHost: h.example.com\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        ),
        ("an invalid Content-Length", b"POST /echo HTTP/1.1\r\nHost: h.example.com\r\nContent-Length: -1\r\n\r\n"),
        ("an invalid header name", b"GET / HTTP/1.1\r\nHost: h.example.com\r\nBad Header: x\r\n\r\n"),
        ("a control character in a header value", b"GET / HTTP/1.1\r\nHost: h.example.com\r\nX: a\x00b\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let resp = raw(p.http, bytes).await;
        assert!(
            status_line(&resp).starts_with("HTTP/1.1 400"),
            "{what}: got {:?}",
            status_line(&resp)
        );
        assert_eq!(
            resp.matches("HTTP/1.1").count(),
            1,
            "{what}: nothing may be answered after the rejection: {resp:?}"
        );
    }
    still_serving(&p).await;
    p.stop().await;
}

/// Content-Length with Transfer-Encoding (RFC 9112 §6.3). The relay reads every request head
/// of a connection until hyper takes the connection over — after it forwarded a request with
/// a body, an `Expect` or an `Upgrade` — and refuses such a request with 400, `Expect` or
/// `Upgrade` on it or not. On a connection hyper took over, the request is read by
/// `Transfer-Encoding` alone: the target receives the chunked body and no `Content-Length`,
/// and the connection closes after the response. Either way the request smuggled behind it
/// never reaches a target (checked at a recording target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_smuggles_nothing() {
    let (target, got) = recorder().await;
    let m = format!(
        "{}---\n{}",
        service("web", &[target]),
        ingress("web", "", &[("h.example.com", "/", "Prefix", "web")])
    );
    let p = TestProxy::start(&m).await;
    let smuggled = "GET /admin HTTP/1.1\r\nHost: h.example.com\r\n\r\n";
    let shapes = [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n",
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
        "Upgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    ];
    for shape in shapes {
        let smuggle =
            format!("POST /x HTTP/1.1\r\nHost: h.example.com\r\n{shape}\r\n0\r\n\r\n{smuggled}");
        let resp = raw(p.http, smuggle.as_bytes()).await;
        assert!(
            status_line(&resp).starts_with("HTTP/1.1 400"),
            "{shape:?}: {resp:?}"
        );
        assert_eq!(
            resp.matches("HTTP/1.1 ").count(),
            1,
            "exactly one response, then the connection closes: {resp:?}"
        );
        let received = std::mem::take(&mut *got.lock().unwrap());
        assert!(
            received.is_empty(),
            "{shape:?} reached the target: {received:?}"
        );
    }
    for shape in &shapes[..2] {
        // After a request with a body, hyper has the connection.
        let after_body = format!(
            "POST /first HTTP/1.1\r\nHost: h.example.com\r\nContent-Length: 2\r\n\r\nok\
             POST /x HTTP/1.1\r\nHost: h.example.com\r\n{shape}\r\n0\r\n\r\n{smuggled}"
        );
        let resp = raw(p.http, after_body.as_bytes()).await;
        assert_eq!(
            resp.matches("HTTP/1.1 200").count(),
            2,
            "the two POSTs, nothing more: {resp:?}"
        );
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "{resp:?}");
        let second = &resp[resp.rfind("HTTP/1.1 ").unwrap_or(0)..];
        assert!(
            second.to_ascii_lowercase().contains("connection: close"),
            "{second:?}"
        );
        let received = std::mem::take(&mut *got.lock().unwrap());
        assert_eq!(received.len(), 2, "{received:?}");
        assert!(received[1].starts_with("POST /x "), "{}", received[1]);
        assert!(
            values(&received[1], "content-length").is_empty(),
            "{}",
            received[1]
        );
        assert_eq!(
            values(&received[1], "transfer-encoding"),
            ["chunked"],
            "{}",
            received[1]
        );
        assert!(
            received[1].ends_with("\n\n0\r\n\r\n"),
            "the empty chunked body: {:?}",
            received[1]
        );
        assert!(
            !received.iter().any(|r| r.contains("/admin")),
            "smuggled: {received:?}"
        );
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_sizes_get_400() {
    let p = proxy(|_| {}).await;
    let resp = raw(
        p.http,
        b"POST /echo HTTP/1.1\r\nHost: h.example.com\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h.example.com\r\n\r\n",
    )
    .await;
    // The head was valid, so the request was forwarded while its body streamed; the bad
    // chunk size aborts the body: 400, and the connection ends without the smuggled request.
    assert!(
        status_line(&resp).starts_with("HTTP/1.1 400"),
        "got {:?}",
        status_line(&resp)
    );
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp:?}");
    assert!(!resp.contains("/admin"), "{resp:?}");
    assert!(
        !resp.contains("abc"),
        "the malformed chunk must not be echoed back: {resp:?}"
    );
    still_serving(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused() {
    let p = proxy(|_| {}).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: h.example.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let resp = raw(p.http, huge.as_bytes()).await;
    assert!(
        status_line(&resp).starts_with("HTTP/1.1 431"),
        "got {:?}",
        status_line(&resp)
    );
    let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw(
        p.http,
        format!("GET / HTTP/1.1\r\nHost: h.example.com\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(
        status_line(&resp).starts_with("HTTP/1.1 431"),
        "got {:?}",
        status_line(&resp)
    );
    still_serving(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off() {
    let p = proxy(|o| o.limits.header_read_timeout = Duration::from_millis(500)).await;
    let mut s = TcpStream::connect(p.http).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: h.example.com\r\nX-Slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the proxy must close a connection that dribbles its headers"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || status_line(&text).starts_with("HTTP/1.1 408"),
        "got {text:?}"
    );
    still_serving(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_answer_502_503_504() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr") // closed when `l` drops: connections are refused
    };
    let live = echo("live").await;
    let m = format!(
        "{}---\n{}---\n{}---\n{}",
        service("dead", &[dead]),
        service("mixed", &[dead, live]),
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec: {ports: [{name: http, port: 80}]}\n",
        ingress(
            "f",
            "",
            &[
                ("f.example.com", "/dead", "Prefix", "dead"),
                ("f.example.com", "/mixed", "Prefix", "mixed"),
                ("f.example.com", "/empty", "Prefix", "empty"),
                ("f.example.com", "/missing", "Prefix", "no-such-service"),
            ]
        )
    );
    let p = TestProxy::start_with(&m, |o| {
        o.settings.response_header_timeout = Duration::from_millis(300)
    })
    .await;
    assert_eq!(
        get(p.http, "f.example.com", "/dead").await.expect("dead").0,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        get(p.http, "f.example.com", "/empty")
            .await
            .expect("empty")
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(p.http, "f.example.com", "/missing")
            .await
            .expect("missing")
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A refused connection is retried on the other target, and the dead one is ejected.
    for _ in 0..20 {
        let r = get(p.http, "f.example.com", "/mixed").await.expect("mixed");
        assert_eq!((r.0, served_by(&r.2)), (StatusCode::OK, "live".to_string()));
    }
    let r = get(p.http, "f.example.com", "/mixed?sleep_ms=2000")
        .await
        .expect("slow");
    assert_eq!(r.0, StatusCode::GATEWAY_TIMEOUT);
    p.stop().await;
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HTTP/2 rapid reset (CVE-2023-44487) over h2c: a client that opens streams and cancels
/// them at once, thousands of times, gets GOAWAY (ENHANCE_YOUR_CALM) and its connection is
/// closed; everyone else keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_gets_goaway() {
    let p = proxy(|_| {}).await;
    let mut s = TcpStream::connect(p.http).await.expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[])); // SETTINGS
    s.write_all(&out).await.expect("preface");
    // HEADERS: :method GET, :scheme http, :path / (static table), :authority literal.
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 13];
    block.extend_from_slice(b"h.example.com");
    let mut burst = Vec::new();
    for i in 0..5_000u32 {
        let stream = 2 * i + 1;
        burst.extend(h2_frame(0x1, 0x4 | 0x1, stream, &block)); // END_HEADERS | END_STREAM
        burst.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    // The server may close mid-burst: that is the point.
    let _ = s.write_all(&burst).await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut goaway = None;
    while Instant::now() < deadline && goaway.is_none() {
        let mut buf = [0u8; 65536];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
        // Walk the frames received so far for a GOAWAY.
        let mut at = 0;
        while at + 9 <= seen.len() {
            let len = (usize::from(seen[at]) << 16)
                | (usize::from(seen[at + 1]) << 8)
                | usize::from(seen[at + 2]);
            if at + 9 + len > seen.len() {
                break;
            }
            if seen[at + 3] == 0x7 && len >= 8 {
                let p = &seen[at + 9..at + 9 + len];
                goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            at += 9 + len;
        }
    }
    assert_eq!(goaway, Some(0xb), "GOAWAY with ENHANCE_YOUR_CALM");
    still_serving(&p).await;
    p.stop().await;
}

/// The README's HTTP/2 limits are what the proxy advertises in its first SETTINGS frame:
/// at most 250 concurrent streams, header lists of at most 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_advertise_the_limits() {
    let p = proxy(|_| {}).await;
    let mut s = TcpStream::connect(p.http).await.expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    s.write_all(&out).await.expect("preface");
    let mut seen = Vec::new();
    let settings = loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("server frames in time")
            .expect("read");
        assert!(n > 0, "closed before SETTINGS");
        seen.extend_from_slice(&buf[..n]);
        if seen.len() >= 9 {
            let len =
                (usize::from(seen[0]) << 16) | (usize::from(seen[1]) << 8) | usize::from(seen[2]);
            assert_eq!(
                (seen[3], seen[4]),
                (0x4, 0),
                "the server's first frame is SETTINGS"
            );
            if seen.len() >= 9 + len {
                break seen[9..9 + len].to_vec();
            }
        }
    };
    let param = |id: u16| {
        settings.chunks(6).find_map(|c| {
            (u16::from_be_bytes([c[0], c[1]]) == id)
                .then(|| u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
        })
    };
    assert_eq!(param(0x3), Some(250), "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert_eq!(param(0x6), Some(64 * 1024), "SETTINGS_MAX_HEADER_LIST_SIZE");
    drop(s);
    p.stop().await;
}
