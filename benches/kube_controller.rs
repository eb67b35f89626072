//! Kubernetes wiring figures against a real kube-apiserver (see kube-apiserver/README.md):
//!
//! 1. proxy mode: an Ingress path changed in the API → traffic routed by the new path;
//!    latency over 100 changes (p50/p90/p99/max);
//! 2. controller memory (RSS of a `tollgate proxy` process watching the API) with 1,000
//!    Ingresses and 10,000 endpoints (100 Services × 100 ready endpoints).
//!
//! Run: `cargo bench --bench kube_controller`. Figures go to docs/performance.md.

#[path = "../tests/support/kube_apiserver.rs"]
#[allow(dead_code)]
mod kube_apiserver;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_apiserver::{apply_yaml, install_deploy_basics, TestApiserver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Status code of `GET path` with `Host: host`, on a new connection.
async fn status(addr: SocketAddr, host: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn slice_yaml(svc: &str, port: u16, endpoints: usize) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}}}\nspec: {{ports: [{{name: http, port: 80, protocol: TCP}}]}}\n---\napiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {{name: {svc}-1, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n"
    );
    for i in 0..endpoints {
        // The first endpoint is the loopback echo backend; the rest are addresses nobody
        // answers on (never picked for the probe: the probe host's Service has only one).
        let ip = if i == 0 {
            "127.0.0.1".to_string()
        } else {
            format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
        };
        y.push_str(&format!(
            "- {{addresses: ['{ip}'], conditions: {{ready: true}}}}\n"
        ));
    }
    y
}

fn ingress_yaml(name: &str, host: &str, path: &str, svc: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  ingressClassName: tollgate\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}\n"
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_proxy(kubeconfig: &std::path::Path, http: SocketAddr, admin: SocketAddr) -> Child {
    // TOLLGATE_BENCH_BIN measures another build (e.g. a release binary); TOLLGATE_BENCH_WRAPPER
    // (e.g. `heaptrack`) runs the controller under a profiler.
    let bin = std::env::var("TOLLGATE_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tollgate").to_string());
    let mut cmd = match std::env::var("TOLLGATE_BENCH_WRAPPER") {
        Ok(w) if !w.is_empty() => {
            let mut c = std::process::Command::new(w);
            c.arg(&bin);
            c
        }
        _ => std::process::Command::new(&bin),
    };
    Child(
        cmd.args(["proxy", "--http-listen", &http.to_string()])
            .args(["--https-listen", &free_addr().to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--lease-namespace", "tollgate", "--instance", "bench"])
            .args(["--publish-address", "192.0.2.1"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start tollgate"),
    )
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// (VmRSS, VmHWM, RssAnon, RssFile) in KiB.
fn rss_kib(pid: u32) -> (u64, u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:"),
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:"),
    )
}

async fn change_latency(k: &TestApiserver, admin: &kube::Client) {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("echo");
    let port = echo.local_addr().expect("addr").port();
    tokio::spawn(tollgate::echo_backend::serve_echo(echo, "bench".into()));
    apply_yaml(admin, &slice_yaml("web", port, 1), "default", false)
        .await
        .expect("service");
    apply_yaml(
        admin,
        &ingress_yaml("site", "site.example", "/v0", "web"),
        "default",
        false,
    )
    .await
    .expect("ingress");
    let (http, adm) = (free_addr(), free_addr());
    let _proxy = spawn_proxy(&k.kubeconfig("controller-token"), http, adm);
    wait_for("first route", Duration::from_secs(30), async || {
        status(http, "site.example", "/v0/").await == Some(200)
    })
    .await;
    let api: Api<Ingress> = Api::namespaced(admin.clone(), "default");
    let mut samples = Vec::with_capacity(100);
    for i in 1..=100 {
        let path = format!("/v{i}");
        let patch = serde_json::json!({"spec": {"rules": [{"host": "site.example", "http": {"paths": [
            {"path": path, "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]}});
        let t0 = Instant::now();
        api.patch("site", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch");
        let probe = format!("{path}/");
        wait_for("changed route", Duration::from_secs(10), async || {
            status(http, "site.example", &probe).await == Some(200)
        })
        .await;
        samples.push(t0.elapsed());
    }
    samples.sort();
    println!(
        "ingress change → routed (100 changes, API write included): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

async fn memory(k: &TestApiserver, admin: &kube::Client) {
    let ns = "scale";
    apply_yaml(
        admin,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        "default",
        false,
    )
    .await
    .expect("namespace");
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("echo");
    let port = echo.local_addr().expect("addr").port();
    tokio::spawn(tollgate::echo_backend::serve_echo(echo, "scale".into()));
    let started = Instant::now();
    for s in 0..100 {
        apply_yaml(admin, &slice_yaml(&format!("svc{s}"), port, 100), ns, false)
            .await
            .expect("service");
    }
    let api: Api<Ingress> = Api::namespaced(admin.clone(), ns);
    for i in 0..1000 {
        let y = ingress_yaml(
            &format!("ing{i}"),
            &format!("h{i}.example"),
            "/",
            &format!("svc{}", i % 100),
        );
        let ing: Ingress = serde_yaml_ng::from_str(&y).expect("ingress yaml");
        api.create(&PostParams::default(), &ing)
            .await
            .expect("create");
    }
    println!(
        "created 1,000 Ingresses and 10,000 endpoints in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (http, adm) = (free_addr(), free_addr());
    let proxy = spawn_proxy(&k.kubeconfig("controller-token"), http, adm);
    let t0 = Instant::now();
    wait_for(
        "the last Ingress routed",
        Duration::from_secs(120),
        async || status(http, "h999.example", "/").await == Some(200),
    )
    .await;
    let synced = t0.elapsed();
    // Let the status writer finish its 1,000 status, condition and Event writes (each comes
    // back as a watch event and a rebuild), then measure the steady state.
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), ns);
    wait_for(
        "every status written",
        Duration::from_secs(120),
        async || {
            ingresses.list(&Default::default()).await.is_ok_and(|l| {
                l.items.iter().all(|i| {
                    i.status
                        .as_ref()
                        .and_then(|s| s.load_balancer.as_ref())
                        .and_then(|l| l.ingress.as_ref())
                        .is_some_and(|v| !v.is_empty())
                })
            })
        },
    )
    .await;
    let written = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm, anon, file) = rss_kib(proxy.0.id());
    let mb = |k: u64| k as f64 / 1024.0;
    println!(
        "1,000 Ingresses / 10,000 endpoints: start → all routed {:.2} s, all statuses written {:.1} s; RSS {:.1} MB (peak {:.1} MB; heap/anonymous {:.1} MB, binary/file {:.1} MB)",
        synced.as_secs_f64(),
        written.as_secs_f64(),
        mb(rss),
        mb(hwm),
        mb(anon),
        mb(file)
    );
    if std::env::var_os("TOLLGATE_BENCH_SMAPS").is_some() {
        print_largest_mappings(proxy.0.id());
    }

    // Issue 16: with 1,000 Ingresses in the cluster, one Ingress's path changed in the API
    // until requests are routed by it (after the memory reading, so that stays comparable).
    let mut samples = Vec::new();
    for c in 0..50 {
        let i = (c * 37) % 1000;
        let path = format!("/c{c}");
        let patch = serde_json::json!({"spec": {"rules": [{"host": format!("h{i}.example"), "http": {"paths": [
            {"path": path, "pathType": "Prefix", "backend": {"service": {"name": format!("svc{}", i % 100), "port": {"number": 80}}}}
        ]}}]}});
        let t0 = Instant::now();
        api.patch(
            &format!("ing{i}"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("patch");
        let host = format!("h{i}.example");
        let probe = format!("{path}/");
        wait_for("changed route", Duration::from_secs(10), async || {
            status(http, &host, &probe).await == Some(200)
        })
        .await;
        samples.push(t0.elapsed());
    }
    samples.sort();
    println!(
        "1,000 Ingresses: ingress change → routed (50 changes, API write included): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

/// The ten mappings with the most resident memory, from /proc/PID/smaps (where RSS goes).
fn print_largest_mappings(pid: u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(u64, String)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(w) if w.contains('-') && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-') => {
                let name = line.split_whitespace().nth(5).unwrap_or("[anon]");
                maps.push((0, format!("{w} {name}")));
            }
            Some("Rss:") => {
                if let (Some(m), Some(kib)) = (maps.last_mut(), words.next()) {
                    m.0 = kib.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    for (kib, name) in maps.iter().take(10) {
        println!("  {:>8} KiB  {name}", kib);
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let k = TestApiserver::start().await;
        let admin = k.admin().await;
        install_deploy_basics(&admin).await;
        // TOLLGATE_BENCH_ONLY=memory|latency runs one part.
        let only = std::env::var("TOLLGATE_BENCH_ONLY").unwrap_or_default();
        if only != "memory" {
            change_latency(&k, &admin).await;
        }
        if only != "latency" {
            memory(&k, &admin).await;
        }
    });
}
