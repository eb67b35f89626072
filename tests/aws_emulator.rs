//! The AWS provider against a real AWS API emulator (moto server from PyPI), over real HTTP:
//! create from scratch, a no-op resync makes zero mutating calls, one changed path is exactly
//! one mutating call, deleting every Ingress leaves zero tagged resources; `instance` targets
//! are the nodes' instances on the NodePort.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

mod support;

use support::moto::{seed, start_moto, test_credentials};
use tollgate::aws_command::{
    desired_stacks, reconcile, reconcile_changed, run_once, AwsRunOptions,
};
use tollgate::sources::manifest_dir::load_dir;
use tollgate::{BuildOptions, Grouping};
use tollgate_aws::alb_stack::AlbLimits;
use tollgate_aws::aws_api::Aws;
use tollgate_aws::plan::{plan, Plan};

const CLUSTER: &str = "emu";

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
        vpc_id: None,
        limits: AlbLimits::default(),
        resync: Duration::from_secs(300),
        full_resync: Duration::from_secs(3600),
        admin_listen: None,
        // The emulator is not AWS: no need to pace it (the bucket has its own unit test).
        pace: tollgate_aws::api_pacing::Pace {
            per_second: 0.0,
            burst: 0,
        },
        readiness_gate_timeout: tollgate::readiness_gate::DEFAULT_TIMEOUT,
    }
}

/// Observes AWS afresh and reconciles once; returns (mutating calls, changes planned).
async fn fresh_reconcile(opts: &AwsRunOptions) -> (u64, usize, bool) {
    let tollgate::sources::SourceSpec::Manifests(dir) = &opts.source else {
        panic!("manifest source expected");
    };
    let (snapshot, _) = load_dir(dir).expect("manifests");
    let aws = opts.connect().await;
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

    // The periodic resync: one tag look-up while nothing moved...
    let aws = Aws::connect(CLUSTER, Some(&moto.endpoint), Some("us-east-1")).await;
    let mut inv = aws.observe().await.expect("observe");
    let kept = inv.clone();
    let before = aws.calls.snapshot();
    assert!(
        !aws.resync(&mut inv).await.expect("resync"),
        "nothing moved"
    );
    assert_eq!(inv, kept);
    let after = aws.calls.snapshot();
    let made: Vec<_> = after
        .iter()
        .filter(|(op, n)| before.get(*op) != Some(*n))
        .map(|(op, _)| *op)
        .collect();
    assert_eq!(made, ["GetResources"]);
    // ...and a full re-read when someone deleted the load balancer, which is then rebuilt.
    aws.elbv2
        .delete_load_balancer()
        .load_balancer_arn(&inv.load_balancers[0].arn)
        .send()
        .await
        .expect("delete behind Tollgate's back");
    assert!(aws.resync(&mut inv).await.expect("resync"), "the set moved");
    assert!(inv.load_balancers.is_empty());
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let r = reconcile(&aws, &mut inv, &snapshot, &opts).await;
    assert!(r.converged, "{:#?}", r.diagnostics);
    let (mutating, _, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0, "rebuilt as desired");

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

/// Empties the emulator (moto's reset endpoint). A loaded machine has been seen to drop the
/// connection before the answer: the reset is idempotent, so it is tried again.
fn reset_moto(endpoint: &str) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut out = String::new();
    for _ in 0..5 {
        out.clear();
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = s.write_all(format!("POST /moto-api/reset HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        let _ = s.read_to_string(&mut out);
        if out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200") {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("moto reset failed: {out:?}");
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
            blocked_stacks: Default::default(),
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

/// A self-signed certificate for `host` (its common name and only SAN, so ACM's domain
/// name is the host), as (cert PEM, key PEM).
fn certificate_for(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

/// Imports a certificate someone else manages (untagged) into the emulator's ACM.
async fn import_foreign(aws: &Aws, host: &str) -> String {
    let (cert, key) = certificate_for(host);
    aws.acm
        .import_certificate()
        .certificate(aws_sdk_acm::primitives::Blob::new(cert))
        .private_key(aws_sdk_acm::primitives::Blob::new(key))
        .send()
        .await
        .expect("import")
        .certificate_arn()
        .expect("arn")
        .to_string()
}

fn tls_ingresses(with_secret: bool) -> String {
    let secure = if with_secret {
        "  tls: [{hosts: [secure.example.com], secretName: secure-tls}]\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: store, annotations: {{alb.ingress.kubernetes.io/group.name: tls}}}}
spec:
  ingressClassName: tollgate
  tls: [{{hosts: [shop.example.com, other.example.com]}}]
  rules:
  - host: shop.example.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
  - host: other.example.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: secure, annotations: {{alb.ingress.kubernetes.io/group.name: tls}}}}
spec:
  ingressClassName: tollgate
{secure}  rules:
  - host: secure.example.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}]}}
"#
    )
}

/// The `secure-tls` Secret (a certificate for secure.example.com) and the two TLS Ingresses
/// of group `tls`.
fn write_tls_case(dir: &Path) {
    let (cert, key) = certificate_for("secure.example.com");
    std::fs::write(
        dir.join("secret.yaml"),
        support::tls_secret("secure-tls", &cert, &key),
    )
    .unwrap();
    std::fs::write(dir.join("tls.yaml"), tls_ingresses(true)).unwrap();
}

/// The HTTPS listener's certificates (default first) as AWS reports them.
async fn https_certificates(opts: &AwsRunOptions) -> Vec<String> {
    let inv = opts.connect().await.observe().await.expect("observe");
    inv.load_balancers
        .iter()
        .flat_map(|lb| &lb.listeners)
        .find(|l| l.port == 443)
        .map(|l| l.certificates.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acm_discovery_and_secret_import_rotation_and_cleanup() {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let aws = Aws::connect(CLUSTER, Some(&moto.endpoint), Some("us-east-1")).await;
    let wildcard = import_foreign(&aws, "*.example.com").await;
    let exact = import_foreign(&aws, "shop.example.com").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    write_tls_case(dir.path());
    let opts = options(dir.path(), &moto.endpoint);

    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    // The Secret is imported once, tagged with its name and fingerprint.
    assert_eq!(inv.imported_certificates.len(), 1, "{inv:#?}");
    let imported = inv.imported_certificates[0].clone();
    assert_eq!(imported.secret, "default/secure-tls");
    // shop.example.com: the exact certificate beats the wildcard; other.example.com: the
    // wildcard; secure.example.com: the import.
    let mut certs = https_certificates(&opts).await;
    certs.sort();
    let mut want = vec![wildcard.clone(), exact.clone(), imported.arn.clone()];
    want.sort();
    assert_eq!(certs, want);
    let (mutating, _, converged) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0, "a no-op resync");
    assert!(converged);

    // The Secret rotates: re-imported under the same ARN (listeners untouched), fingerprint
    // tag updated — two calls, nothing else.
    let (cert2, key2) = certificate_for("secure.example.com");
    std::fs::write(
        dir.path().join("secret.yaml"),
        support::tls_secret("secure-tls", &cert2, &key2),
    )
    .unwrap();
    let (mutating, planned, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!((mutating, planned), (2, 1), "re-import + tag");
    let served = aws
        .acm
        .get_certificate()
        .certificate_arn(&imported.arn)
        .send()
        .await
        .expect("get certificate");
    assert_eq!(
        served.certificate().map(str::trim),
        Some(cert2.trim()),
        "ACM serves the rotated certificate"
    );
    assert_eq!(https_certificates(&opts).await.len(), 3);

    // The Secret no longer used: off the listener, then deleted from ACM.
    std::fs::write(dir.path().join("tls.yaml"), tls_ingresses(false)).unwrap();
    let (_, _, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    let mut certs = https_certificates(&opts).await;
    certs.sort();
    let mut want = vec![wildcard.clone(), exact.clone()];
    want.sort();
    assert_eq!(certs, want);
    let left = aws.observe().await.expect("observe");
    assert!(left.imported_certificates.is_empty(), "{left:#?}");
    let listed = aws.acm.list_certificates().send().await.expect("list");
    assert_eq!(
        listed.certificate_summary_list().len(),
        2,
        "only the two foreign certificates remain"
    );

    // Every Ingress gone: nothing tagged left, foreign certificates untouched.
    std::fs::remove_file(dir.path().join("tls.yaml")).unwrap();
    let (_, _, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    let left = aws.observe().await.expect("observe");
    assert!(left.load_balancers.is_empty() && left.target_groups.is_empty());
    let listed = aws.acm.list_certificates().send().await.expect("list");
    assert_eq!(listed.certificate_summary_list().len(), 2);
}

/// `actions.*` and `conditions.*` annotations become ALB actions and conditions, and read
/// back from the emulator as the same rules (a no-op resync makes no call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_actions_and_conditions() {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        dir.path().join("alb.yaml"),
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: alb
  annotations:
    alb.ingress.kubernetes.io/actions.ssl-redirect: '{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}'
    alb.ingress.kubernetes.io/actions.maintenance: '{"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"503","messageBody":"down"}}'
    alb.ingress.kubernetes.io/actions.canary: '{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"web","servicePort":"80","weight":10},{"serviceName":"api","servicePort":80,"weight":90}],"targetGroupStickinessConfig":{"enabled":true,"durationSeconds":60}}}'
    alb.ingress.kubernetes.io/conditions.api: '[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X-Beta","values":["yes"]}},{"field":"query-string","queryStringConfig":{"values":[{"key":"beta","value":"1"}]}},{"field":"source-ip","sourceIpConfig":{"values":["10.0.0.0/8"]}}]'
spec:
  ingressClassName: tollgate
  rules:
  - host: alb.example.com
    http:
      paths:
      - {path: /old, pathType: Prefix, backend: {service: {name: ssl-redirect, port: {name: use-annotation}}}}
      - {path: /down, pathType: Exact, backend: {service: {name: maintenance, port: {name: use-annotation}}}}
      - {path: /canary, pathType: Prefix, backend: {service: {name: canary, port: {name: use-annotation}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#,
    )
    .unwrap();
    let opts = options(dir.path(), &moto.endpoint);
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);

    let aws = Aws::connect(CLUSTER, Some(&moto.endpoint), Some("us-east-1")).await;
    let inv = aws.observe().await.expect("observe");
    let rules: Vec<String> = inv.load_balancers[0].listeners[0]
        .rules
        .iter()
        .map(|r| format!("{:?}", r.content))
        .collect();
    let text = rules.join("\n");
    for want in [
        "Redirect { protocol: \"HTTPS\", port: \"443\"",
        "FixedResponse { status_code: \"503\"",
        "stickiness_seconds: Some(60)",
        "HttpHeader(\"x-beta\", [\"yes\"])",
        "QueryString([(Some(\"beta\"), \"1\")])",
        "SourceIp([\"10.0.0.0/8\"])",
    ] {
        assert!(text.contains(want), "no {want} in\n{text}");
    }
    // Two target groups with the canary's weights.
    assert!(
        rules
            .iter()
            .any(|r| r.contains(", 10)") && r.contains(", 90)")),
        "{text}"
    );
    let (mutating, planned, converged) = fresh_reconcile(&opts).await;
    assert_eq!((mutating, planned), (0, 0), "read back as desired:\n{text}");
    assert!(converged);

    // Six condition values in one rule (host, path, source, two header values, query): AWS
    // rejects that rule (5 per rule; moto takes it, the strict proxy does not). Tollgate
    // leaves the route out and says why, and the rest converges.
    let six = std::fs::read_to_string(dir.path().join("alb.yaml"))
        .unwrap()
        .replace(r#""values":["yes"]"#, r#""values":["yes","true"]"#);
    std::fs::write(dir.path().join("alb.yaml"), six).unwrap();
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.contains("ALB allows 5 per rule")),
        "{:#?}",
        r.diagnostics
    );
    assert!(moto.violations().is_empty(), "{:?}", moto.violations());
}

fn networked(annotations: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: net
  annotations: {{alb.ingress.kubernetes.io/scheme: internet-facing, {annotations}}}
spec:
  ingressClassName: tollgate
  rules:
  - host: net.example.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
"#
    )
}

/// Creates a subnet or security group outside Tollgate, named by a `Name` tag.
async fn named_resource(aws: &Aws, kind: &str, name: &str) -> String {
    let vpc = aws
        .ec2
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values("emu-us-east-1a")
                .build(),
        )
        .send()
        .await
        .expect("subnets")
        .subnets()
        .iter()
        .find_map(|s| s.vpc_id().map(str::to_string))
        .expect("a seeded VPC");
    let id = if kind == "subnet" {
        let s = aws
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block("10.0.9.0/24")
            .availability_zone("us-east-1c")
            .send()
            .await
            .expect("subnet");
        s.subnet()
            .and_then(|s| s.subnet_id())
            .expect("id")
            .to_string()
    } else {
        let g = aws
            .ec2
            .create_security_group()
            .group_name(format!("{name}-group"))
            .description("test")
            .vpc_id(&vpc)
            .send()
            .await
            .expect("security group");
        g.group_id().expect("id").to_string()
    };
    aws.ec2
        .create_tags()
        .resources(&id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("Name")
                .value(name)
                .build(),
        )
        .send()
        .await
        .expect("tag");
    id
}

/// The managed security group (created, opened to `inbound-cidrs`, narrowed in place,
/// deleted when replaced by given groups), subnets and security groups by `Name` tag, and
/// the IP address type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_subnets_and_ip_address_type() {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let aws = Aws::connect(CLUSTER, Some(&moto.endpoint), Some("us-east-1")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("net.yaml"), networked("")).unwrap();
    let opts = options(dir.path(), &moto.endpoint);

    // Nothing said: a managed security group open on the listener port to everyone.
    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(inv.security_groups.len(), 1, "{inv:#?}");
    let managed = inv.security_groups[0].clone();
    assert_eq!(managed.ingress, vec![(80, "0.0.0.0/0".to_string())]);
    let observed = aws.observe().await.expect("observe");
    assert_eq!(
        observed.security_groups, inv.security_groups,
        "read back as recorded"
    );
    // The load balancer also carries the cluster's backend group, which its targets admit.
    let backend = observed
        .backend_security_group
        .clone()
        .expect("backend security group");
    let mut both = vec![managed.id.clone(), backend.id.clone()];
    both.sort();
    assert_eq!(observed.load_balancers[0].security_groups, both);
    assert_eq!(observed.load_balancers[0].subnets.len(), 2);
    let (mutating, _, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0);

    // inbound-cidrs: one authorize, one revoke; the group and the load balancer stay.
    std::fs::write(
        dir.path().join("net.yaml"),
        networked("alb.ingress.kubernetes.io/inbound-cidrs: '10.0.0.0/8, 2001:db8::/32'"),
    )
    .unwrap();
    let (mutating, planned, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!((mutating, planned), (2, 2));
    let observed = aws.observe().await.expect("observe");
    assert_eq!(
        observed.security_groups[0].ingress,
        vec![
            (80, "10.0.0.0/8".to_string()),
            (80, "2001:db8::/32".to_string())
        ]
    );

    // Given security groups and subnets by Name tag, and dual-stack: the load balancer is
    // moved in place and the managed group deleted.
    let web_sg = named_resource(&aws, "sg", "web-sg").await;
    let extra = named_resource(&aws, "subnet", "extra").await;
    std::fs::write(
        dir.path().join("net.yaml"),
        networked("alb.ingress.kubernetes.io/security-groups: web-sg, alb.ingress.kubernetes.io/subnets: 'emu-us-east-1a, extra', alb.ingress.kubernetes.io/ip-address-type: dualstack"),
    )
    .unwrap();
    let (_, _, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    let observed = aws.observe().await.expect("observe");
    let lb = &observed.load_balancers[0];
    assert_eq!(lb.security_groups, vec![web_sg]);
    assert!(
        lb.subnets.contains(&extra) && lb.subnets.len() == 2,
        "{:?}",
        lb.subnets
    );
    assert_eq!(lb.ip_address_type, "dualstack");
    assert!(observed.security_groups.is_empty(), "managed group deleted");
    assert!(
        observed.backend_security_group.is_none(),
        "no load balancer carries the backend group any more: deleted"
    );
    let (mutating, _, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0, "settled");

    // An unknown name: reported, the load balancer keeps what it has.
    std::fs::write(
        dir.path().join("net.yaml"),
        networked("alb.ingress.kubernetes.io/security-groups: no-such-group"),
    )
    .unwrap();
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let mut inv = aws.observe().await.expect("observe");
    // As the run loop reconciles: stacks AWS matches are not planned again (issue 16), but
    // one its plan reports on must keep being reported.
    let mut settled = tollgate::aws_command::SettledStacks::default();
    let build = || tollgate::LastKnownGood::default().build(&snapshot, &opts.build);
    let r = reconcile_changed(&aws, &mut inv, build(), &opts, &mut settled).await;
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.contains("no-such-group")),
        "{:#?}",
        r.diagnostics
    );
    // Not asked again on every reconcile; still reported.
    let before = aws.calls.snapshot();
    let r = reconcile_changed(&aws, &mut inv, build(), &opts, &mut settled).await;
    assert!(r
        .diagnostics
        .iter()
        .any(|d| d.message.contains("no-such-group")));
    assert_eq!(
        aws.calls.snapshot().get("DescribeSecurityGroups"),
        before.get("DescribeSecurityGroups"),
        "a missing name is not looked up again before the next resync"
    );

    // Gone: nothing tagged left, the given group untouched.
    std::fs::remove_file(dir.path().join("net.yaml")).unwrap();
    let (_, _, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    let left = aws.observe().await.expect("observe");
    assert!(left.load_balancers.is_empty() && left.security_groups.is_empty());
    assert!(left.backend_security_group.is_none());
}

/// Reconciles (observing afresh each time) until converged; returns the rounds it took.
async fn converge(opts: &AwsRunOptions, max_rounds: usize) -> usize {
    for round in 1..=max_rounds {
        let (_, _, converged) = fresh_reconcile(opts).await;
        if converged {
            return round;
        }
    }
    panic!("not converged after {max_rounds} rounds");
}

/// Everything in the emulator, tagged or not: (load balancers, target groups, rules,
/// certificates, security groups named like Tollgate's).
async fn census(endpoint: &str) -> (usize, usize, usize, usize, usize) {
    let aws = Aws::connect(CLUSTER, Some(endpoint), Some("us-east-1")).await;
    let lbs = aws
        .elbv2
        .describe_load_balancers()
        .send()
        .await
        .expect("lbs");
    let mut rules = 0;
    for lb in lbs.load_balancers() {
        let ls = aws
            .elbv2
            .describe_listeners()
            .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
            .send()
            .await
            .expect("listeners");
        for l in ls.listeners() {
            let rs = aws
                .elbv2
                .describe_rules()
                .listener_arn(l.listener_arn().unwrap_or_default())
                .send()
                .await
                .expect("rules");
            rules += rs
                .rules()
                .iter()
                .filter(|r| r.is_default() != Some(true))
                .count();
        }
    }
    let tgs = aws
        .elbv2
        .describe_target_groups()
        .send()
        .await
        .expect("tgs");
    let certs = aws.acm.list_certificates().send().await.expect("certs");
    let sgs = aws
        .ec2
        .describe_security_groups()
        .send()
        .await
        .expect("sgs");
    let ours = sgs
        .security_groups()
        .iter()
        .filter(|g| g.group_name().is_some_and(|n| n.starts_with("k8s-")))
        .count();
    (
        lbs.load_balancers().len(),
        tgs.target_groups().len(),
        rules,
        certs.certificate_summary_list().len(),
        ours,
    )
}

/// 30% of AWS calls fail — throttled before the emulator sees them, or a 5xx after it acted
/// (the SDK retries and meets its own earlier success). Tollgate still converges, with no
/// duplicate and, after every Ingress is deleted, nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_without_duplicates_or_leaks_when_30_percent_of_calls_fail() {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let aws = Aws::connect(CLUSTER, Some(&moto.endpoint), Some("us-east-1")).await;
    import_foreign(&aws, "*.example.com").await;
    let faults = support::fault_proxy::start_fault_proxy(&moto.endpoint, 300, 0x5eed).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("shop.yaml"), shop("/api")).unwrap();
    write_tls_case(dir.path());
    let opts = options(dir.path(), &faults.endpoint);

    let rounds = converge(&opts, 20).await;
    let injected = faults.injected.load(std::sync::atomic::Ordering::SeqCst);
    assert!(injected > 10, "faults were injected ({injected})");
    println!("converged in {rounds} rounds with {injected} injected failures");

    // Without faults: nothing to do, and exactly one of everything.
    faults.set_enabled(false);
    let (mutating, planned, converged) = fresh_reconcile(&opts).await;
    assert_eq!((mutating, planned), (0, 0));
    assert!(converged);
    let (lbs, tgs, rules, certs, sgs) = census(&moto.endpoint).await;
    assert_eq!(lbs, 2, "load balancers: group shop and group tls");
    assert_eq!(tgs, 4, "target groups: web and api in each load balancer");
    assert_eq!(
        rules,
        3 + 3 + 3,
        "shop: 3 rules; tls: 3 on HTTP, 3 on HTTPS"
    );
    assert_eq!(
        certs, 2,
        "the foreign wildcard and one import of the Secret"
    );
    assert_eq!(sgs, 2, "one managed security group per load balancer");

    // Delete everything, again through faults.
    faults.set_enabled(true);
    for f in ["shop.yaml", "tls.yaml", "secret.yaml"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    converge(&opts, 20).await;
    faults.set_enabled(false);
    let left = aws.observe().await.expect("observe");
    assert!(
        left.load_balancers.is_empty()
            && left.target_groups.is_empty()
            && left.imported_certificates.is_empty()
            && left.security_groups.is_empty(),
        "{left:#?}"
    );
    assert_eq!(
        census(&moto.endpoint).await,
        (0, 0, 0, 1, 0),
        "only the foreign certificate"
    );
}

/// Observes AWS afresh and reconciles `snapshot` built through `lkg`; returns the calls made
/// by operation and the reconcile's result.
async fn reconcile_with(
    opts: &AwsRunOptions,
    lkg: &mut tollgate::LastKnownGood,
) -> (
    std::collections::BTreeMap<&'static str, (u64, u64)>,
    tollgate::aws_command::Reconciled,
) {
    let tollgate::sources::SourceSpec::Manifests(dir) = &opts.source else {
        panic!("manifest source expected");
    };
    let (snapshot, _) = load_dir(dir).expect("manifests");
    let aws = opts.connect().await;
    let mut inv = aws.observe().await.expect("observe");
    let out = lkg.build(&snapshot, &opts.build);
    let r = tollgate::aws_command::reconcile_model(&aws, &mut inv, out, opts).await;
    (aws.calls.snapshot(), r)
}

/// A fresh emulator, and a manifest directory holding SERVICES and `shop` (`shop.yaml`).
async fn emulator_with_shop(shop: &str) -> (support::moto::Moto, tempfile::TempDir, AwsRunOptions) {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("shop.yaml"), shop).unwrap();
    let opts = options(dir.path(), &moto.endpoint);
    (moto, dir, opts)
}

fn mutating_ops(calls: &std::collections::BTreeMap<&'static str, (u64, u64)>) -> Vec<String> {
    calls
        .iter()
        .filter(|(op, (ok, err))| tollgate_aws::aws_api::is_mutating(op) && ok + err > 0)
        .map(|(op, _)| op.to_string())
        .collect()
}

/// A group whose members all turn invalid keeps its ALB: with the last valid version in
/// memory (served as it was: zero mutating calls), and after a restart with nothing in
/// memory (held: zero mutating calls, nothing deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_turned_invalid_keeps_its_load_balancer_also_after_a_restart() {
    let (_moto, dir, opts) = emulator_with_shop(&shop("/api")).await;
    let mut lkg = tollgate::LastKnownGood::default();
    let (_, r) = reconcile_with(&opts, &mut lkg).await;
    assert!(r.converged, "{:#?}", r.diagnostics);
    let aws = opts.connect().await;
    let before = aws.observe().await.expect("observe");
    assert_eq!(before.load_balancers.len(), 1);

    // Every member broken (a bad annotation value on each).
    let broken = shop("/api").replace(
        "alb.ingress.kubernetes.io/group.name: shop",
        "alb.ingress.kubernetes.io/group.name: shop, alb.ingress.kubernetes.io/group.order: many",
    );
    std::fs::write(dir.path().join("shop.yaml"), &broken).unwrap();
    let (calls, r) = reconcile_with(&opts, &mut lkg).await;
    assert_eq!(
        mutating_ops(&calls),
        Vec::<String>::new(),
        "served as before"
    );
    assert!(r
        .diagnostics
        .iter()
        .any(|d| d.reason == tollgate_contract::Reason::LastValidVersionServed));

    // A restart: nothing in memory. The stack is held, not deleted.
    let mut fresh = tollgate::LastKnownGood::default();
    let (calls, r) = reconcile_with(&opts, &mut fresh).await;
    assert_eq!(
        mutating_ops(&calls),
        Vec::<String>::new(),
        "held after a restart"
    );
    assert!(r.unconverged_stacks.contains("group/shop"));
    let after = aws.observe().await.expect("observe");
    assert_eq!(after.load_balancers.len(), 1);
    assert_eq!(after.load_balancers[0].arn, before.load_balancers[0].arn);
    assert_eq!(after.target_groups.len(), before.target_groups.len());

    // Fixed: reconciled as usual again (the same ALB).
    std::fs::write(dir.path().join("shop.yaml"), shop("/v2")).unwrap();
    let (_, r) = reconcile_with(&opts, &mut fresh).await;
    assert!(r.converged, "{:#?}", r.diagnostics);
    let fixed = aws.observe().await.expect("observe");
    assert_eq!(fixed.load_balancers[0].arn, before.load_balancers[0].arn);
}

/// A `tags` change reaches existing resources as AddTags/RemoveTags only, and never touches
/// a tag someone else set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_reconciled_in_place() {
    let with_tags = |tags: &str| {
        shop("/api").replace(
            "alb.ingress.kubernetes.io/scheme: internet-facing",
            &format!("alb.ingress.kubernetes.io/scheme: internet-facing, alb.ingress.kubernetes.io/tags: '{tags}'"),
        )
    };
    let (moto, dir, opts) = emulator_with_shop(&with_tags("team=a,env=prod")).await;
    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let lb_arn = inv.load_balancers[0].arn.clone();
    // Someone else's tag on our load balancer.
    let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&moto.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await,
    );
    elbv2
        .add_tags()
        .resource_arns(&lb_arn)
        .tags(
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key("cost-center")
                .value("42")
                .build(),
        )
        .send()
        .await
        .expect("foreign tag");

    std::fs::write(dir.path().join("shop.yaml"), with_tags("team=b,owner=x")).unwrap();
    let mut lkg = tollgate::LastKnownGood::default();
    let (calls, r) = reconcile_with(&opts, &mut lkg).await;
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(
        mutating_ops(&calls),
        ["AddTags", "RemoveTags"],
        "a tags change is AddTags/RemoveTags only"
    );
    let tags: std::collections::BTreeMap<String, String> = elbv2
        .describe_tags()
        .resource_arns(&lb_arn)
        .send()
        .await
        .expect("describe tags")
        .tag_descriptions()[0]
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(tags.get("team").map(String::as_str), Some("b"));
    assert_eq!(tags.get("owner").map(String::as_str), Some("x"));
    assert_eq!(tags.get("env"), None, "a dropped key is removed");
    assert_eq!(
        tags.get("cost-center").map(String::as_str),
        Some("42"),
        "others' tags stay"
    );
    assert_eq!(
        tags.get("tollgate.io/cluster").map(String::as_str),
        Some(CLUSTER)
    );
    // Converged: nothing more to do.
    let (calls, _) = reconcile_with(&opts, &mut lkg).await;
    assert_eq!(mutating_ops(&calls), Vec::<String>::new());
}

/// A scheme change cannot be made in place: it is refused with an Error naming both
/// schemes, and the ALB is left as it is (never silently kept as if applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheme_change_is_refused_with_an_error() {
    let (_moto, dir, opts) = emulator_with_shop(&shop("/api")).await;
    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(inv.load_balancers[0].scheme, "internet-facing");

    std::fs::write(
        dir.path().join("shop.yaml"),
        shop("/api").replace("scheme: internet-facing", "scheme: internal"),
    )
    .unwrap();
    let (r, inv) = run_once(&opts).await.expect("reconcile");
    let refused: Vec<_> = r
        .diagnostics
        .iter()
        .filter(|d| {
            d.severity == tollgate_contract::Severity::Error
                && d.message.contains("scheme internal")
        })
        .collect();
    assert_eq!(refused.len(), 1, "{:#?}", r.diagnostics);
    assert!(refused[0].message.contains("internet-facing"));
    assert_eq!(inv.load_balancers.len(), 1);
    assert_eq!(inv.load_balancers[0].scheme, "internet-facing");
}

/// A load balancer with deletion protection on whose Ingresses are deleted is not deleted
/// (nor are its target groups, still in use): a diagnostic says why, and its stack stays
/// unconverged so the Ingresses' finalizer is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_protection_is_reported_not_fought() {
    let (_moto, dir, opts) = emulator_with_shop(&shop("/api").replace(
            "alb.ingress.kubernetes.io/scheme: internet-facing",
            "alb.ingress.kubernetes.io/scheme: internet-facing, alb.ingress.kubernetes.io/load-balancer-attributes: deletion_protection.enabled=true",
        )).await;
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);

    std::fs::remove_file(dir.path().join("shop.yaml")).unwrap();
    let mut lkg = tollgate::LastKnownGood::default();
    let (calls, r) = reconcile_with(&opts, &mut lkg).await;
    assert_eq!(mutating_ops(&calls), Vec::<String>::new(), "{calls:?}");
    assert!(r.unconverged_stacks.contains("group/shop"));
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.subject.name == "group/shop" && d.message.contains("deletion protection")),
        "{:#?}",
        r.diagnostics
    );
    let aws = opts.connect().await;
    let left = aws.observe().await.expect("observe");
    assert_eq!(left.load_balancers.len(), 1);
    assert_eq!(left.target_groups.len(), 2);
}

/// Subnet discovery on an EKS-shaped VPC of today: role tags without the cluster tag, two
/// subnets in one Availability Zone, and a subnet tagged for another cluster. The ALB gets
/// one subnet per zone (the lowest ID), never the other cluster's — which the emulator would
/// accept, and AWS would reject (two subnets in one zone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_are_discovered_as_eks_tags_them() {
    test_credentials();
    let moto = start_moto();
    let (ec2, vpc) = emulator_vpc(&moto.endpoint, "10.1.0.0/16").await;
    let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
    let mut ids = std::collections::BTreeMap::new();
    for (name, cidr, az, other_cluster) in [
        ("a1", "10.1.1.0/24", "us-east-1a", false),
        ("a2", "10.1.2.0/24", "us-east-1a", false),
        ("b1", "10.1.3.0/24", "us-east-1b", false),
        ("c-other", "10.1.4.0/24", "us-east-1c", true),
        ("d1", "10.1.5.0/24", "us-east-1d", false),
    ] {
        let id = create_subnet(&ec2, &vpc, cidr, az).await;
        let mut req = ec2
            .create_tags()
            .resources(&id)
            .tags(tag("kubernetes.io/role/elb", "1"));
        if other_cluster {
            req = req.tags(tag("kubernetes.io/cluster/someone-else", "shared"));
        }
        req.send().await.expect("tags");
        ids.insert(name, id);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("shop.yaml"), shop("/api")).unwrap();
    let opts = options(dir.path(), &moto.endpoint);
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let inv = opts.connect().await.observe().await.expect("observe");
    let in_a = if ids["a1"] < ids["a2"] {
        &ids["a1"]
    } else {
        &ids["a2"]
    };
    let mut want = vec![in_a.clone(), ids["b1"].clone(), ids["d1"].clone()];
    want.sort();
    assert_eq!(inv.load_balancers[0].subnets, want);
}

/// No subnet carries a role tag or the cluster tag (a VPC built by hand or by older
/// tooling): with `--aws-vpc-id`, subnets are chosen by their route tables, as the AWS Load
/// Balancer Controller does since v2.12.1 — internet-facing ALBs in the subnets whose route
/// table reaches an internet gateway, internal ones in the others (main table included),
/// never in another VPC (moto's default VPC has public subnets in every zone). Without the
/// VPC the error says what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_are_found_by_route_table_without_role_tags() {
    test_credentials();
    let moto = start_moto();
    let (ec2, vpc) = emulator_vpc(&moto.endpoint, "10.2.0.0/16").await;
    let igw = ec2
        .create_internet_gateway()
        .send()
        .await
        .expect("igw")
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .expect("igw id")
        .to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .expect("attach");
    let public_table = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .send()
        .await
        .expect("route table")
        .route_table()
        .and_then(|t| t.route_table_id())
        .expect("table id")
        .to_string();
    ec2.create_route()
        .route_table_id(&public_table)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .expect("route");
    let mut ids = std::collections::BTreeMap::new();
    for (name, cidr, az, public) in [
        ("pub-a", "10.2.1.0/24", "us-east-1a", true),
        ("pub-b", "10.2.2.0/24", "us-east-1b", true),
        ("priv-a", "10.2.3.0/24", "us-east-1a", false),
        ("priv-b", "10.2.4.0/24", "us-east-1b", false),
    ] {
        let id = create_subnet(&ec2, &vpc, cidr, az).await;
        if public {
            ec2.associate_route_table()
                .route_table_id(&public_table)
                .subnet_id(&id)
                .send()
                .await
                .expect("associate");
        }
        ids.insert(name, id);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("shop.yaml"), shop("/api")).unwrap();
    std::fs::write(
        dir.path().join("internal.yaml"),
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: back-office, annotations: {alb.ingress.kubernetes.io/group.name: office, alb.ingress.kubernetes.io/scheme: internal}}
spec:
  ingressClassName: tollgate
  rules:
  - host: office.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"#,
    )
    .unwrap();

    let mut opts = options(dir.path(), &moto.endpoint);
    let (r, _) = run_once(&opts).await.expect("run");
    assert!(
        !r.converged,
        "no role tag and no VPC: nothing to place the ALBs in"
    );
    let said = format!("{:?}", r.diagnostics);
    assert!(
        said.contains("--aws-vpc-id"),
        "the error says what to set: {said}"
    );

    opts.vpc_id = Some(vpc.clone());
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let inv = opts.connect().await.observe().await.expect("observe");
    assert_eq!(inv.load_balancers.len(), 2, "{inv:#?}");
    for lb in &inv.load_balancers {
        let (want, what) = if lb.scheme == "internal" {
            (
                vec![ids["priv-a"].clone(), ids["priv-b"].clone()],
                "internal",
            )
        } else {
            (
                vec![ids["pub-a"].clone(), ids["pub-b"].clone()],
                "internet-facing",
            )
        };
        let mut want = want;
        want.sort();
        let mut got = lb.subnets.clone();
        got.sort();
        assert_eq!(got, want, "{what} ALB");
    }
    let (mutating, _, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0, "a resync changes nothing");
}

/// `path: /*` and `/api/*` with `ImplementationSpecific`, as the AWS Load Balancer
/// Controller's documentation writes them, reach ALB as they are, in the order listed (that
/// controller's order since v2.4.3: `/*` listed first takes `/api/...` too, there as here);
/// a resync changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alb_controller_style_path_patterns_reach_alb_as_written() {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        dir.path().join("ingress.yaml"),
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ingress-2048, annotations: {alb.ingress.kubernetes.io/scheme: internet-facing}}
spec:
  ingressClassName: tollgate
  rules:
  - http:
      paths:
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /api/*, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
"#,
    )
    .unwrap();
    let opts = options(dir.path(), &moto.endpoint);
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let aws = opts.connect().await;
    let lbs = aws
        .elbv2
        .describe_load_balancers()
        .send()
        .await
        .expect("lbs");
    assert_eq!(lbs.load_balancers().len(), 1);
    let ls = aws
        .elbv2
        .describe_listeners()
        .load_balancer_arn(
            lbs.load_balancers()[0]
                .load_balancer_arn()
                .unwrap_or_default(),
        )
        .send()
        .await
        .expect("listeners");
    let rs = aws
        .elbv2
        .describe_rules()
        .listener_arn(ls.listeners()[0].listener_arn().unwrap_or_default())
        .send()
        .await
        .expect("rules");
    let mut patterns: Vec<(i64, Vec<String>)> = rs
        .rules()
        .iter()
        .filter(|r| r.is_default() != Some(true))
        .map(|r| {
            let priority = r
                .priority()
                .and_then(|p| p.parse().ok())
                .unwrap_or(i64::MAX);
            let values = r
                .conditions()
                .iter()
                .filter(|c| c.field() == Some("path-pattern"))
                .flat_map(|c| {
                    c.path_pattern_config()
                        .map(|p| p.values().to_vec())
                        .unwrap_or_else(|| c.values().to_vec())
                })
                .collect();
            (priority, values)
        })
        .collect();
    patterns.sort();
    let in_order: Vec<Vec<String>> = patterns.into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        in_order,
        vec![vec!["/*".to_string()], vec!["/api/*".to_string()]]
    );
    let (mutating, _, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0, "a resync changes nothing");
}

/// Subnets an Ingress names are held to ALB's rules, which moto does not enforce: two in
/// one Availability Zone, or a single zone, is refused with the reason (and nothing is
/// created for that load balancer). Named subnets in a VPC where nothing is tagged for
/// discovery work: the target groups go in their VPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_subnets_follow_albs_rules_and_give_the_vpc() {
    test_credentials();
    let moto = start_moto();
    let (ec2, vpc) = emulator_vpc(&moto.endpoint, "10.3.0.0/16").await;
    let mut ids = std::collections::BTreeMap::new();
    for (name, cidr, az) in [
        ("a1", "10.3.1.0/24", "us-east-1a"),
        ("a2", "10.3.2.0/24", "us-east-1a"),
        ("b1", "10.3.3.0/24", "us-east-1b"),
    ] {
        let id = create_subnet(&ec2, &vpc, cidr, az).await;
        ids.insert(name, id);
    }
    let ingress = |subnets: &str| {
        format!(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, annotations: {{alb.ingress.kubernetes.io/scheme: internet-facing, alb.ingress.kubernetes.io/subnets: '{subnets}'}}}}
spec:
  ingressClassName: tollgate
  rules:
  - http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
"#
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let opts = options(dir.path(), &moto.endpoint);
    let aws = opts.connect().await;

    for (subnets, why) in [
        (
            format!("{}, {}", ids["a1"], ids["a2"]),
            "one subnet per Availability Zone",
        ),
        (ids["b1"].clone(), "at least two Availability Zones"),
    ] {
        std::fs::write(dir.path().join("web.yaml"), ingress(&subnets)).unwrap();
        let (r, _) = run_once(&opts).await.expect("run");
        assert!(!r.converged, "{subnets}");
        let said = format!("{:?}", r.diagnostics);
        assert!(said.contains(why), "{subnets}: {said}");
        let lbs = aws
            .elbv2
            .describe_load_balancers()
            .send()
            .await
            .expect("lbs");
        assert!(
            lbs.load_balancers().is_empty(),
            "{subnets}: no ALB AWS would refuse"
        );
    }

    std::fs::write(
        dir.path().join("web.yaml"),
        ingress(&format!("{}, {}", ids["a1"], ids["b1"])),
    )
    .unwrap();
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let tgs = aws
        .elbv2
        .describe_target_groups()
        .send()
        .await
        .expect("tgs");
    assert!(!tgs.target_groups().is_empty());
    for tg in tgs.target_groups() {
        assert_eq!(
            tg.vpc_id(),
            Some(vpc.as_str()),
            "target groups in the named subnets' VPC"
        );
    }
    let (mutating, _, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0, "a resync changes nothing");
}

/// An EC2 client on the emulator and a fresh VPC with `cidr`, nothing in it tagged.
async fn emulator_vpc(endpoint: &str, cidr: &str) -> (aws_sdk_ec2::Client, String) {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let vpc = ec2
        .create_vpc()
        .cidr_block(cidr)
        .send()
        .await
        .expect("vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    (ec2, vpc)
}

/// A subnet of `vpc` in zone `az`; its ID.
async fn create_subnet(ec2: &aws_sdk_ec2::Client, vpc: &str, cidr: &str, az: &str) -> String {
    ec2.create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .availability_zone(az)
        .send()
        .await
        .expect("subnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_string()
}

/// A forward to a target group made outside Kubernetes, by ARN or by name (the AWS Load
/// Balancer Controller's `targetGroupARN` and `targetGroupName`, its documented way to send part of a path space to a
/// legacy application): the rule forwards to it as it is, a resync changes nothing, and
/// deleting the Ingress leaves that target group alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_group_named_by_arn_is_used_as_it_is_and_never_deleted() {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let aws = Aws::connect(CLUSTER, Some(&moto.endpoint), Some("us-east-1")).await;
    let vpc = aws
        .ec2
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:kubernetes.io/role/elb")
                .values("1")
                .build(),
        )
        .send()
        .await
        .expect("subnets")
        .subnets()
        .first()
        .and_then(|s| s.vpc_id())
        .expect("vpc")
        .to_string();
    let legacy = aws
        .elbv2
        .create_target_group()
        .name("legacy-app")
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(8080)
        .vpc_id(vpc)
        .send()
        .await
        .expect("legacy target group")
        .target_groups()
        .first()
        .and_then(|t| t.target_group_arn())
        .expect("arn")
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(
        dir.path().join("legacy.yaml"),
        format!(
            r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy
  annotations:
    alb.ingress.kubernetes.io/actions.legacy: '{{"type":"forward","targetGroupARN":"{legacy}"}}'
    alb.ingress.kubernetes.io/actions.byname: '{{"type":"forward","targetGroupName":"legacy-app"}}'
    alb.ingress.kubernetes.io/actions.split: '{{"type":"forward","forwardConfig":{{"targetGroups":[{{"serviceName":"api","servicePort":"80","weight":20}},{{"targetGroupARN":"{legacy}","weight":80}}]}}}}'
spec:
  ingressClassName: tollgate
  rules:
  - http:
      paths:
      - {{path: /old/*, pathType: ImplementationSpecific, backend: {{service: {{name: legacy, port: {{name: use-annotation}}}}}}}}
      - {{path: /mixed/*, pathType: ImplementationSpecific, backend: {{service: {{name: split, port: {{name: use-annotation}}}}}}}}
      - {{path: /named/*, pathType: ImplementationSpecific, backend: {{service: {{name: byname, port: {{name: use-annotation}}}}}}}}
"#
        ),
    )
    .unwrap();
    let opts = options(dir.path(), &moto.endpoint);
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let inv = aws.observe().await.expect("observe");
    let text = format!("{:?}", inv.load_balancers[0].listeners[0].rules);
    assert_eq!(
        text.matches(&format!("(\"{legacy}\", 1)")).count(),
        2,
        "by ARN and by name (looked up): {text}"
    );
    assert!(text.contains(&format!("(\"{legacy}\", 80)")), "{text}");
    assert!(
        inv.target_groups.iter().all(|t| t.arn != legacy),
        "not taken for Tollgate's"
    );
    let (mutating, _, converged) = fresh_reconcile(&opts).await;
    assert_eq!(mutating, 0, "read back as desired");
    assert!(converged);

    std::fs::remove_file(dir.path().join("legacy.yaml")).unwrap();
    let (_, _, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    let left = aws
        .elbv2
        .describe_target_groups()
        .target_group_arns(&legacy)
        .send()
        .await
        .expect("the legacy target group is still there");
    assert_eq!(left.target_groups().len(), 1);
}
