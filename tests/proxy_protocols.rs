//! Protocols through the proxy: WebSocket both ways, gRPC over HTTP/2 to an h2c upstream
//! (with trailers), and request/response bodies streamed rather than buffered.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_round_trip() {
    let ws = echo("ws").await;
    let m = format!(
        "{}---\n{}",
        service("ws", &[ws]),
        ingress("ws", "", &[("ws.example.com", "/", "Prefix", "ws")])
    );
    let p = TestProxy::start(&m).await;
    let tcp = tokio::net::TcpStream::connect(p.http)
        .await
        .expect("connect");
    let (mut socket, resp) = tokio_tungstenite::client_async("ws://ws.example.com/chat", tcp)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..50 {
        socket
            .send(Message::text(format!("hello {i}")))
            .await
            .expect("send");
        let got = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("echo in time")
            .expect("open")
            .expect("frame");
        assert_eq!(got, Message::text(format!("hello {i}")));
    }
    let big = vec![7u8; 256 * 1024];
    socket
        .send(Message::binary(big.clone()))
        .await
        .expect("send binary");
    let got = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("echo")
        .expect("open")
        .expect("frame");
    assert_eq!(got.into_data().as_ref(), &big[..]);
    socket.close(None).await.expect("close");
    p.stop().await;
}

fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(payload.len() + 5);
    b.push(0);
    b.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_be_bytes());
    b.extend_from_slice(payload);
    Bytes::from(b)
}

/// Ten gRPC calls on one h2c connection to the proxy: each must come back 200, as
/// `application/grpc`, with the request's message and trailers `grpc-status: 0` and
/// `x-served-by: <served_by>`.
async fn grpc_echo_calls(proxy: std::net::SocketAddr, authority: &str, served_by: &str) {
    let s = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2c");
    tokio::spawn(conn);
    for i in 0..10 {
        let payload = format!("request {i}");
        let req = http::Request::post(format!("http://{authority}/echo.Echo/Say"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(grpc_frame(payload.as_bytes())))
            .unwrap();
        let resp = send.send_request(req).await.expect("gRPC call");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/grpc")
        );
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected
            .trailers()
            .cloned()
            .expect("gRPC trailers pass through");
        assert_eq!(
            trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
            Some("0")
        );
        assert_eq!(
            trailers.get("x-served-by").and_then(|v| v.to_str().ok()),
            Some(served_by)
        );
        assert_eq!(collected.to_bytes(), grpc_frame(payload.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_round_trip_over_h2c() {
    let g = echo("grpc").await;
    let m = format!(
        "{}---\n{}",
        service_with(
            "grpc",
            &[g],
            "alb.ingress.kubernetes.io/backend-protocol-version: GRPC"
        ),
        ingress("grpc", "", &[("grpc.example.com", "/", "Prefix", "grpc")])
    );
    let p = TestProxy::start(&m).await;
    grpc_echo_calls(p.http, "grpc.example.com", "grpc").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let e = echo("stream").await;
    let m = format!(
        "{}---\n{}",
        service("stream", &[e]),
        ingress("s", "", &[("s.example.com", "/", "Prefix", "stream")])
    );
    let p = TestProxy::start(&m).await;
    let mut conn = H1Stream::connect(p.http).await;
    // Each chunk must come back before the next is sent: only a streaming proxy can do that.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = ChannelBody(rx);
    let req = http::Request::post("/echo")
        .header("host", "s.example.com")
        .header("transfer-encoding", "chunked")
        .body(body)
        .unwrap();
    let resp = conn
        .send
        .send_request(req)
        .await
        .expect("response headers before the request body ended");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let chunk = vec![b'x'; 64 * 1024];
    let mut echoed = 0usize;
    for _ in 0..64 {
        tx.send(Bytes::from(chunk.clone()))
            .await
            .expect("send chunk");
        let mut got = 0;
        while got < chunk.len() {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("echo in time")
                .expect("frame")
                .expect("ok");
            if let Ok(d) = frame.into_data() {
                got += d.len();
            }
        }
        echoed += got;
    }
    drop(tx);
    assert_eq!(
        echoed,
        64 * chunk.len(),
        "4 MiB streamed through chunk by chunk"
    );
    p.stop().await;
}

struct H1Stream {
    send: hyper::client::conn::http1::SendRequest<ChannelBody>,
}

impl H1Stream {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .expect("h1");
        tokio::spawn(conn);
        H1Stream { send }
    }
}

/// A request body fed chunk by chunk from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// A gRPC target over TLS (HTTP/2 by ALPN, self-signed): answers each call with the
/// request's message and `grpc-status: 0`, `x-served-by: grpcs` trailers.
async fn grpcs_backend() -> std::net::SocketAddr {
    tls_target(&["grpc.internal"], &[b"h2"], |tls| async move {
        let svc =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                trailers.insert("x-served-by", http::HeaderValue::from_static("grpcs"));
                let frames = futures_util::stream::iter(vec![
                    Ok::<_, std::convert::Infallible>(Frame::data(body)),
                    Ok(Frame::trailers(trailers)),
                ]);
                let mut resp = http::Response::new(http_body_util::StreamBody::new(frames));
                resp.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/grpc"),
                );
                Ok::<_, std::convert::Infallible>(resp)
            });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), svc)
            .await;
    })
    .await
}

/// `nginx.ingress.kubernetes.io/backend-protocol: GRPCS`: the proxy speaks HTTP/2 over TLS
/// to the target; trailers come back to the h2c client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_targets() {
    let g = grpcs_backend().await;
    let m = format!(
        "{}---\n{}",
        service("grpcs", &[g]),
        ingress(
            "grpcs",
            "nginx.ingress.kubernetes.io/backend-protocol: GRPCS",
            &[("grpcs.example.com", "/", "Prefix", "grpcs")]
        )
    );
    let p = TestProxy::start(&m).await;
    grpc_echo_calls(p.http, "grpcs.example.com", "grpcs").await;
    p.stop().await;
}
