//! Test harness for the proxy: echo backends and the proxy itself on loopback port 0, real
//! HTTP/1.1, h2c and TLS clients, manifest helpers, and bounded readiness waits.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod fault_proxy;
pub mod kube_apiserver;
pub mod moto;
pub mod strict_aws;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tollgate::proxy_command::{run_proxy_on, ProxyListeners, ProxyRunOptions};
use tollgate::sources::SourceSpec;
use tollgate::{BuildOptions, Grouping, ProviderKind};
use tollgate_proxy::{Limits, ProxySettings};

/// Starts an echo backend named `name` on a fresh loopback port.
pub async fn echo(name: &str) -> SocketAddr {
    echo_on("127.0.0.1:0".parse().unwrap(), name).await
}

pub async fn echo_on(addr: SocketAddr, name: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).await.expect("bind echo");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(tollgate::echo_backend::serve_echo(l, name.to_string()));
    addr
}

/// A Service `name` (port 80, named `http`) with an EndpointSlice listing `targets`.
pub fn service(name: &str, targets: &[SocketAddr]) -> String {
    service_with(name, targets, "")
}

/// Like [`service`], with extra Service annotations (a YAML flow mapping body).
pub fn service_with(name: &str, targets: &[SocketAddr], annotations: &str) -> String {
    let mut by_port: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for t in targets {
        by_port
            .entry(t.port())
            .or_default()
            .push(t.ip().to_string());
    }
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
    );
    // One slice per target port: a slice carries one port number per port name.
    for (i, (port, ips)) in by_port.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{i}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n"
        ));
        for ip in ips {
            out.push_str(&format!(
                "- {{addresses: ['{ip}'], conditions: {{ready: true}}}}\n"
            ));
        }
    }
    out
}

/// An Ingress with one rule per `(host, path, pathType, service)`; host "" means none.
pub fn ingress(name: &str, annotations: &str, routes: &[(&str, &str, &str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: tollgate\n  rules:\n"
    );
    for (host, path, ty, svc) in routes {
        if host.is_empty() {
            out.push_str("  - http:\n");
        } else {
            out.push_str(&format!("  - host: '{host}'\n    http:\n"));
        }
        out.push_str(&format!(
            "      paths: [{{path: '{path}', pathType: {ty}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]\n"
        ));
    }
    out
}

/// Polls `f` until it returns true; panics after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The proxy under test, serving a temporary manifest directory.
pub struct TestProxy {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestProxy {
    /// Starts the proxy on `manifests` (written to `main.yaml`) and waits until it is ready.
    pub async fn start(manifests: &str) -> Self {
        Self::start_with(manifests, |_| {}).await
    }

    pub async fn start_with(manifests: &str, tweak: impl FnOnce(&mut ProxyRunOptions)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("main.yaml"), manifests).expect("write manifests");
        let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };
        let (http, https, admin) = (bind().await, bind().await, bind().await);
        let (h, s, a) = (
            http.local_addr().unwrap(),
            https.local_addr().unwrap(),
            admin.local_addr().unwrap(),
        );
        let mut opts = ProxyRunOptions {
            source: SourceSpec::Manifests(dir.path().to_path_buf()),
            build: BuildOptions {
                grouping: Grouping::Single("proxy".into()),
                provider: ProviderKind::Proxy,
                ..BuildOptions::default()
            },
            http_listen: h,
            https_listen: s,
            admin_listen: a,
            settings: ProxySettings {
                https_redirect_port: s.port(),
                connect_timeout: Duration::from_secs(2),
                response_header_timeout: Duration::from_secs(10),
                ..ProxySettings::default()
            },
            limits: Limits::default(),
            drain: Duration::from_secs(5),
            serve_echo_backends: false,
            publish_address: None,
        };
        tweak(&mut opts);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            if let Err(e) = run_proxy_on(opts, ProxyListeners { http, https, admin }, rx).await {
                panic!("proxy failed: {e}");
            }
        });
        let p = TestProxy {
            http: h,
            https: s,
            admin: a,
            dir,
            stop,
            task,
        };
        let admin = p.admin;
        wait_until(Duration::from_secs(10), "proxy readiness", || async move {
            matches!(
                get(admin, "admin", "/readyz").await,
                Ok((StatusCode::OK, _, _))
            )
        })
        .await;
        p
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Replaces a manifest file atomically (write + rename), as a tool would.
    pub fn write(&self, file: &str, content: &str) {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, content).expect("write");
        std::fs::rename(&tmp, self.path(file)).expect("rename");
    }

    /// Tells the proxy to stop (as SIGTERM does) without waiting for it.
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

pub type Resp = (StatusCode, HeaderMap, String);

/// One HTTP/1.1 request on a new connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Resp, String> {
    let mut c = H1::connect(addr).await?;
    c.get(host, path).await
}

/// A keepalive HTTP/1.1 client connection.
pub struct H1 {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(H1 { send })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<Resp, String> {
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.request(req).await
    }

    pub async fn request(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        self.send.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        collect(resp).await
    }

    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

async fn collect(resp: hyper::Response<hyper::body::Incoming>) -> Result<Resp, String> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// One HTTP/2 request with prior knowledge (h2c).
pub async fn h2c_get(addr: SocketAddr, authority: &str, path: &str) -> Result<Resp, String> {
    let req = Request::get(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    h2c_request(addr, req).await
}

/// One HTTP/2 request with prior knowledge (h2c); the URI's authority is `:authority`.
pub async fn h2c_request(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Resp, String> {
    let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    collect(resp).await
}

/// The outcome of a TLS request: the response, the certificate served, the ALPN protocol.
pub struct TlsResp {
    pub resp: Resp,
    pub server_cert: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub version: rustls::ProtocolVersion,
}

/// One request over TLS with server name `sni` (None: no SNI), offering `alpn`.
pub async fn tls_get(
    addr: SocketAddr,
    sni: Option<&str>,
    host: &str,
    path: &str,
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<TlsResp, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            tollgate_proxy::upstream::tls::AnyServerCertificate(provider),
        ))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    cfg.enable_sni = sni.is_some();
    let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or("unused.invalid").to_string())
        .map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let server_cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let alpn_got = session.alpn_protocol().map(|a| a.to_vec());
    let version = session.protocol_version().ok_or("no TLS version")?;
    let resp = if alpn_got.as_deref() == Some(b"h2") {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(format!("https://{host}{path}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        collect(send.send_request(req).await.map_err(|e| e.to_string())?).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        collect(send.send_request(req).await.map_err(|e| e.to_string())?).await?
    };
    Ok(TlsResp {
        resp,
        server_cert,
        alpn: alpn_got,
        version,
    })
}

/// The `name` an echo backend put in its JSON answer.
pub fn served_by(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<not echo: {body:?}>"))
}

/// A CA-less self-signed certificate for `names`, as (cert PEM, key PEM, cert DER).
pub fn self_signed(names: &[&str]) -> (String, String, Vec<u8>) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("rcgen");
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().to_vec(),
    )
}

/// A TLS acceptor for a test target: a fresh self-signed certificate for `names`, offering
/// the `alpn` protocols.
pub fn self_signed_acceptor(names: &[&str], alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let (cert, key, _) = self_signed(names);
    acceptor_for(&cert, &key, alpn)
}

/// A TLS acceptor serving the certificate `cert` (PEM) with `key`, offering `alpn`.
pub fn acceptor_for(cert: &str, key: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("pem");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("cert");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg))
}

/// A loopback target: each accepted connection is handed to `serve` on a task of its own.
pub async fn tcp_target<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s));
            }
        }
    });
    addr
}

/// A loopback TLS target with a self-signed certificate for `names`, offering `alpn`: each
/// connection that completes its handshake is handed to `serve`.
pub async fn tls_target<F, Fut>(names: &[&str], alpn: &[&[u8]], serve: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = self_signed_acceptor(names, alpn);
    let serve = Arc::new(serve);
    tcp_target(move |s| {
        let (acceptor, serve) = (acceptor.clone(), serve.clone());
        async move {
            if let Ok(tls) = acceptor.accept(s).await {
                serve(tls).await;
            }
        }
    })
    .await
}

/// Reads a request head from `s` (up to its blank line); false if the stream ends first.
pub async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while find_bytes(&head, b"\r\n\r\n").is_none() {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A `kubernetes.io/tls` Secret manifest.
pub fn tls_secret(name: &str, cert_pem: &str, key_pem: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert_pem),
        indent(key_pem)
    )
}

/// Request heads (and bodies) a recording target received, in order.
pub type Received = Arc<Mutex<Vec<String>>>;

/// A target that records each request — head lines lower-cased up to the colon, then a blank
/// line and the body — and answers `200 ok`, keeping the connection open.
pub async fn recorder() -> (SocketAddr, Received) {
    let got: Received = Arc::default();
    let sink = got.clone();
    let addr = tcp_target(move |mut s| {
        let sink = sink.clone();
        async move {
            let mut buf = Vec::new();
            loop {
                let Some(end) = find_bytes(&buf, b"\r\n\r\n") else {
                    let mut chunk = [0u8; 4096];
                    match tokio::io::AsyncReadExt::read(&mut s, &mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut rest = buf.split_off(end + 4);
                let lower: Vec<String> = head
                    .lines()
                    .map(|l| match l.split_once(':') {
                        Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
                        None => l.to_string(),
                    })
                    .collect();
                let length = lower
                    .iter()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let chunked = lower
                    .iter()
                    .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
                let body_end = |rest: &[u8]| match (length, chunked) {
                    (_, true) => find_bytes(rest, b"0\r\n\r\n").map(|i| i + 5),
                    (Some(n), false) => (rest.len() >= n).then_some(n),
                    (None, false) => Some(0),
                };
                while body_end(&rest).is_none() {
                    let mut chunk = [0u8; 4096];
                    match tokio::io::AsyncReadExt::read(&mut s, &mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => rest.extend_from_slice(&chunk[..n]),
                    }
                }
                let n = body_end(&rest).unwrap_or(0);
                let body = String::from_utf8_lossy(&rest[..n]).into_owned();
                buf = rest.split_off(n);
                sink.lock()
                    .unwrap()
                    .push(format!("{}\n\n{body}", lower.join("\n")));
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if tokio::io::AsyncWriteExt::write_all(&mut s, ok)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    (addr, got)
}

pub fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Values of header `name` (lower-case) in a recorded request.
pub fn values(recorded: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}:");
    recorded
        .split("\n\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
        .collect()
}

/// Sends raw bytes on a new connection and reads until the server closes or 3 s pass.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The first line of a raw response.
pub fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

/// The value of header `name` in a raw HTTP/1.1 response, if it has one.
pub fn header_of(resp: &str, name: &str) -> Option<String> {
    let head = resp.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}
