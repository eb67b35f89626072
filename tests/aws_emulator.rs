//! The AWS provider against a real AWS API emulator (moto server from PyPI), over real HTTP:
//! create from scratch, a no-op resync makes zero mutating calls, one changed path is exactly
//! one mutating call, deleting every Ingress leaves zero tagged resources; `instance` targets
//! are the nodes' instances on the NodePort.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate::aws_command::{desired_stacks, reconcile, run_once, AwsRunOptions};
use tollgate::sources::manifest_dir::load_dir;
use tollgate::{BuildOptions, Grouping};
use tollgate_aws::alb_stack::AlbLimits;
use tollgate_aws::aws_api::Aws;
use tollgate_aws::plan::{plan, Plan};

const CLUSTER: &str = "emu";

/// A moto server on a free loopback port, stopped on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let out = Command::new("bash")
        .arg("localstack/install-moto.sh")
        .output()
        .expect("run install-moto.sh");
    assert!(
        out.status.success(),
        "installing moto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(format!("{venv}/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_ACM_VALIDATION_WAIT", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    moto
}

fn test_credentials() {
    // Same values in every test: setting them concurrently is harmless.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");
}

/// A VPC with two tagged subnets in two AZs and `nodes` instances; returns the instances'
/// provider IDs.
async fn seed(endpoint: &str, nodes: usize) -> Vec<String> {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("vpc");
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let mut subnets = Vec::new();
    for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.0.{i}.0/24"))
            .availability_zone(*az)
            .send()
            .await
            .expect("subnet");
        let id = s
            .subnet()
            .and_then(|s| s.subnet_id())
            .expect("subnet id")
            .to_string();
        let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
        ec2.create_tags()
            .resources(&id)
            .tags(tag(&format!("kubernetes.io/cluster/{CLUSTER}"), "shared"))
            .tags(tag("kubernetes.io/role/elb", "1"))
            .tags(tag("kubernetes.io/role/internal-elb", "1"))
            .send()
            .await
            .expect("tags");
        subnets.push((id, az.to_string()));
    }
    let image = ec2
        .describe_images()
        .send()
        .await
        .ok()
        .and_then(|r| {
            r.images()
                .first()
                .and_then(|i| i.image_id())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "ami-12345678".into());
    let mut provider_ids = Vec::new();
    for n in 0..nodes {
        let (subnet, az) = &subnets[n % subnets.len()];
        let r = ec2
            .run_instances()
            .image_id(&image)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .send()
            .await
            .expect("instance");
        let id = r
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .expect("instance id")
            .to_string();
        provider_ids.push(format!("aws:///{az}/{id}"));
    }
    provider_ids
}

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, ports: [{name: http, port: 80, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.0.11], conditions: {ready: true}}
- {addresses: [10.0.1.12], conditions: {ready: true}}
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 9000}]
endpoints:
- {addresses: [10.0.0.21], conditions: {ready: true}}
"#;

fn shop(api_path: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, annotations: {{alb.ingress.kubernetes.io/group.name: shop, alb.ingress.kubernetes.io/scheme: internet-facing}}}}
spec:
  ingressClassName: tollgate
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
      - {{path: {api_path}, pathType: Prefix, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: admin, annotations: {{alb.ingress.kubernetes.io/group.name: shop}}}}
spec:
  ingressClassName: tollgate
  rules:
  - host: admin.example.com
    http: {{paths: [{{path: /, pathType: Exact, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}]}}
"#
    )
}

fn options(dir: &Path, endpoint: &str) -> AwsRunOptions {
    AwsRunOptions {
        source: tollgate::sources::SourceSpec::Manifests(dir.to_path_buf()),
        build: BuildOptions {
            grouping: Grouping::ByIngressGroup,
            ..BuildOptions::default()
        },
        cluster: CLUSTER.into(),
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        limits: AlbLimits::default(),
        resync: Duration::from_secs(300),
        admin_listen: None,
    }
}

/// Observes AWS afresh and reconciles once; returns (mutating calls, changes planned).
async fn fresh_reconcile(opts: &AwsRunOptions) -> (u64, usize, bool) {
    let tollgate::sources::SourceSpec::Manifests(dir) = &opts.source else {
        panic!("manifest source expected");
    };
    let (snapshot, _) = load_dir(dir).expect("manifests");
    let aws = Aws::connect(
        &opts.cluster,
        opts.endpoint.as_deref(),
        opts.region.as_deref(),
    )
    .await;
    let mut inv = aws.observe().await.expect("observe");
    let r = reconcile(&aws, &mut inv, &snapshot, opts).await;
    (aws.calls.mutating(), r.changes_applied, r.converged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_resync_change_and_delete() {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("shop.yaml"), shop("/api")).unwrap();
    let opts = options(dir.path(), &moto.endpoint);

    // From scratch.
    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(inv.load_balancers.len(), 1);
    let lb = &inv.load_balancers[0];
    assert!(!lb.dns_name.is_empty(), "the DNS name for Ingress status");
    assert_eq!(lb.listeners.len(), 1);
    assert_eq!(
        lb.listeners[0].rules.len(),
        3,
        "{:#?}",
        lb.listeners[0].rules
    );
    assert_eq!(inv.target_groups.len(), 2);
    assert!(inv.target_groups.iter().any(|t| t.spec.targets
        == vec![
            ("10.0.0.11".to_string(), 8080),
            ("10.0.1.12".to_string(), 8080)
        ]));

    // What AWS holds now, read back through the API, is exactly what is desired.
    let (mutating, planned, converged) = fresh_reconcile(&opts).await;
    assert_eq!(
        (mutating, planned),
        (0, 0),
        "a no-op resync makes no mutating call"
    );
    assert!(converged);

    // One changed path: exactly one mutating call.
    std::fs::write(dir.path().join("shop.yaml"), shop("/apis")).unwrap();
    let (mutating, planned, converged) = fresh_reconcile(&opts).await;
    assert_eq!((mutating, planned), (1, 1), "one path changed");
    assert!(converged);
    let (mutating, _, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0);

    // Every Ingress gone: nothing tagged is left.
    std::fs::remove_file(dir.path().join("shop.yaml")).unwrap();
    let (_, _, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    let aws = Aws::connect(CLUSTER, Some(&moto.endpoint), Some("us-east-1")).await;
    let left = aws.observe().await.expect("observe");
    assert!(
        left.load_balancers.is_empty() && left.target_groups.is_empty(),
        "{left:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_targets_are_nodes_on_the_node_port() {
    test_credentials();
    let moto = start_moto();
    let provider_ids = seed(&moto.endpoint, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let nodes: String = provider_ids
        .iter()
        .enumerate()
        .map(|(i, p)| format!("---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{i}}}\nspec: {{providerID: '{p}'}}\nstatus: {{conditions: [{{type: Ready, status: 'True'}}]}}\n"))
        .collect();
    std::fs::write(dir.path().join("nodes.yaml"), nodes).unwrap();
    std::fs::write(
        dir.path().join("ing.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: inst, annotations: {alb.ingress.kubernetes.io/target-type: instance}}\nspec:\n  ingressClassName: tollgate\n  rules: [{host: i.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n",
    )
    .unwrap();
    let (r, inv) = run_once(&options(dir.path(), &moto.endpoint))
        .await
        .expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(inv.target_groups.len(), 1);
    let tg = &inv.target_groups[0].spec;
    assert_eq!(tg.target_type, "instance");
    let mut want: Vec<(String, u16)> = provider_ids
        .iter()
        .map(|p| (p.rsplit('/').next().unwrap_or_default().to_string(), 30080))
        .collect();
    want.sort();
    assert_eq!(tg.targets, want);
}

/// Empties the emulator (moto's reset endpoint).
fn reset_moto(endpoint: &str) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect moto");
    let _ = s.write_all(format!("POST /moto-api/reset HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "moto reset: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_call_resumes_without_duplicates() {
    test_credentials();
    let moto = start_moto();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("shop.yaml"), shop("/api")).unwrap();
    let opts = options(dir.path(), &moto.endpoint);
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let (stacks, _) = desired_stacks(&snapshot, &opts);
    let cold = plan(&stacks, &Default::default());
    assert!(cold.changes.len() >= 8, "{cold}");
    for k in 1..cold.changes.len() {
        reset_moto(&moto.endpoint);
        seed(&moto.endpoint, 0).await;
        // The first process dies after k calls...
        let aws = Aws::connect(CLUSTER, Some(&moto.endpoint), Some("us-east-1")).await;
        let mut inv = aws.observe().await.expect("observe");
        let partial = Plan {
            changes: cold.changes[..k].to_vec(),
            diagnostics: vec![],
        };
        let failures = aws.apply(&partial, &stacks, &mut inv).await;
        assert!(failures.is_empty(), "k={k}: {failures:#?}");
        // ...and the next one adopts what exists by its tags and finishes the job.
        let (r, inv) = run_once(&opts).await.expect("resume");
        assert!(r.converged, "k={k}: {:#?}", r.diagnostics);
        assert_eq!(inv.load_balancers.len(), 1, "k={k}: one load balancer");
        assert_eq!(inv.target_groups.len(), 2, "k={k}: two target groups");
        assert_eq!(inv.load_balancers[0].listeners.len(), 1, "k={k}");
        assert_eq!(
            inv.load_balancers[0].listeners[0].rules.len(),
            3,
            "k={k}: no duplicate rules"
        );
    }
}
