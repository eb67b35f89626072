//! The manifest-directory contract as an outside tool uses it: the real `tollgate proxy`
//! binary; a file holding a `v1 List` (Namespace, Secret, Service, Endpoints, EndpointSlice,
//! Ingress, IngressClass) is dropped in and traffic follows within a second; the file is
//! removed and the routes go within a second; SIGTERM stops the process cleanly.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;

/// A free loopback port. The tiny window between releasing it and the proxy binding it is
/// acceptable on loopback in a test.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn list_file(a: SocketAddr, b: SocketAddr, cert: &str, key: &str) -> String {
    let b64 = |s: &str| {
        // Secrets in `data` are base64: encode by hand to avoid a test-only dependency.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
            {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "dropped"},
             "spec": {"controller": "tollgate.io/ingress-controller"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-tls", "namespace": "shop"},
             "type": "kubernetes.io/tls", "data": {"tls.crt": b64(cert), "tls.key": b64(key)}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
             "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "cart", "namespace": "shop"},
             "subsets": [{"addresses": [{"ip": a.ip().to_string()}], "ports": [{"name": "http", "port": a.port()}]}]},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "catalog", "namespace": "shop"},
             "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "catalog-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "catalog"}},
             "addressType": "IPv4", "ports": [{"name": "http", "port": b.port()}],
             "endpoints": [{"addresses": [b.ip().to_string()], "conditions": {"ready": true}}]},
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "shop", "namespace": "shop"},
             "spec": {"ingressClassName": "dropped",
                      "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
                      "rules": [{"host": "shop.example.com", "http": {"paths": [
                          {"path": "/cart", "pathType": "Prefix", "backend": {"service": {"name": "cart", "port": {"name": "http"}}}},
                          {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "catalog", "port": {"number": 80}}}}
                      ]}}]}}
        ]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_list_files_route_within_a_second() {
    let cart = echo("cart").await;
    let catalog = echo("catalog").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["proxy", "--manifests"])
        .arg(dir.path())
        .args([
            "--http-listen",
            &http.to_string(),
            "--https-listen",
            &https.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--drain-seconds",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tollgate proxy");
    let mut proc = Proc(child);
    wait_until(Duration::from_secs(10), "readiness", || async move {
        get(admin, "admin", "/readyz")
            .await
            .is_ok_and(|r| r.0 == StatusCode::OK)
    })
    .await;
    assert_eq!(
        get(http, "shop.example.com", "/cart")
            .await
            .expect("before")
            .0,
        StatusCode::NOT_FOUND
    );

    let (cert, key, der) = self_signed(&["shop.example.com"]);
    let tmp = dir.path().join(".drop.json.tmp");
    std::fs::write(&tmp, list_file(cart, catalog, &cert, &key)).expect("write");
    let dropped = Instant::now();
    std::fs::rename(&tmp, dir.path().join("shop.json")).expect("rename");
    wait_until(
        Duration::from_secs(1),
        "traffic to follow the dropped file",
        || async move {
            get(http, "shop.example.com", "/cart/items")
                .await
                .is_ok_and(|r| served_by(&r.2) == "cart")
        },
    )
    .await;
    let took = dropped.elapsed();
    assert_eq!(
        served_by(&get(http, "shop.example.com", "/").await.expect("catalog").2),
        "catalog"
    );
    let tls = tls_get(
        https,
        Some("shop.example.com"),
        "shop.example.com",
        "/cart",
        &["h2"],
        &[&rustls::version::TLS13],
    )
    .await
    .expect("tls");
    assert_eq!(
        tls.server_cert, der,
        "the dropped Secret's certificate is served"
    );
    assert_eq!(served_by(&tls.resp.2), "cart");

    std::fs::remove_file(dir.path().join("shop.json")).expect("remove");
    wait_until(
        Duration::from_secs(1),
        "routes to go with the file",
        || async move {
            get(http, "shop.example.com", "/cart")
                .await
                .is_ok_and(|r| r.0 == StatusCode::NOT_FOUND)
        },
    )
    .await;
    eprintln!("dropped file routed after {took:?}");

    // SIGTERM: stop accepting, drain, exit 0.
    let pid = libc::pid_t::try_from(proc.0.id()).expect("pid");
    // SAFETY: sends a signal to our own child process; no memory is shared.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(s) = proc.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit}");
}
