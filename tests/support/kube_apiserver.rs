//! A real kube-apiserver (v1.20.2, built from Debian's `kubernetes` source package by
//! `kube-apiserver/install.sh`) and etcd, started on loopback for one test and torn down
//! when dropped. Certificates, the service-account key and static tokens are generated per
//! run; nothing is shared between tests.
//!
//! Two identities are provided: `admin` (group `system:masters`, for the test's own set-up)
//! and `controller`, the username of Tollgate's ServiceAccount in `deploy/`
//! (`system:serviceaccount:tollgate:tollgate`), which has only what the ClusterRole in
//! `deploy/` grants once that is applied.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Tollgate's ServiceAccount username, as RBAC sees it.
pub const CONTROLLER_USER: &str = "system:serviceaccount:tollgate:tollgate";

/// etcd + kube-apiserver on loopback, killed on drop.
pub struct TestApiserver {
    pub dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Option<Child>,
    pub port: u16,
    pub etcd_url: String,
    pub url: String,
}

fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kube-apiserver/install.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("running kube-apiserver/install.sh");
        assert!(out.status.success(), "kube-apiserver/install.sh failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write harness file");
    p
}

impl TestApiserver {
    /// Starts etcd and kube-apiserver and waits until the API answers `/readyz`.
    pub async fn start() -> Self {
        let bins = bin_dir().to_path_buf();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();

        // A CA, a serving certificate for 127.0.0.1 (a leaf: rustls refuses a CA certificate
        // as the server's), and the service-account signing key.
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tollgate-test-ca");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
        let sa_key = rcgen::KeyPair::generate().expect("sa key");
        write(d, "ca.crt", &ca_cert.pem());
        write(d, "serving.crt", &leaf.pem());
        write(d, "serving.key", &leaf_key.serialize_pem());
        write(d, "sa.key", &sa_key.serialize_pem());
        write(d, "sa.pub", &sa_key.public_key_pem());
        write(
            d,
            "tokens.csv",
            &format!(
                "admin-token,admin,1,\"system:masters\"\n\
                 controller-token,{CONTROLLER_USER},2,\"system:serviceaccounts,system:serviceaccounts:tollgate\"\n"
            ),
        );

        let etcd_port = free_port();
        let peer_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_log = d.join("etcd.log");
        let mut etcd = Command::new("etcd")
            .args([
                "--data-dir",
                &d.join("etcd").to_string_lossy(),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&etcd_log).expect("etcd log"))
            .spawn()
            .expect("starting etcd (apt-get install etcd-server)");
        wait_for_port(etcd_port, &mut etcd, "etcd", &etcd_log);

        let port = free_port();
        let mut s = TestApiserver {
            dir,
            etcd,
            apiserver: None,
            port,
            etcd_url,
            url: format!("https://127.0.0.1:{port}"),
        };
        s.start_apiserver(&bins);
        s.wait_ready().await;
        s
    }

    fn start_apiserver(&mut self, bins: &Path) {
        let child = self.spawn_apiserver(bins, self.port, "apiserver.log");
        self.apiserver = Some(child);
    }

    /// A second kube-apiserver on the same etcd and credentials, killed when the returned
    /// guard drops.
    pub async fn start_second_apiserver(&self) -> SecondApiserver {
        let port = free_port();
        let child = self.spawn_apiserver(bin_dir(), port, "apiserver-2.log");
        let second = SecondApiserver { child, port };
        let client = self.client_for_port(port, "admin-token").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if client
                .request_text(req)
                .await
                .is_ok_and(|t| t.trim() == "ok")
            {
                break;
            }
            assert!(Instant::now() < deadline, "second kube-apiserver not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        second
    }

    fn spawn_apiserver(&self, bins: &Path, port: u16, log_name: &str) -> Child {
        let d = self.dir.path();
        let log = d.join(log_name);
        let p = |n: &str| d.join(n).to_string_lossy().into_owned();
        let mut child = Command::new(bins.join("kube-apiserver"))
            .args([
                format!("--etcd-servers={}", self.etcd_url),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--insecure-port=0".into(),
                format!("--tls-cert-file={}", p("serving.crt")),
                format!("--tls-private-key-file={}", p("serving.key")),
                format!("--token-auth-file={}", p("tokens.csv")),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--authorization-mode=RBAC".into(),
                format!("--cert-dir={}", p("certs")),
                "--enable-priority-and-fairness=false".into(),
                "--v=0".into(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("apiserver log"))
            .spawn()
            .expect("starting kube-apiserver");
        wait_for_port(port, &mut child, "kube-apiserver", &log);
        child
    }

    async fn wait_ready(&self) {
        let client = self.client("admin-token").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if let Ok(text) = client.request_text(req).await {
                if text.trim() == "ok" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready within 60 s:\n{}",
                std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The default namespace and RBAC bootstrap roles appear shortly after /readyz.
        let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        while ns.get_opt("default").await.ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "namespace default never appeared"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills kube-apiserver (etcd keeps running): clients see their watches break.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts kube-apiserver again on the same port and etcd.
    pub async fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        let bins = bin_dir().to_path_buf();
        self.start_apiserver(&bins);
        self.wait_ready().await;
    }

    /// Compacts etcd's history up to its current revision, so that any watch resuming from
    /// an older resourceVersion gets 410 Gone.
    pub fn compact_etcd(&self) {
        let out = Command::new("etcdctl")
            .args([
                "--endpoints",
                &self.etcd_url,
                "endpoint",
                "status",
                "-w",
                "json",
            ])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl endpoint status");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
        let rev = v[0]["Status"]["header"]["revision"]
            .as_u64()
            .expect("etcd revision");
        let st = Command::new("etcdctl")
            .args(["--endpoints", &self.etcd_url, "compact", &rev.to_string()])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .status()
            .expect("etcdctl compact");
        assert!(st.success(), "etcdctl compact failed");
    }

    /// A kubeconfig file authenticating with `token` (`admin-token` or `controller-token`).
    pub fn kubeconfig(&self, token: &str) -> PathBuf {
        self.kubeconfig_for_port(self.port, token)
    }

    fn kubeconfig_for_port(&self, port: u16, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{port}-{token}"));
        let ca = std::fs::read(self.dir.path().join("ca.crt")).expect("ca");
        let ca_b64 = base64_encode(&ca);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: u, namespace: default}}\ncurrent-context: test\n",
            url = format_args!("https://127.0.0.1:{port}")
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }

    /// A client authenticating with `token`.
    pub async fn client(&self, token: &str) -> kube::Client {
        self.client_for_port(self.port, token).await
    }

    /// A client of the API server listening on `port`.
    pub async fn client_for_port(&self, port: u16, token: &str) -> kube::Client {
        let kc = Kubeconfig::read_from(self.kubeconfig_for_port(port, token)).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// The admin (system:masters) client.
    pub async fn admin(&self) -> kube::Client {
        self.client("admin-token").await
    }
}

/// A kube-apiserver started by [`TestApiserver::start_second_apiserver`].
pub struct SecondApiserver {
    child: Child,
    pub port: u16,
}

impl Drop for SecondApiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestApiserver {
    fn drop(&mut self) {
        self.stop_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Server-side applies every document of a multi-document YAML (namespaced objects without a
/// namespace go to `default_ns`); with `dry_run` nothing is persisted. Kinds are resolved by
/// discovery, retried for a few seconds so a CRD applied just before becomes servable.
pub async fn apply_yaml(
    client: &kube::Client,
    yaml: &str,
    default_ns: &str,
    dry_run: bool,
) -> Result<Vec<kube::api::DynamicObject>, String> {
    use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = serde_json::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if v.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        let tm = obj
            .types
            .clone()
            .ok_or("document without apiVersion/kind")?;
        let (group, version) = match tm.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), tm.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &tm.kind);
        let deadline = Instant::now() + Duration::from_secs(20);
        let (ar, caps) = loop {
            match kube::discovery::pinned_kind(client, &gvk).await {
                Ok(found) => break found,
                Err(e) if Instant::now() > deadline => return Err(format!("{gvk:?}: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let name = obj.metadata.name.clone().ok_or("document without a name")?;
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => {
                let ns = obj
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| default_ns.into());
                Api::namespaced_with(client.clone(), &ns, &ar)
            }
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let mut pp = PatchParams::apply("tollgate-tests").force();
        if dry_run {
            pp = pp.dry_run();
        }
        // Right after a CRD is registered the server may drop a request to its new endpoint
        // (and it is not yet in discovery everywhere): retry transport errors and 404s briefly.
        let applied = loop {
            match api.patch(&name, &pp, &Patch::Apply(&v)).await {
                Ok(o) => break o,
                Err(kube::Error::Api(s)) if s.code != 404 || Instant::now() > deadline => {
                    return Err(format!("{} {name}: {s}", tm.kind))
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("{} {name}: {e}", tm.kind))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        out.push(applied);
    }
    Ok(out)
}

/// Installs `deploy/`'s Namespace, CRD, RBAC and IngressClass for real (the controller's
/// token then has exactly the ClusterRole's permissions).
pub async fn install_deploy_basics(client: &kube::Client) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base");
    for f in [
        "namespace.yaml",
        "crd.yaml",
        "rbac.yaml",
        "ingressclass.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(f)).expect("deploy manifest");
        apply_yaml(client, &text, "tollgate", false)
            .await
            .unwrap_or_else(|e| panic!("applying deploy/{f}: {e}"));
    }
}
