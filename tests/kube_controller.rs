//! The Kubernetes wiring against a real kube-apiserver (v1.20.2 built from Debian's source
//! package, `kube-apiserver/install.sh`) with etcd, on loopback. The controller always runs
//! with the `tollgate` ServiceAccount's token under `deploy/base/rbac.yaml` — never as
//! `system:masters`; the test itself sets up objects as admin.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use support::kube_apiserver::{apply_yaml, install_deploy_basics, TestApiserver};
use support::{echo, get, served_by, wait_until, TestProxy, H1};
use tollgate::ingress_status::{CONDITIONS_ANNOTATION, FINALIZER};
use tollgate::kubernetes_mode::KubeOptions;
use tollgate::leader_election::LeaseOptions;
use tollgate::sources::kubernetes::KubeSourceOptions;
use tollgate::sources::SourceSpec;

/// The test apiserver serves EndpointSlice only as v1beta1; the manifests helpers write v1.
fn service_v1beta1(name: &str, targets: &[SocketAddr]) -> String {
    // Server-side apply on v1.20 needs `protocol` in list entries keyed by it.
    support::service(name, targets)
        .replace(
            "apiVersion: discovery.k8s.io/v1\n",
            "apiVersion: discovery.k8s.io/v1beta1\n",
        )
        .replace(
            "{name: http, port: 80}",
            "{name: http, port: 80, protocol: TCP}",
        )
}

fn kube_options(k: &TestApiserver, instance: &str, lease_secs: u64) -> KubeOptions {
    KubeOptions {
        kubeconfig: Some(k.kubeconfig("controller-token")),
        lease: Some(LeaseOptions {
            namespace: "tollgate".into(),
            name: "tollgate-proxy".into(),
            identity: instance.into(),
            duration: Duration::from_secs(lease_secs),
            grace: Duration::from_secs(2),
        }),
        instance: instance.into(),
        publish_service: None,
        source: KubeSourceOptions {
            watch_nodes: false,
            ..KubeSourceOptions::default()
        },
        webhook: None,
    }
}

async fn proxy_on_api(k: &TestApiserver, publish: &str) -> TestProxy {
    let opts = kube_options(k, "proxy-under-test", 10);
    let publish = publish.to_string();
    TestProxy::start_with("", move |o| {
        o.source = SourceSpec::Kubernetes(Box::new(opts));
        o.publish_address = Some(publish);
    })
    .await
}

async fn routed_to(addr: SocketAddr, host: &str, path: &str) -> Option<String> {
    match get(addr, host, path).await {
        Ok((StatusCode::OK, _, body)) => Some(served_by(&body)),
        _ => None,
    }
}

fn condition(ing: &Ingress) -> serde_json::Value {
    ing.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONDITIONS_ANNOTATION))
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .map(|v| v[0].clone())
        .unwrap_or(serde_json::Value::Null)
}

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// A fresh API server with deploy/'s Namespace, CRD, RBAC and IngressClass, and its admin.
async fn cluster() -> (TestApiserver, kube::Client) {
    let k = TestApiserver::start().await;
    let admin = k.admin().await;
    install_deploy_basics(&admin).await;
    (k, admin)
}

/// Applies `yaml` into the `default` namespace for real.
async fn apply(client: &kube::Client, yaml: &str, what: &str) {
    if let Err(e) = apply_yaml(client, yaml, "default", false).await {
        panic!("applying {what}: {e}");
    }
}

/// The first address in an Ingress's `status.loadBalancer.ingress`.
fn published(ing: &Ingress) -> Option<&IngressLoadBalancerIngress> {
    ing.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()
}

async fn answers_404(addr: SocketAddr, host: &str, path: &str) -> bool {
    matches!(
        get(addr, host, path).await,
        Ok((StatusCode::NOT_FOUND, _, _))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_routes_an_ingress_writes_status_and_follows_a_path_change() {
    let (k, admin) = cluster().await;
    let backend = echo("api-backend").await;
    apply(&admin, &service_v1beta1("api", &[backend]), "service").await;
    let shop =
        |path: &str| support::ingress("shop", "", &[("shop.example", path, "Prefix", "api")]);
    apply(&admin, &shop("/api"), "ingress").await;

    let proxy = proxy_on_api(&k, "192.0.2.10").await;
    wait_until(
        Duration::from_secs(20),
        "the Ingress to be routed",
        || async {
            routed_to(proxy.http, "shop.example", "/api/x")
                .await
                .as_deref()
                == Some("api-backend")
        },
    )
    .await;

    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
    wait_until(Duration::from_secs(20), "status and condition", || async {
        let Ok(ing) = ingresses.get("shop").await else {
            return false;
        };
        published(&ing).and_then(|a| a.ip.as_deref()) == Some("192.0.2.10")
            && condition(&ing)["status"] == "True"
    })
    .await;
    wait_until(Duration::from_secs(20), "a Normal Synced Event", || async {
        events_for(&admin, "default", "shop")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Synced") && e.type_.as_deref() == Some("Normal"))
    })
    .await;

    // A path change in the API reaches the route table.
    apply(&admin, &shop("/v2"), "update").await;
    wait_until(
        Duration::from_secs(20),
        "the new path to be routed",
        || async {
            routed_to(proxy.http, "shop.example", "/v2/x")
                .await
                .as_deref()
                == Some("api-backend")
                && answers_404(proxy.http, "shop.example", "/api/x").await
        },
    )
    .await;

    // ingress-nginx basic authentication from a Secret the source reads because an Ingress
    // names it in auth-secret; a password rotated in the Secret alone applies.
    let secret = |password: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: basic}}\ntype: Opaque\nstringData: {{auth: 'foo:{{PLAIN}}{password}'}}\n")
    };
    apply(&admin, &secret("bar"), "basic-auth secret").await;
    apply(
        &admin,
        &support::ingress(
            "guarded",
            "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: basic",
            &[("guarded.example", "/", "Prefix", "api")],
        ),
        "guarded ingress",
    )
    .await;
    let status = |user_password: Option<&'static str>| {
        let addr = proxy.http;
        async move {
            let Ok(mut c) = H1::connect(addr).await else {
                return None;
            };
            let mut b = http::Request::get("/").header("host", "guarded.example");
            if let Some(up) = user_password {
                use base64::Engine;
                let token = base64::engine::general_purpose::STANDARD.encode(up);
                b = b.header("authorization", format!("Basic {token}"));
            }
            let req = b
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .ok()?;
            c.request(req).await.ok().map(|r| r.0)
        }
    };
    wait_until(Duration::from_secs(20), "basic auth served", || async {
        status(None).await == Some(StatusCode::UNAUTHORIZED)
            && status(Some("foo:bar")).await == Some(StatusCode::OK)
    })
    .await;
    apply(&admin, &secret("new"), "rotated secret").await;
    wait_until(Duration::from_secs(20), "the rotated password", || async {
        status(Some("foo:new")).await == Some(StatusCode::OK)
            && status(Some("foo:bar")).await == Some(StatusCode::UNAUTHORIZED)
    })
    .await;

    // Deleting the Ingress removes its routes (proxy mode puts no finalizer on it).
    ingresses
        .delete("shop", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until(
        Duration::from_secs(20),
        "the deleted Ingress to stop routing",
        || async { answers_404(proxy.http, "shop.example", "/v2/x").await },
    )
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_member_of_a_group_gets_a_warning_and_a_false_condition_the_rest_is_synced() {
    let (k, admin) = cluster().await;
    let backend = echo("good-backend").await;
    apply(&admin, &service_v1beta1("web", &[backend]), "service").await;
    let group = "alb.ingress.kubernetes.io/group.name: shop";
    let good = support::ingress("good", group, &[("good.example", "/", "Prefix", "web")]);
    let bad = support::ingress(
        "bad",
        &format!("{group}, alb.ingress.kubernetes.io/group.order: 'not-a-number'"),
        &[("bad.example", "/", "Prefix", "web")],
    );
    apply(&admin, &format!("{good}---\n{bad}"), "ingresses").await;

    let proxy = proxy_on_api(&k, "192.0.2.20").await;
    wait_until(
        Duration::from_secs(20),
        "the valid member to be routed",
        || async {
            routed_to(proxy.http, "good.example", "/").await.as_deref() == Some("good-backend")
        },
    )
    .await;
    assert!(
        answers_404(proxy.http, "bad.example", "/").await,
        "the invalid member must not be routed"
    );

    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
    wait_until(
        Duration::from_secs(20),
        "conditions on both members",
        || async {
            let (Ok(g), Ok(b)) = (ingresses.get("good").await, ingresses.get("bad").await) else {
                return false;
            };
            condition(&g)["status"] == "True"
                && condition(&b)["status"] == "False"
                && condition(&b)["reason"] == "AnnotationInvalid"
        },
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "a Warning Event on the invalid member",
        || async {
            events_for(&admin, "default", "bad").await.iter().any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("AnnotationInvalid")
                    && e.note.as_deref().is_some_and(|n| n.contains("group.order"))
            })
        },
    )
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_after_410_gone_loses_no_change() {
    let (mut k, admin) = cluster().await;
    let one = echo("backend-one").await;
    let two = echo("backend-two").await;
    apply(
        &admin,
        &format!(
            "{}---\n{}",
            service_v1beta1("one", &[one]),
            service_v1beta1("two", &[two])
        ),
        "services",
    )
    .await;
    let ing = |svc: &str| support::ingress("site", "", &[("site.example", "/", "Prefix", svc)]);
    apply(&admin, &ing("one"), "ingress").await;
    let proxy = proxy_on_api(&k, "192.0.2.30").await;
    wait_until(Duration::from_secs(20), "routing to one", || async {
        routed_to(proxy.http, "site.example", "/").await.as_deref() == Some("backend-one")
    })
    .await;

    // While the API server is down, a second API server on the same etcd takes a change;
    // etcd's history is then compacted, so the proxy's watches cannot resume from their
    // resourceVersion when the first server returns: they get 410 Gone and must re-list.
    k.stop_apiserver();
    {
        let second = k.start_second_apiserver().await;
        let client = k.client_for_port(second.port, "admin-token").await;
        apply(&client, &ing("two"), "change through the second server").await;
        k.compact_etcd();
    }
    assert_eq!(
        routed_to(proxy.http, "site.example", "/").await.as_deref(),
        Some("backend-one"),
        "the proxy keeps serving the last configuration while the API is away"
    );
    k.restart_apiserver().await;
    // The watchers reconnect on kube-runtime's back-off (doubling up to 30 s while the API
    // was away), then get 410 Gone and re-list.
    wait_until(
        Duration::from_secs(90),
        "the change made during the outage",
        || async {
            routed_to(proxy.http, "site.example", "/").await.as_deref() == Some("backend-two")
        },
    )
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_account_has_only_what_deploy_grants_and_deploy_passes_a_dry_run() {
    let (k, admin) = cluster().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let base = root.join("base");
    let mut files: Vec<_> = std::fs::read_dir(&base)
        .expect("deploy/base/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "deploy/base manifests missing: {files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let applied = apply_yaml(&admin, &text, "tollgate", true)
            .await
            .unwrap_or_else(|e| panic!("{} fails a server-side dry-run apply: {e}", f.display()));
        assert!(!applied.is_empty(), "{} holds no object", f.display());
    }
    // What a user installs: each mode as `kubectl apply -k` renders it, and the EKS example.
    for (dir, must_hold) in [
        (
            "aws",
            &[
                "kind: Deployment",
                "kind: PodDisruptionBudget",
                "tollgate-aws",
            ][..],
        ),
        (
            "proxy",
            &["kind: Deployment", "kind: Service", "tollgate-proxy"][..],
        ),
        (
            "proxy-hostnetwork",
            &["kind: DaemonSet", "hostNetwork: true"][..],
        ),
        (
            "examples/eks",
            &[
                "eks.amazonaws.com/role-arn",
                "name: AWS_REGION",
                "name: AWS_VPC_ID",
                "kind: PodDisruptionBudget",
            ][..],
        ),
        (
            "examples/cert-manager",
            &[
                "kind: Certificate",
                "cert-manager.io/inject-ca-from: tollgate/tollgate-webhook",
                "--webhook-cert-file=/etc/tollgate/webhook/tls.crt",
                "secretName: tollgate-webhook-cert",
            ][..],
        ),
    ] {
        let out = std::process::Command::new("kubectl")
            .args(["kustomize", &root.join(dir).to_string_lossy()])
            .output()
            .expect("kubectl kustomize");
        assert!(
            out.status.success(),
            "kubectl kustomize deploy/{dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
        for want in must_hold {
            assert!(rendered.contains(want), "deploy/{dir} renders no {want:?}");
        }
        // The test's API server (Debian's) may predate policy/v1 (Kubernetes 1.21), which
        // every EKS version serves: a PodDisruptionBudget is then checked by render only.
        let pdb_served = kube::discovery::pinned_kind(
            &admin,
            &kube::api::GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"),
        )
        .await
        .is_ok();
        // cert-manager's kinds exist only where it is installed: checked by render here.
        let cert_manager_served = kube::discovery::pinned_kind(
            &admin,
            &kube::api::GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        )
        .await
        .is_ok();
        let checked: String = rendered
            .split("\n---\n")
            .filter(|doc| pdb_served || !doc.contains("kind: PodDisruptionBudget"))
            .filter(|doc| cert_manager_served || !doc.contains("apiVersion: cert-manager.io/"))
            .collect::<Vec<_>>()
            .join("\n---\n");
        let applied = apply_yaml(&admin, &checked, "tollgate", true)
            .await
            .unwrap_or_else(|e| panic!("deploy/{dir} fails a server-side dry-run apply: {e}"));
        assert!(
            applied.len() >= 10,
            "deploy/{dir}: {} objects",
            applied.len()
        );
    }
    // deploy/base/crd.yaml is what `tollgate crd` prints.
    let generated = tollgate::class_params::crd_yaml().expect("crd");
    assert_eq!(
        std::fs::read_to_string(base.join("crd.yaml")).expect("crd.yaml"),
        generated,
        "deploy/base/crd.yaml is stale: run `tollgate crd > deploy/base/crd.yaml`"
    );

    let ctl = k.client("controller-token").await;
    let ingresses: Api<Ingress> = Api::namespaced(ctl.clone(), "default");
    assert!(
        ingresses.list(&Default::default()).await.is_ok(),
        "may list Ingresses"
    );
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let cms: Api<ConfigMap> = Api::namespaced(ctl.clone(), "default");
    assert!(
        forbidden(cms.list(&Default::default()).await.map(|_| ())),
        "ConfigMaps are not readable"
    );
    assert!(
        forbidden(
            ingresses
                .create(
                    &Default::default(),
                    &Ingress {
                        metadata: kube::api::ObjectMeta {
                            name: Some("x".into()),
                            ..Default::default()
                        },
                        ..Default::default()
                    }
                )
                .await
                .map(|_| ())
        ),
        "Ingresses cannot be created"
    );
    assert!(
        forbidden(
            ingresses
                .delete("x", &DeleteParams::default())
                .await
                .map(|_| ())
        ),
        "Ingresses cannot be deleted"
    );
    let leases_elsewhere: Api<Lease> = Api::namespaced(ctl.clone(), "default");
    assert!(
        forbidden(
            leases_elsewhere
                .patch("l", &PatchParams::apply("t"), &Patch::Apply(serde_json::json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}
                })))
                .await
                .map(|_| ())
        ),
        "Leases only in Tollgate's namespace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_status_writing_to_the_other_replica_within_15_seconds() {
    let (k, admin) = cluster().await;
    let kubeconfig = k.kubeconfig("controller-token");
    let bin = env!("CARGO_BIN_EXE_tollgate");
    let spawn = |name: &str, publish: &str| {
        KillOnDrop(
            std::process::Command::new(bin)
                .args([
                    "proxy",
                    "--http-listen",
                    "127.0.0.1:0",
                    "--https-listen",
                    "127.0.0.1:0",
                ])
                .args([
                    "--admin-listen",
                    "127.0.0.1:0",
                    "--lease-duration-seconds",
                    "8",
                ])
                .args(["--lease-namespace", "tollgate", "--instance", name])
                .args(["--publish-address", publish])
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start tollgate"),
        )
    };
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "tollgate");
    let holder = || async {
        leases
            .get_opt("tollgate-proxy")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec.and_then(|s| s.holder_identity))
    };
    let mut first = spawn("replica-a", "192.0.2.1");
    wait_until(Duration::from_secs(20), "replica-a to lead", || async {
        holder().await.as_deref() == Some("replica-a")
    })
    .await;
    let second = spawn("replica-b", "192.0.2.2");
    let backend = echo("b").await;
    apply(&admin, &service_v1beta1("web", &[backend]), "service").await;
    apply(
        &admin,
        &support::ingress("site", "", &[("site.example", "/", "Prefix", "web")]),
        "ingress",
    )
    .await;
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
    let published_ip = || async {
        let ing = ingresses.get("site").await.ok()?;
        published(&ing)?.ip.clone()
    };
    wait_until(Duration::from_secs(20), "the leader's status", || async {
        published_ip().await.as_deref() == Some("192.0.2.1")
    })
    .await;
    // Only the leader writes: the follower's different address never appears.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        published_ip().await.as_deref(),
        Some("192.0.2.1"),
        "the follower wrote status"
    );

    let killed = Instant::now();
    first.0.kill().expect("kill leader");
    let _ = first.0.wait();
    wait_until(
        Duration::from_secs(15),
        "replica-b to take the Lease",
        || async { holder().await.as_deref() == Some("replica-b") },
    )
    .await;
    let takeover = killed.elapsed();
    wait_until(
        Duration::from_secs(10),
        "the new leader's status",
        || async { published_ip().await.as_deref() == Some("192.0.2.2") },
    )
    .await;
    eprintln!("leader take-over after {takeover:?}");
    assert!(
        takeover <= Duration::from_secs(15),
        "take-over took {takeover:?}"
    );
    drop(second);
}

/// A controller process that cannot outlive its test, even one that fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_mode_creates_the_alb_writes_its_hostname_and_cleans_up_behind_the_finalizer() {
    use tollgate::aws_command::{run_continuous, AwsRunOptions};
    use tollgate::{BuildOptions, Grouping};
    use tollgate_aws::aws_api::Aws;

    support::moto::test_credentials();
    let moto = support::moto::start_moto();
    support::moto::seed_cluster(&moto.endpoint, "kube", 0).await;
    let (k, admin) = cluster().await;
    apply(
        &admin,
        &service_v1beta1("api", &["10.0.0.21:9000".parse().expect("addr")]),
        "service",
    )
    .await;
    let shop =
        |path: &str| support::ingress("shop", "", &[("shop.example", path, "Prefix", "api")]);
    apply(&admin, &shop("/api"), "ingress").await;

    let mut kube = kube_options(&k, "aws-under-test", 10);
    if let Some(l) = kube.lease.as_mut() {
        l.name = "tollgate-aws".into();
    }
    let opts = AwsRunOptions {
        source: SourceSpec::Kubernetes(Box::new(kube)),
        build: BuildOptions {
            grouping: Grouping::ByIngressGroup,
            ..BuildOptions::default()
        },
        cluster: "kube".into(),
        endpoint: Some(moto.endpoint.clone()),
        region: Some("us-east-1".into()),
        vpc_id: None,
        limits: Default::default(),
        resync: Duration::from_secs(300),
        full_resync: Duration::from_secs(3600),
        admin_listen: None,
        pace: Default::default(),
        readiness_gate_timeout: tollgate::readiness_gate::DEFAULT_TIMEOUT,
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(async move { run_continuous(&opts, stop_rx).await });

    let aws = Aws::connect("kube", Some(&moto.endpoint), Some("us-east-1")).await;
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
    wait_until(
        Duration::from_secs(60),
        "the ALB's DNS name in the Ingress status",
        || async {
            let Ok(inv) = aws.observe().await else {
                return false;
            };
            let Some(lb) = inv.load_balancers.first() else {
                return false;
            };
            let Ok(ing) = ingresses.get("shop").await else {
                return false;
            };
            published(&ing).and_then(|a| a.hostname.as_deref()) == Some(lb.dns_name.as_str())
                && ing
                    .metadata
                    .finalizers
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f == FINALIZER)
        },
    )
    .await;

    // A path change in the API reaches the ALB's rules.
    apply(&admin, &shop("/v2"), "update").await;
    wait_until(
        Duration::from_secs(60),
        "the changed rule in AWS",
        || async {
            let Ok(inv) = aws.observe().await else {
                return false;
            };
            let rules = format!("{:?}", inv.load_balancers);
            rules.contains("/v2") && !rules.contains("\"/api\"")
        },
    )
    .await;

    ingresses
        .delete("shop", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until(
        Duration::from_secs(60),
        "the Ingress gone and nothing left in AWS",
        || async {
            let gone = matches!(ingresses.get_opt("shop").await, Ok(None));
            let empty = aws
                .observe()
                .await
                .is_ok_and(|inv| inv.load_balancers.is_empty() && inv.target_groups.is_empty());
            gone && empty
        },
    )
    .await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
}

/// `kubectl apply -f` of `yaml` as the admin user: (exit success, stderr).
fn kubectl_apply(k: &TestApiserver, yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ingress.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(k.kubeconfig("admin-token"))
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}\n(stdout: {})",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The admission webhook against the real API server, driven with kubectl as a user would:
/// an invalid Ingress is refused with its reason, one with an annotation the proxy does not
/// honour is admitted with kubectl printing the warning, a conflicting one is refused; with
/// Tollgate stopped, writes succeed (failurePolicy Ignore). Tollgate generates the serving
/// certificate and patches the CA into the configuration with the controller's own RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_webhook_refuses_invalid_ingresses_and_warns_with_kubectl() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use tollgate::admission_webhook::{WebhookOptions, WebhookTls};

    let (k, admin) = cluster().await;
    let backend = echo("web").await;
    apply(&admin, &service_v1beta1("web", &[backend]), "service").await;
    apply(
        &admin,
        &support::ingress("taken", "", &[("taken.example", "/", "Prefix", "web")]),
        "existing ingress",
    )
    .await;
    let port = free_port();
    // deploy/base/webhook.yaml's configuration, pointed at the test's loopback URL.
    let deployed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/base/webhook.yaml"
    ))
    .expect("deploy/base/webhook.yaml");
    let config_doc = deployed
        .split("\n---\n")
        .find(|d| d.contains("kind: ValidatingWebhookConfiguration"))
        .expect("configuration document")
        .replace(
            "service: {namespace: tollgate, name: tollgate-webhook, path: /validate-ingress, port: 443}",
            &format!("url: https://127.0.0.1:{port}/validate-ingress"),
        );
    apply_yaml(&admin, &config_doc, "tollgate", false)
        .await
        .expect("webhook configuration");

    let mut opts = kube_options(&k, "webhook-under-test", 10);
    opts.webhook = Some(Box::new(WebhookOptions {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        tls: WebhookTls::Generate {
            names: vec!["127.0.0.1".into()],
            configuration: Some("tollgate".into()),
            secret: Some(("tollgate".into(), "tollgate-webhook-tls".into())),
        },
    }));
    let proxy = TestProxy::start_with("", move |o| {
        o.source = SourceSpec::Kubernetes(Box::new(opts));
    })
    .await;
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    wait_until(
        Duration::from_secs(20),
        "the caBundle patched in",
        || async {
            configs.get("tollgate").await.is_ok_and(|c| {
                c.webhooks
                    .unwrap_or_default()
                    .iter()
                    .all(|w| w.client_config.ca_bundle.is_some())
            })
        },
    )
    .await;
    // A second replica serves what the first generated (stored in the Secret): the one CA in
    // the caBundle still verifies both.
    let bundle = |c: ValidatingWebhookConfiguration| {
        c.webhooks.unwrap_or_default()[0]
            .client_config
            .ca_bundle
            .clone()
    };
    let before = bundle(configs.get("tollgate").await.expect("configuration"));
    let (_states_tx, states) = tokio::sync::watch::channel(std::sync::Arc::new(
        tollgate::sources::SourceState::default(),
    ));
    let second = tollgate::admission_webhook::start(
        &WebhookOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls: WebhookTls::Generate {
                names: vec!["127.0.0.1".into()],
                configuration: Some("tollgate".into()),
                secret: Some(("tollgate".into(), "tollgate-webhook-tls".into())),
            },
        },
        k.client("controller-token").await,
        states,
        tollgate::BuildOptions::default(),
    )
    .await
    .expect("a second replica starts with the controller's RBAC");
    assert_eq!(
        bundle(configs.get("tollgate").await.expect("configuration")),
        before,
        "replicas must not replace each other's CA"
    );
    drop(second);

    // An invalid Ingress (a bad annotation value) is refused with the reason.
    let invalid = support::ingress(
        "invalid",
        "nginx.ingress.kubernetes.io/use-regex: maybe",
        &[("invalid.example", "/", "Prefix", "web")],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ok, stderr) = loop {
        // The API server picks up the patched configuration within a moment.
        let (ok, stderr) = kubectl_apply(&k, &invalid);
        if !ok || Instant::now() > deadline {
            break (ok, stderr);
        }
        let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), "default");
        let _ = ingresses.delete("invalid", &DeleteParams::default()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !ok,
        "an invalid Ingress must be refused; kubectl said: {stderr}"
    );
    assert!(
        stderr.contains("denied the request") && stderr.contains("use-regex"),
        "kubectl shows why: {stderr}"
    );

    // A protective annotation the proxy does not honour is an Error too.
    let (ok, stderr) = kubectl_apply(
        &k,
        &support::ingress(
            "guarded",
            "nginx.ingress.kubernetes.io/enable-modsecurity: 'true'",
            &[("guarded.example", "/", "Prefix", "web")],
        ),
    );
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("AnnotationUnsupported"), "{stderr}");

    // A conflict with an existing Ingress of the class is refused.
    let (ok, stderr) = kubectl_apply(
        &k,
        &support::ingress("dup", "", &[("taken.example", "/", "Prefix", "web")]),
    );
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("RouteConflict"), "{stderr}");

    // Valid, with an annotation the proxy does not honour: admitted, and kubectl warns.
    let (ok, stderr) = kubectl_apply(
        &k,
        &support::ingress(
            "timeouts",
            "nginx.ingress.kubernetes.io/limit-rate: '1024'",
            &[("timeouts.example", "/", "Prefix", "web")],
        ),
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("Warning:") && stderr.contains("limit-rate"),
        "kubectl prints the warning: {stderr}"
    );

    // Tollgate stopped: writes still succeed, even an invalid one.
    proxy.stop().await;
    let (ok, stderr) = kubectl_apply(&k, &invalid);
    assert!(
        ok,
        "with Tollgate down, writes must not be blocked: {stderr}"
    );
}

/// deploy/base/webhook.yaml's configurations, pointed at the test's loopback `port`.
fn webhook_configurations(port: u16) -> Vec<String> {
    let deployed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/base/webhook.yaml"
    ))
    .expect("deploy/base/webhook.yaml");
    deployed
        .split("\n---\n")
        .filter(|d| d.contains("WebhookConfiguration"))
        .map(|d| {
            d.replace(
                "service: {namespace: tollgate, name: tollgate-webhook, path: /validate-ingress, port: 443}",
                &format!("url: https://127.0.0.1:{port}/validate-ingress"),
            )
            .replace(
                "service: {namespace: tollgate, name: tollgate-webhook, path: /mutate-v1-pod, port: 443}",
                &format!("url: https://127.0.0.1:{port}/mutate-v1-pod"),
            )
        })
        .collect()
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec: {{automountServiceAccountToken: false, containers: [{{name: app, image: web}}]}}\n"
    )
}

fn gate_condition(p: &k8s_openapi::api::core::v1::Pod) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == tollgate::readiness_gate::CONDITION)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// A real API server set up for the readiness gate, and `tollgate aws` running on it with
/// the webhook and AWS at `endpoint`.
struct GateCluster {
    k: TestApiserver,
    admin: kube::Client,
    stop: tokio::sync::watch::Sender<bool>,
    controller: tokio::task::JoinHandle<Result<(), tollgate::aws_command::AwsRunError>>,
}

/// Namespace `default` labelled with `label` (and given the ServiceAccount no controller
/// manager makes here), deploy's webhook configurations pointed at a loopback port, the
/// Service `web` (selector `app: web`) and the Ingress `shop` with `ip` targets; the
/// controller started with `timeout` for the gate, its caBundle in place.
async fn gate_cluster(label: &str, endpoint: &str, timeout: Duration) -> GateCluster {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Namespace;
    use tollgate::admission_webhook::{WebhookOptions, WebhookTls};
    use tollgate::aws_command::{run_continuous, AwsRunOptions};
    use tollgate::{BuildOptions, Grouping};

    let (k, admin) = cluster().await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {label: "enabled"}}})),
        )
        .await
        .expect("label the namespace");
    apply(
        &admin,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default}\n",
        "service account",
    )
    .await;
    let port = free_port();
    for doc in webhook_configurations(port) {
        apply_yaml(&admin, &doc, "tollgate", false)
            .await
            .expect("webhook configuration");
    }
    apply(
        &admin,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, protocol: TCP}]}\n",
        "service",
    )
    .await;
    apply(
        &admin,
        &support::ingress(
            "shop",
            "alb.ingress.kubernetes.io/target-type: ip",
            &[("shop.example", "/", "Prefix", "web")],
        ),
        "ingress",
    )
    .await;
    let mut kube = kube_options(&k, "gate-under-test", 10);
    if let Some(l) = kube.lease.as_mut() {
        l.name = "tollgate-aws".into();
    }
    kube.webhook = Some(Box::new(WebhookOptions {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        tls: WebhookTls::Generate {
            names: vec!["127.0.0.1".into()],
            configuration: Some("tollgate".into()),
            secret: Some(("tollgate".into(), "tollgate-webhook-tls".into())),
        },
    }));
    let opts = AwsRunOptions {
        source: SourceSpec::Kubernetes(Box::new(kube)),
        build: BuildOptions {
            grouping: Grouping::ByIngressGroup,
            ..BuildOptions::default()
        },
        cluster: "gate".into(),
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        vpc_id: None,
        limits: Default::default(),
        resync: Duration::from_secs(300),
        full_resync: Duration::from_secs(3600),
        admin_listen: None,
        pace: Default::default(),
        readiness_gate_timeout: timeout,
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(async move { run_continuous(&opts, stop_rx).await });
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    wait_until(
        Duration::from_secs(30),
        "the caBundle in the mutating webhook",
        || async {
            mutating.get("tollgate").await.is_ok_and(|c| {
                c.webhooks
                    .unwrap_or_default()
                    .iter()
                    .all(|w| w.client_config.ca_bundle.is_some())
            })
        },
    )
    .await;
    GateCluster {
        k,
        admin,
        stop,
        controller,
    }
}

/// Creates pod `name` (`app: web`) until it comes back with the gate and the label Tollgate
/// watches it by: the API server picks up the patched configuration, and Tollgate's
/// snapshot the Ingress, within a moment.
async fn create_gated(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    admin: &kube::Client,
    name: &str,
) {
    wait_until(Duration::from_secs(40), "a gated pod", || async {
        let _ = pods
            .delete(name, &DeleteParams::default().grace_period(0))
            .await;
        wait_until(Duration::from_secs(10), "the old pod gone", || async {
            matches!(pods.get_opt(name).await, Ok(None))
        })
        .await;
        apply(admin, &pod(name), "pod").await;
        pods.get(name).await.is_ok_and(|p| {
            p.spec
                .and_then(|s| s.readiness_gates)
                .unwrap_or_default()
                .iter()
                .any(|g| g.condition_type == tollgate::readiness_gate::CONDITION)
                && p.metadata
                    .labels
                    .unwrap_or_default()
                    .get(tollgate::readiness_gate::LABEL)
                    == Some(&"true".to_string())
        })
    })
    .await;
}

/// The pod readiness gate against the real API server and the emulator (issue 14): the
/// webhook gates a new pod of an `ip` target group's Service in a labelled namespace; the
/// ALB registers it once its containers are ready; the gate opens when the ALB reports it
/// healthy (the strict proxy's test seam sets the state), and not before; a pod the ALB
/// never reports healthy has its gate opened at the timeout, with an Event; with Tollgate
/// stopped, pods are still created (failurePolicy Ignore).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readiness_gate_opens_on_healthy_or_at_the_timeout_and_never_blocks_pods() {
    use k8s_openapi::api::core::v1::Pod;
    use tollgate_aws::aws_api::Aws;

    support::moto::test_credentials();
    let moto = support::moto::start_moto();
    support::moto::seed_cluster(&moto.endpoint, "gate", 0).await;
    let timeout = Duration::from_secs(15);
    let GateCluster {
        k,
        admin,
        stop,
        controller,
    } = gate_cluster(
        "tollgate.io/pod-readiness-gate-inject",
        &moto.endpoint,
        timeout,
    )
    .await;

    // New pods get the gate (and the label Tollgate watches them by), once the API server
    // has the patched configuration and Tollgate's snapshot has the Ingress.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    for name in ["p1", "p2"] {
        create_gated(&pods, &admin, name).await;
    }

    // The kubelet's part: containers ready, the gate still closed, so the endpoints are not
    // ready (the EndpointSlice controller's part, written here as it would).
    moto.set_target_health("10.0.0.31", 8080, "initial");
    moto.set_target_health("10.0.0.32", 8080, "initial");
    let opened = Instant::now();
    for (name, ip) in [("p1", "10.0.0.31"), ("p2", "10.0.0.32")] {
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"status": {"podIP": ip, "conditions": [
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()},
                {"type": "Ready", "status": "False"}
            ]}})),
        )
        .await
        .expect("pod status");
    }
    apply(
        &admin,
        "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n- {addresses: [10.0.0.31], conditions: {ready: false}, targetRef: {kind: Pod, name: p1, namespace: default}}\n- {addresses: [10.0.0.32], conditions: {ready: false}, targetRef: {kind: Pod, name: p2, namespace: default}}\n",
        "endpoint slice",
    )
    .await;

    // Registered while the gate alone holds them: the ALB's health check opens the gate.
    let aws = Aws::connect("gate", Some(&moto.endpoint), Some("us-east-1")).await;
    wait_until(
        Duration::from_secs(30),
        "both pods registered with the ALB",
        || async {
            aws.observe().await.is_ok_and(|inv| {
                inv.target_groups.iter().any(|t| {
                    t.spec.targets.contains(&("10.0.0.31".to_string(), 8080))
                        && t.spec.targets.contains(&("10.0.0.32".to_string(), 8080))
                })
            })
        },
    )
    .await;
    if opened.elapsed() + Duration::from_secs(1) < timeout {
        for name in ["p1", "p2"] {
            let p = pods.get(name).await.expect("pod");
            assert_ne!(
                gate_condition(&p).map(|c| c.0),
                Some("True".into()),
                "{name}: not opened while the ALB says initial"
            );
        }
    }
    moto.set_target_health("10.0.0.31", 8080, "healthy");
    wait_until(
        Duration::from_secs(20),
        "p1's gate open on healthy",
        || async {
            pods.get("p1")
                .await
                .is_ok_and(|p| gate_condition(&p) == Some(("True".into(), "TargetHealthy".into())))
        },
    )
    .await;
    // p2 is still initial: its gate holds until the timeout, so the group always keeps a
    // target the ALB calls healthy before an old pod may go.
    if opened.elapsed() + Duration::from_secs(1) < timeout {
        let p = pods.get("p2").await.expect("pod");
        assert_ne!(gate_condition(&p).map(|c| c.0), Some("True".into()));
    }
    wait_until(
        Duration::from_secs(30),
        "p2's gate open at the timeout",
        || async {
            pods.get("p2").await.is_ok_and(|p| {
                gate_condition(&p) == Some(("True".into(), "ReadinessGateTimeout".into()))
            })
        },
    )
    .await;
    // Condition times have whole seconds: the timeout counts from up to a second earlier.
    assert!(
        opened.elapsed() + Duration::from_secs(1) >= timeout,
        "not before the timeout: {:?}",
        opened.elapsed()
    );
    wait_until(
        Duration::from_secs(20),
        "an Event on p2 saying so",
        || async {
            events_for(&admin, "default", "p2")
                .await
                .iter()
                .any(|e| e.reason.as_deref() == Some("ReadinessGateTimeout"))
        },
    )
    .await;

    // Tollgate down: pods are still created (no gate).
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    let (ok, stderr) = kubectl_apply(&k, &pod("p3"));
    assert!(
        ok,
        "with Tollgate down, pods must still be created: {stderr}"
    );
    let p3 = pods.get("p3").await.expect("p3");
    assert!(p3
        .spec
        .and_then(|s| s.readiness_gates)
        .unwrap_or_default()
        .is_empty());
}

/// With AWS out of reach (no inventory at all), a gated pod's gate still opens at the
/// timeout, with the Event: nothing Tollgate cannot see freezes a rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aws_out_of_reach_the_readiness_gate_still_opens_at_the_timeout() {
    use k8s_openapi::api::core::v1::Pod;

    support::moto::test_credentials();
    let timeout = Duration::from_secs(4);
    // Port 1 (tcpmux): nothing listens there, so every AWS call fails; no port is taken
    // from the pool the other tests' listeners draw from.
    // The API server lives as long as `_k` does.
    let GateCluster {
        k: _k,
        admin,
        stop,
        controller,
    } = gate_cluster(
        "elbv2.k8s.aws/pod-readiness-gate-inject",
        "http://127.0.0.1:1",
        timeout,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    create_gated(&pods, &admin, "p").await;
    let ready_at = Instant::now();
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Strategic(serde_json::json!({"status": {"podIP": "10.0.0.41", "conditions": [
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()},
            {"type": "Ready", "status": "False"}
        ]}})),
    )
    .await
    .expect("pod status");
    wait_until(
        Duration::from_secs(60),
        "the gate open at the timeout",
        || async {
            pods.get("p").await.is_ok_and(|p| {
                gate_condition(&p) == Some(("True".into(), "ReadinessGateTimeout".into()))
            })
        },
    )
    .await;
    assert!(
        ready_at.elapsed() + Duration::from_secs(1) >= timeout,
        "not before the timeout: {:?}",
        ready_at.elapsed()
    );
    wait_until(Duration::from_secs(20), "an Event saying so", || async {
        events_for(&admin, "default", "p")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("ReadinessGateTimeout"))
    })
    .await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
}
