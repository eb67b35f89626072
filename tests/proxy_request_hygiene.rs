//! What a target receives, on raw sockets: the host that routed a request is the host
//! forwarded; ambiguous hosts are refused; forwarding headers a client must not set never
//! arrive; `OPTIONS *` is not turned into a path. Each case is checked at a recording
//! target (what it received), over HTTP/1.1 (the relay and, after a request with a body,
//! hyper), h2c and HTTP/2 over TLS.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::TcpStream;

/// Two hosts on two recording targets, both also served over TLS (h2 by ALPN).
struct Site {
    proxy: TestProxy,
    admin: Received,
    app: Received,
}

impl Site {
    async fn start(tweak: impl FnOnce(&mut tollgate::proxy_command::ProxyRunOptions)) -> Site {
        let (admin_addr, admin) = recorder().await;
        let (app_addr, app) = recorder().await;
        let (crt, key, _) = self_signed(&["admin.example.com", "app.example.com"]);
        let m = format!(
            "{}---\n{}---\n{}---\n{}",
            service("admin", &[admin_addr]),
            service("app", &[app_addr]),
            tls_secret("site-tls", &crt, &key),
            ingress(
                "site",
                "",
                &[
                    ("admin.example.com", "/", "Prefix", "admin"),
                    ("app.example.com", "/", "Prefix", "app"),
                ]
            )
            .replace(
                "  rules:\n",
                "  tls:\n  - {hosts: [admin.example.com, app.example.com], secretName: site-tls}\n  rules:\n",
            ),
        );
        let proxy = TestProxy::start_with(&m, tweak).await;
        Site { proxy, admin, app }
    }

    /// Everything both targets received so far, emptied.
    fn take(&self) -> (Vec<String>, Vec<String>) {
        let a = std::mem::take(&mut *self.admin.lock().unwrap());
        let b = std::mem::take(&mut *self.app.lock().unwrap());
        (a, b)
    }
}

/// An HTTP/2 request over TLS (ALPN h2) with `req`'s authority as `:authority`.
async fn h2_tls_request(addr: SocketAddr, sni: &str, req: Request<Full<Bytes>>) -> Resp {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            tollgate_proxy::upstream::tls::AnyServerCertificate(provider),
        ))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// RFC 9112 §3.2.2: an absolute-form target's authority routes the request, and that
/// authority — not the client's `Host` — is what the target receives, on the relay's path
/// and on hyper's (a request with a body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_forwards_the_authority_that_routed_it() {
    let site = Site::start(|_| {}).await;
    for host in ["app.example.com", "evil.example.net"] {
        for (what, body) in [("body-less", ""), ("with a body", "hello")] {
            let req = format!(
                "POST http://admin.example.com/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let resp = raw(site.proxy.http, req.as_bytes()).await;
            assert!(
                status_line(&resp).contains("200"),
                "{what}, Host {host}: {resp}"
            );
            let (admin, app) = site.take();
            assert!(app.is_empty(), "{what}: the app was reached: {app:?}");
            assert_eq!(admin.len(), 1, "{what}, Host {host}");
            assert_eq!(
                values(&admin[0], "host"),
                ["admin.example.com"],
                "{}",
                admin[0]
            );
            assert_eq!(values(&admin[0], "x-forwarded-host"), ["admin.example.com"]);
            assert!(
                !admin[0].contains(host),
                "{what}: {host} reached the target: {}",
                admin[0]
            );
        }
    }
    // The relay's own path (an origin-form GET) forwards the Host it routed by, once.
    let resp = raw(
        site.proxy.http,
        b"GET /y HTTP/1.1\r\nHost: ADMIN.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&resp).contains("200"), "{resp}");
    let (admin, _) = site.take();
    assert_eq!(values(&admin[0], "host"), ["ADMIN.example.com"]);
    assert_eq!(values(&admin[0], "x-forwarded-host"), ["ADMIN.example.com"]);
    site.proxy.stop().await;
}

/// RFC 9112 §3.2: no Host on HTTP/1.1, more than one, or one that is not `host[:port]` is a
/// 400, and nothing reaches a target. HTTP/1.0 may omit it (the default rule answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repeated_or_malformed_hosts_get_400() {
    let site = Site::start(|_| {}).await;
    let cases: &[(&str, &str)] = &[
        ("no Host", "GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: admin.example.com\r\nHost: app.example.com\r\n\r\n"),
        ("two equal Hosts", "GET / HTTP/1.1\r\nHost: app.example.com\r\nHost: app.example.com\r\n\r\n"),
        ("two Hosts with a body", "POST / HTTP/1.1\r\nHost: app.example.com\r\nHost: admin.example.com\r\nContent-Length: 1\r\n\r\nx"),
        ("userinfo in Host", "GET / HTTP/1.1\r\nHost: app.example.com@admin.example.com\r\n\r\n"),
        ("a path in Host", "GET / HTTP/1.1\r\nHost: app.example.com/admin\r\n\r\n"),
        ("a port that is not one", "GET / HTTP/1.1\r\nHost: app.example.com:80x\r\n\r\n"),
        ("userinfo in an absolute-form target", "GET http://app.example.com@admin.example.com/ HTTP/1.1\r\nHost: app.example.com\r\n\r\n"),
        ("no Host with an absolute-form target", "GET http://admin.example.com/ HTTP/1.1\r\n\r\n"),
    ];
    for (what, req) in cases {
        let resp = raw(site.proxy.http, req.as_bytes()).await;
        assert!(status_line(&resp).contains("400"), "{what}: {resp}");
        let (admin, app) = site.take();
        assert!(
            admin.is_empty() && app.is_empty(),
            "{what} reached a target"
        );
    }
    let resp = raw(site.proxy.http, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        status_line(&resp).contains("404"),
        "HTTP/1.0 without Host: {resp}"
    );
    site.proxy.stop().await;
}

/// `Connection` may name hop-by-hop headers, not the ones the proxy writes: naming `Host`
/// or `X-Forwarded-For` does not remove them from the forwarded request (relay and hyper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_tokens_cannot_remove_what_the_proxy_writes() {
    let site = Site::start(|_| {}).await;
    for body in ["", "hello"] {
        let req = format!(
            "POST / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close, host, x-forwarded-for, x-forwarded-host, x-real-ip, content-length\r\nX-Secret: a\r\nConnection: x-secret\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let resp = raw(site.proxy.http, req.as_bytes()).await;
        assert!(status_line(&resp).contains("200"), "{resp}");
        let (_, app) = site.take();
        assert_eq!(app.len(), 1);
        let r = &app[0];
        assert_eq!(values(r, "host"), ["app.example.com"], "{r}");
        assert_eq!(values(r, "x-forwarded-host"), ["app.example.com"], "{r}");
        assert_eq!(values(r, "x-forwarded-for"), ["127.0.0.1"], "{r}");
        assert_eq!(values(r, "x-real-ip"), ["127.0.0.1"], "{r}");
        assert!(
            values(r, "x-secret").is_empty(),
            "a named hop-by-hop header passed: {r}"
        );
        assert!(
            r.ends_with(&format!("\n\n{body}")),
            "the body arrived whole: {r}"
        );
    }
    site.proxy.stop().await;
}

/// Forwarding headers only a proxy may set: a client's are dropped or replaced, on both
/// HTTP/1.1 paths and on HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_forwarding_headers_never_reach_a_target() {
    let site = Site::start(|_| {}).await;
    let spoofed = [
        ("Forwarded", "for=10.0.0.1;proto=https"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Host", "admin.example.com"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("X-Real-IP", "10.0.0.1"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Original-URI", "/admin"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Forwarded-Server", "admin.example.com"),
        ("X-Forwarded-Scheme", "https"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Scheme", "https"),
        ("X-Url-Scheme", "https"),
        ("Front-End-Https", "on"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Client-IP", "10.0.0.1"),
        ("Client-IP", "10.0.0.1"),
        ("X-Cluster-Client-IP", "10.0.0.1"),
        ("CF-Connecting-IP", "10.0.0.1"),
        ("Fastly-Client-IP", "10.0.0.1"),
        ("X-Originating-IP", "10.0.0.1"),
        ("X-Remote-IP", "10.0.0.1"),
        ("X-Remote-Addr", "10.0.0.1"),
        ("Proxy", "http://10.0.0.1:3128"),
    ];
    let check = |what: &str, r: &str| {
        for (name, _) in &spoofed {
            let lower = name.to_ascii_lowercase();
            let got = values(r, &lower);
            let expected: &[&str] = match lower.as_str() {
                "x-forwarded-for" | "x-real-ip" => &["127.0.0.1"],
                "x-forwarded-host" => &["app.example.com"],
                "x-forwarded-proto" => &[if what.contains("TLS") {
                    "https"
                } else {
                    "http"
                }],
                "x-forwarded-port" => &[],
                _ => &[],
            };
            if lower == "x-forwarded-port" {
                assert_eq!(got.len(), 1, "{what}: {name}: {r}");
                assert_ne!(got[0], "443", "{what}: {name} came from the client: {r}");
            } else {
                assert_eq!(got, expected, "{what}: {name}: {r}");
            }
        }
        assert!(
            !r.contains("10.0.0.1"),
            "{what}: a spoofed value arrived: {r}"
        );
    };
    for body in ["", "hello"] {
        let mut req = format!(
            "POST / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (n, v) in &spoofed {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        let resp = raw(site.proxy.http, req.as_bytes()).await;
        assert!(status_line(&resp).contains("200"), "{resp}");
        let (_, app) = site.take();
        check(&format!("HTTP/1.1 body {body:?}"), &app[0]);
    }
    let with_spoofed = |uri: &str| {
        let mut b = Request::post(uri);
        for (n, v) in &spoofed {
            b = b.header(*n, *v);
        }
        b.body(Full::new(Bytes::from_static(b"hello"))).unwrap()
    };
    let r = h2c_request(site.proxy.http, with_spoofed("http://app.example.com/"))
        .await
        .expect("h2c");
    assert_eq!(r.0, StatusCode::OK);
    let (_, app) = site.take();
    check("h2c", &app[0]);
    let r = h2_tls_request(
        site.proxy.https,
        "app.example.com",
        with_spoofed("https://app.example.com/"),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK);
    let (_, app) = site.take();
    check("h2 over TLS", &app[0]);
    site.proxy.stop().await;
}

/// RFC 9113 §8.3.1: over HTTP/2 `:authority` routes and is forwarded; a `host` header that
/// names another authority makes the request malformed (400), over h2c and TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_host_must_agree_with_authority() {
    let site = Site::start(|_| {}).await;
    let req = |scheme: &str, host: Option<&str>| {
        let mut b = Request::get(format!("{scheme}://admin.example.com/x"));
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    for host in [
        "app.example.com",
        "evil.example.net",
        "admin.example.com:8080",
    ] {
        let r = h2c_request(site.proxy.http, req("http", Some(host)))
            .await
            .expect("h2c");
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "h2c, host {host}");
        let r = h2_tls_request(
            site.proxy.https,
            "admin.example.com",
            req("https", Some(host)),
        )
        .await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "TLS, host {host}");
        let (admin, app) = site.take();
        assert!(
            admin.is_empty() && app.is_empty(),
            "host {host} reached a target"
        );
    }
    // The same authority (case, default port) is no conflict; neither is no host header.
    for host in [
        Some("ADMIN.example.com"),
        Some("admin.example.com:80"),
        None,
    ] {
        let r = h2c_request(site.proxy.http, req("http", host))
            .await
            .expect("h2c");
        assert_eq!(r.0, StatusCode::OK, "h2c, host {host:?}");
        let (admin, app) = site.take();
        assert!(app.is_empty());
        assert_eq!(
            values(&admin[0], "host"),
            ["admin.example.com"],
            "{}",
            admin[0]
        );
        assert_eq!(values(&admin[0], "x-forwarded-host"), ["admin.example.com"]);
    }
    let r = h2_tls_request(site.proxy.https, "admin.example.com", req("https", None)).await;
    assert_eq!(r.0, StatusCode::OK);
    let (admin, _) = site.take();
    assert_eq!(
        values(&admin[0], "host"),
        ["admin.example.com"],
        "{}",
        admin[0]
    );
    site.proxy.stop().await;
}

/// RFC 9110 §9.3.7: `OPTIONS *` is about the server; the proxy answers it (200, `Allow`)
/// and no target sees a `/*` path. `*` with another method, an authority-form target
/// outside CONNECT, and CONNECT itself are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_and_authority_form_targets() {
    let site = Site::start(|_| {}).await;
    let resp = raw(
        site.proxy.http,
        b"OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&resp).contains("200"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("\r\nallow: "), "{resp}");
    let cases: &[(&str, &str, &str)] = &[
        (
            "GET *",
            "GET * HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
            "400",
        ),
        (
            "authority-form GET",
            "GET app.example.com:80 HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
            "400",
        ),
        (
            "CONNECT",
            "CONNECT admin.example.com:443 HTTP/1.1\r\nHost: admin.example.com:443\r\n\r\n",
            "405",
        ),
    ];
    for (what, req, status) in cases {
        let resp = raw(site.proxy.http, req.as_bytes()).await;
        assert!(status_line(&resp).contains(status), "{what}: {resp}");
    }
    let (admin, app) = site.take();
    assert!(admin.is_empty() && app.is_empty(), "{admin:?} {app:?}");
    site.proxy.stop().await;
}

/// Every response names a server, as ingress-nginx's do (the Ingress conformance suite
/// asserts it): `Server: tollgate` when the target sent none — on the relay, the body-less
/// path HTTP/2 takes, and hyper's path for bodies — and the target's own when it sent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_responses_name_a_server() {
    let site = Site::start(|_| {}).await;
    let server_of = |resp: &str| -> Vec<String> {
        resp.split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case("server"))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    for req in [
        "GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    ] {
        let resp = raw(site.proxy.http, req.as_bytes()).await;
        assert!(status_line(&resp).contains("200"), "{resp}");
        assert_eq!(server_of(&resp), ["tollgate"], "{req:?}: {resp}");
    }
    let r = h2c_get(site.proxy.http, "app.example.com", "/")
        .await
        .expect("h2c");
    assert_eq!(r.0, StatusCode::OK);
    let servers: Vec<_> = r.1.get_all("server").iter().collect();
    assert_eq!(servers, ["tollgate"], "h2c");

    // A target that names itself keeps its name, once.
    let named = tcp_target(|mut s| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
            let ok = b"HTTP/1.1 200 OK\r\nServer: app/1.0\r\ncontent-length: 2\r\n\r\nok";
            if s.write_all(ok).await.is_err() {
                return;
            }
        }
    })
    .await;
    site.proxy.write(
        "named.yaml",
        &format!(
            "{}---\n{}",
            service("named", &[named]),
            ingress(
                "named",
                "",
                &[("named.example.com", "/", "Prefix", "named")]
            )
        ),
    );
    let http = site.proxy.http;
    wait_until(
        Duration::from_secs(10),
        "the named target routed",
        || async move {
            get(http, "named.example.com", "/")
                .await
                .is_ok_and(|r| r.0 == StatusCode::OK)
        },
    )
    .await;
    let resp = raw(
        site.proxy.http,
        b"GET / HTTP/1.1\r\nHost: named.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(server_of(&resp), ["app/1.0"], "{resp}");
    let r = h2c_get(site.proxy.http, "named.example.com", "/")
        .await
        .expect("h2c");
    let servers: Vec<_> = r.1.get_all("server").iter().collect();
    assert_eq!(servers, ["app/1.0"]);
    site.proxy.stop().await;
}

/// ingress-nginx's `proxy-body-size` (nginx's `client_max_body_size`; its e2e test
/// `annotations/proxy.go` sets `8m` and checks the generated limit): a body over the limit
/// gets 413 and never reaches the target — declared by Content-Length, or counted as a
/// chunked or HTTP/2 body streams; a body within it is forwarded whole; routes without the
/// annotation have no limit (as ALB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_body_size_answers_413() {
    let (limited, got) = recorder().await;
    let (free, free_got) = recorder().await;
    let m = format!(
        "{}---\n{}---\n{}---\n{}",
        service("limited", &[limited]),
        service("free", &[free]),
        ingress(
            "limited",
            "nginx.ingress.kubernetes.io/proxy-body-size: 1k",
            &[("limited.example.com", "/", "Prefix", "limited")]
        ),
        ingress("free", "", &[("free.example.com", "/", "Prefix", "free")])
    );
    let p = TestProxy::start(&m).await;
    let big = "x".repeat(2000);
    let small = "y".repeat(500);
    let post = |host: &str, body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let chunked = |host: &str, body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    };
    for (what, req) in [
        ("declared", post("limited.example.com", &big)),
        ("chunked", chunked("limited.example.com", &big)),
    ] {
        let resp = raw(p.http, req.as_bytes()).await;
        assert!(status_line(&resp).contains("413"), "{what}: {resp}");
        assert!(
            got.lock().unwrap().is_empty(),
            "{what}: the body reached the target"
        );
    }
    let resp = raw(p.http, post("limited.example.com", &small).as_bytes()).await;
    assert!(status_line(&resp).contains("200"), "{resp}");
    let received = std::mem::take(&mut *got.lock().unwrap());
    assert!(received[0].ends_with(&small), "forwarded whole");
    let resp = raw(p.http, chunked("free.example.com", &big).as_bytes()).await;
    assert!(
        status_line(&resp).contains("200"),
        "no annotation, no limit: {resp}"
    );
    assert!(free_got.lock().unwrap()[0].contains(&big));

    let h2_post = |body: String| {
        Request::post("http://limited.example.com/")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let r = h2c_request(p.http, h2_post(big.clone()))
        .await
        .expect("h2c");
    assert_eq!(r.0, StatusCode::PAYLOAD_TOO_LARGE, "h2c");
    let r = h2c_request(p.http, h2_post(small.clone()))
        .await
        .expect("h2c");
    assert_eq!(r.0, StatusCode::OK, "h2c within the limit");
    p.stop().await;
}

/// ingress-nginx's upstream-vhost and x-forwarded-prefix: the target gets the configured
/// `Host` (X-Forwarded-Host keeps the client's) and `X-Forwarded-Prefix`, on every path a
/// request can take (body-less, with a body, HTTP/2); a route without them is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_vhost_and_forwarded_prefix_reach_the_target() {
    let (tuned, got) = recorder().await;
    let (plain, plain_got) = recorder().await;
    let m = format!(
        "{}---\n{}---\n{}---\n{}",
        service("tuned", &[tuned]),
        service("plain", &[plain]),
        ingress(
            "tuned",
            "nginx.ingress.kubernetes.io/upstream-vhost: internal.svc.local, nginx.ingress.kubernetes.io/x-forwarded-prefix: /shop",
            &[("tuned.example.com", "/", "Prefix", "tuned")]
        ),
        ingress("plain", "", &[("plain.example.com", "/", "Prefix", "plain")])
    );
    let p = TestProxy::start(&m).await;
    let body_less = "GET /a HTTP/1.1\r\nHost: tuned.example.com\r\nConnection: close\r\n\r\n";
    let with_body =
        "POST /b HTTP/1.1\r\nHost: tuned.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    for req in [body_less, with_body] {
        let resp = raw(p.http, req.as_bytes()).await;
        assert!(status_line(&resp).contains("200"), "{resp}");
    }
    let r = h2c_get(p.http, "tuned.example.com", "/c")
        .await
        .expect("h2c");
    assert_eq!(r.0, StatusCode::OK);
    let received = std::mem::take(&mut *got.lock().unwrap());
    assert_eq!(received.len(), 3, "{received:?}");
    for head in &received {
        assert_eq!(values(head, "host"), ["internal.svc.local"], "{head}");
        assert_eq!(
            values(head, "x-forwarded-host"),
            ["tuned.example.com"],
            "{head}"
        );
        assert_eq!(values(head, "x-forwarded-prefix"), ["/shop"], "{head}");
    }

    let resp = raw(
        p.http,
        b"GET / HTTP/1.1\r\nHost: plain.example.com\r\nX-Forwarded-Prefix: /forged\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&resp).contains("200"), "{resp}");
    let head = plain_got.lock().unwrap()[0].clone();
    assert_eq!(values(&head, "host"), ["plain.example.com"], "{head}");
    assert!(
        values(&head, "x-forwarded-prefix").is_empty(),
        "a client cannot set it: {head}"
    );
    p.stop().await;
}

/// ingress-nginx's proxy-read-timeout: a target that does not answer within it gets 504
/// (the proxy's own default is 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_read_timeout_bounds_the_wait_for_a_silent_target() {
    let silent = tcp_target(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        // Never answers; the connection is held until the proxy gives up.
        let _ = s.read(&mut buf).await;
    })
    .await;
    let m = format!(
        "{}---\n{}",
        service("silent", &[silent]),
        ingress(
            "silent",
            "nginx.ingress.kubernetes.io/proxy-read-timeout: '1'",
            &[("silent.example.com", "/", "Prefix", "silent")]
        )
    );
    let p = TestProxy::start(&m).await;
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        raw(
            p.http,
            b"GET / HTTP/1.1\r\nHost: silent.example.com\r\nConnection: close\r\n\r\n",
        ),
    )
    .await
    .expect("answered well before the proxy's 60 s default");
    assert!(status_line(&resp).contains("504"), "{resp}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the timeout"
    );
    p.stop().await;
}

/// ingress-nginx's enable-cors, as its e2e tests (test/e2e/annotations/cors.go) pin it: with
/// no origin list every response says `*` and every OPTIONS is answered 204 by the proxy;
/// with a list, an allowed origin (exact, or `*.` for subdomains, port included) is echoed
/// and its preflight answered, another gets no CORS headers and its OPTIONS goes to the
/// target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_headers_follow_ingress_nginx() {
    let (any, any_got) = recorder().await;
    let (listed, listed_got) = recorder().await;
    let m = format!(
        "{}---\n{}---\n{}---\n{}",
        service("any", &[any]),
        service("listed", &[listed]),
        ingress(
            "any",
            "nginx.ingress.kubernetes.io/enable-cors: 'true'",
            &[("any.example.com", "/", "Prefix", "any")]
        ),
        ingress(
            "listed",
            "nginx.ingress.kubernetes.io/enable-cors: 'true', nginx.ingress.kubernetes.io/cors-allow-origin: 'https://app.example.com, http://*.example.org:8080, not-an-origin, tauri://localhost', nginx.ingress.kubernetes.io/cors-allow-credentials: 'false', nginx.ingress.kubernetes.io/cors-expose-headers: 'X-Total', nginx.ingress.kubernetes.io/cors-max-age: '600'",
            &[("listed.example.com", "/", "Prefix", "listed")]
        )
    );
    let p = TestProxy::start(&m).await;
    let req = |method: &str, host: &str, origin: Option<&str>| {
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        format!("{method} /x HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: close\r\n\r\n")
    };

    let r = raw(p.http, req("GET", "any.example.com", None).as_bytes()).await;
    assert!(status_line(&r).contains("200"), "{r}");
    assert_eq!(
        header_of(&r, "access-control-allow-origin").as_deref(),
        Some("*"),
        "{r}"
    );
    let r = raw(
        p.http,
        req("OPTIONS", "any.example.com", Some("https://x.test")).as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("204"), "{r}");
    assert_eq!(
        header_of(&r, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(
        header_of(&r, "access-control-allow-methods").as_deref(),
        Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(
        header_of(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        header_of(&r, "access-control-max-age").as_deref(),
        Some("1728000")
    );
    assert_eq!(
        any_got.lock().unwrap().len(),
        1,
        "the preflight never reached the target"
    );

    for allowed in [
        "https://app.example.com",
        "http://a.example.org:8080",
        "tauri://localhost",
    ] {
        let r = raw(
            p.http,
            req("GET", "listed.example.com", Some(allowed)).as_bytes(),
        )
        .await;
        assert!(status_line(&r).contains("200"), "{r}");
        assert_eq!(
            header_of(&r, "access-control-allow-origin").as_deref(),
            Some(allowed),
            "{r}"
        );
        assert_eq!(
            header_of(&r, "access-control-expose-headers").as_deref(),
            Some("X-Total")
        );
        assert_eq!(
            header_of(&r, "access-control-allow-credentials"),
            None,
            "{r}"
        );
        let r = raw(
            p.http,
            req("OPTIONS", "listed.example.com", Some(allowed)).as_bytes(),
        )
        .await;
        assert!(status_line(&r).contains("204"), "{r}");
        assert_eq!(
            header_of(&r, "access-control-max-age").as_deref(),
            Some("600")
        );
    }
    for refused in [
        "https://evil.test",
        "http://a.b.example.org:8080",
        "http://example.org:8080",
        "http://a.example.org",
        "https://app.example.com.evil.test",
        "http://app.example.com",
    ] {
        let r = raw(
            p.http,
            req("GET", "listed.example.com", Some(refused)).as_bytes(),
        )
        .await;
        assert!(status_line(&r).contains("200"), "still served: {r}");
        assert_eq!(
            header_of(&r, "access-control-allow-origin"),
            None,
            "{refused}: {r}"
        );
    }
    let before = listed_got.lock().unwrap().len();
    let r = raw(
        p.http,
        req("OPTIONS", "listed.example.com", Some("https://evil.test")).as_bytes(),
    )
    .await;
    assert!(
        status_line(&r).contains("200"),
        "the target answers it: {r}"
    );
    assert_eq!(listed_got.lock().unwrap().len(), before + 1);
    p.stop().await;
}
