//! A fault-injecting HTTP proxy between the AWS SDK and the emulator: a share of requests
//! fail with throttling (rejected before the emulator sees them) or a 5xx that replaces the
//! emulator's answer (the change happened, the caller never heard) — the two failures a
//! cloud API really has. Deterministic for a seed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A running fault proxy; stops when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    /// Requests failed on purpose so far.
    pub injected: Arc<AtomicU64>,
    enabled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Turns injection on or off (requests are forwarded either way).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    upstream: String,
    per_mille: u64,
    rng: Mutex<u64>,
    injected: Arc<AtomicU64>,
    enabled: Arc<AtomicBool>,
    /// Added before each request is forwarded: an API's round trip, not loopback's.
    delay: std::time::Duration,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Shared {
    /// xorshift64*: the next number in 0..1000.
    fn roll(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1000
    }
}

/// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:4566`) failing `per_mille`/1000
/// of the requests while enabled.
pub async fn start_fault_proxy(upstream: &str, per_mille: u64, seed: u64) -> FaultProxy {
    start(upstream, per_mille, seed, std::time::Duration::ZERO).await
}

/// A proxy to `upstream` that fails nothing but answers each request `delay` later, as a
/// cloud API a region away does (loopback answers in microseconds, AWS in tens of
/// milliseconds: what concurrency buys shows only with that latency).
pub async fn start_latency_proxy(upstream: &str, delay: std::time::Duration) -> FaultProxy {
    start(upstream, 0, 1, delay).await
}

async fn start(
    upstream: &str,
    per_mille: u64,
    seed: u64,
    delay: std::time::Duration,
) -> FaultProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fault proxy");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let injected = Arc::new(AtomicU64::new(0));
    let enabled = Arc::new(AtomicBool::new(true));
    let shared = Arc::new(Shared {
        upstream: upstream.trim_end_matches('/').to_string(),
        per_mille,
        rng: Mutex::new(seed.max(1)),
        injected: injected.clone(),
        enabled: enabled.clone(),
        delay,
        client: Client::builder(TokioExecutor::new()).build_http(),
    });
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FaultProxy {
        endpoint: format!("http://{addr}"),
        injected,
        enabled,
        task,
    }
}

/// The API's wire protocol, for an error body the SDK parses.
enum Protocol {
    Json,
    Ec2,
    Query,
}

fn error(protocol: &Protocol, throttle: bool) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (protocol, throttle) {
        (Protocol::Json, true) => (
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.1",
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_string(),
        ),
        (Protocol::Json, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/x-amz-json-1.1",
            r#"{"__type":"InternalFailure","message":"injected"}"#.to_string(),
        ),
        (Protocol::Ec2, throttle) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/xml",
            format!(
                "<Response><Errors><Error><Code>{}</Code><Message>injected</Message></Error></Errors><RequestID>fault</RequestID></Response>",
                if throttle { "RequestLimitExceeded" } else { "Unavailable" }
            ),
        ),
        (Protocol::Query, throttle) => (
            if throttle {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>{}</Type><Code>{}</Code><Message>injected</Message></Error><RequestId>fault</RequestId></ErrorResponse>",
                if throttle { "Sender" } else { "Receiver" },
                if throttle { "Throttling" } else { "ServiceUnavailable" }
            ),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// Sends a request to `upstream` as it came (but its Host) and returns the whole answer;
/// `None` when the upstream cannot be reached.
pub async fn relay(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    upstream: &str,
    parts: &http::request::Parts,
    body: Bytes,
) -> Option<Response<Full<Bytes>>> {
    let uri = format!(
        "{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut up = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &parts.headers {
        if k != http::header::HOST {
            up = up.header(k, v);
        }
    }
    let up = up.body(Full::new(body)).ok()?;
    let r = client.request(up).await.ok()?;
    let (p, b) = r.into_parts();
    let bytes = b.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Some(Response::from_parts(p, Full::new(bytes)))
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let protocol = if parts.headers.contains_key("x-amz-target") {
        Protocol::Json
    } else if body.windows(18).any(|w| w == b"Version=2016-11-15") {
        Protocol::Ec2
    } else {
        Protocol::Query
    };
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    let fail = shared.enabled.load(Ordering::SeqCst) && shared.roll() < shared.per_mille;
    // Half the failures are throttles (nothing happened), half lose the answer.
    let throttle = fail && shared.roll() < 500;
    if throttle {
        shared.injected.fetch_add(1, Ordering::SeqCst);
        return Ok(error(&protocol, true));
    }
    let Some(answer) = relay(&shared.client, &shared.upstream, &parts, body).await else {
        return Ok(error(&protocol, false));
    };
    if fail {
        shared.injected.fetch_add(1, Ordering::SeqCst);
        return Ok(error(&protocol, false));
    }
    Ok(answer)
}
