//! `tollgate aws` on a VPC seeded as EKS and its common tooling seed one today, with nothing
//! named by hand: role-tagged public and private subnets in three zones and no cluster tag,
//! a cluster security group that admits only itself (tagged `kubernetes.io/cluster/<name>`)
//! on the nodes next to a second, untagged group, nodes in the private subnets, and pod IPs
//! as secondary addresses of the nodes' network interfaces (the VPC CNI).
//!
//! What must hold there (issue 13): each ALB sits in one subnet per zone of the kind its
//! scheme needs; every registered target's security group admits one of its ALB's groups on
//! the target's port (so traffic arrives, which the emulator does not check: it carries no
//! packets); a no-op reconcile makes no call that changes anything; deleting every Ingress
//! leaves no load balancer, no backend group and no rule behind.

mod support;

use std::collections::BTreeMap;

use support::moto::{start_moto, test_credentials};
use tollgate::aws_command::{reconcile, run_once, AwsRunOptions};
use tollgate::sources::manifest_dir::load_dir;
use tollgate::sources::SourceSpec;
use tollgate::{BuildOptions, Grouping};

const CLUSTER: &str = "eks";

fn options(dir: &std::path::Path, endpoint: &str) -> AwsRunOptions {
    AwsRunOptions {
        source: SourceSpec::Manifests(dir.to_path_buf()),
        build: BuildOptions {
            grouping: Grouping::ByIngressGroup,
            ..BuildOptions::default()
        },
        cluster: CLUSTER.into(),
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        vpc_id: None,
        limits: Default::default(),
        resync: std::time::Duration::from_secs(300),
        full_resync: std::time::Duration::from_secs(3600),
        admin_listen: None,
        pace: tollgate_aws::api_pacing::Pace {
            per_second: 0.0,
            burst: 0,
        },
        readiness_gate_timeout: tollgate::readiness_gate::DEFAULT_TIMEOUT,
    }
}

struct Eks {
    ec2: aws_sdk_ec2::Client,
    public: Vec<String>,
    private: Vec<String>,
    cluster_sg: String,
    extra_sg: String,
    /// (node name, provider ID, pod IPs on it).
    nodes: Vec<(String, String, Vec<String>)>,
}

fn tag(k: &str, v: &str) -> aws_sdk_ec2::types::Tag {
    aws_sdk_ec2::types::Tag::builder().key(k).value(v).build()
}

async fn seed_eks(endpoint: &str) -> Eks {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.3.0.0/16")
        .send()
        .await
        .expect("vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_string();
    let mut public = Vec::new();
    let mut private = Vec::new();
    for (i, az) in ["us-east-1a", "us-east-1b", "us-east-1c"]
        .iter()
        .enumerate()
    {
        for (kind, cidr, role) in [
            ("public", format!("10.3.{i}.0/24"), "kubernetes.io/role/elb"),
            (
                "private",
                format!("10.3.{}.0/24", 10 + i),
                "kubernetes.io/role/internal-elb",
            ),
        ] {
            let id = ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(cidr)
                .availability_zone(*az)
                .send()
                .await
                .expect("subnet")
                .subnet()
                .and_then(|s| s.subnet_id())
                .expect("subnet id")
                .to_string();
            ec2.create_tags()
                .resources(&id)
                .tags(tag(role, "1"))
                .tags(tag("Name", &format!("eks-{kind}-{az}")))
                .send()
                .await
                .expect("tags");
            if kind == "public" {
                public.push(id);
            } else {
                private.push(id);
            }
        }
    }
    let group = |name: &'static str| {
        let ec2 = ec2.clone();
        let vpc = vpc.clone();
        async move {
            ec2.create_security_group()
                .group_name(name)
                .description(name)
                .vpc_id(vpc)
                .send()
                .await
                .expect("security group")
                .group_id()
                .expect("group id")
                .to_string()
        }
    };
    // EKS's cluster security group: tagged for the cluster, admitting only itself.
    let cluster_sg = group("eks-cluster-sg-eks").await;
    ec2.create_tags()
        .resources(&cluster_sg)
        .tags(tag(&format!("kubernetes.io/cluster/{CLUSTER}"), "owned"))
        .send()
        .await
        .expect("tag cluster sg");
    ec2.authorize_security_group_ingress()
        .group_id(&cluster_sg)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("-1")
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(&cluster_sg)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("self rule");
    // A second group on the nodes (e.g. for SSH), not tagged: never the one changed.
    let extra_sg = group("eks-node-remote-access").await;
    let image = support::moto::any_image(&ec2).await;
    let mut nodes = Vec::new();
    for (n, (subnet, az)) in private.iter().zip(["us-east-1a", "us-east-1b"]).enumerate() {
        let r = ec2
            .run_instances()
            .image_id(&image)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .security_group_ids(&cluster_sg)
            .security_group_ids(&extra_sg)
            .send()
            .await
            .expect("instance");
        let instance = r.instances().first().expect("instance");
        let id = instance.instance_id().expect("instance id").to_string();
        let eni = instance
            .network_interfaces()
            .first()
            .and_then(|e| e.network_interface_id())
            .expect("primary eni")
            .to_string();
        let pods = vec![format!("10.3.{}.50", 10 + n), format!("10.3.{}.51", 10 + n)];
        ec2.assign_private_ip_addresses()
            .network_interface_id(&eni)
            .set_private_ip_addresses(Some(pods.clone()))
            .send()
            .await
            .expect("pod addresses");
        nodes.push((format!("node-{n}"), format!("aws:///{az}/{id}"), pods));
    }
    Eks {
        ec2,
        public,
        private,
        cluster_sg,
        extra_sg,
        nodes,
    }
}

fn manifests(eks: &Eks) -> String {
    let mut m = String::new();
    let mut endpoints = String::new();
    for (name, provider, pods) in &eks.nodes {
        m.push_str(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{providerID: '{provider}'}}\nstatus: {{conditions: [{{type: Ready, status: 'True'}}]}}\n---\n"));
        for p in pods {
            endpoints.push_str(&format!(
                "- {{addresses: [{p}], nodeName: {name}, conditions: {{ready: true}}}}\n"
            ));
        }
    }
    m.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{type: NodePort, ports: [{{name: http, port: 80, nodePort: 30080}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{endpoints}---\n"
    ));
    m.push_str("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: tollgate}\nspec: {controller: tollgate.io/ingress-controller}\n");
    m
}

/// An internet-facing `ip` Ingress and an internal `instance` one, as the AWS Load Balancer
/// Controller's documentation writes them (`path: /*`, ImplementationSpecific).
const INGRESSES: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: public
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/target-type: ip
spec:
  ingressClassName: tollgate
  rules:
  - http:
      paths:
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: private
  annotations:
    alb.ingress.kubernetes.io/scheme: internal
    alb.ingress.kubernetes.io/target-type: instance
    alb.ingress.kubernetes.io/healthcheck-port: "10254"
spec:
  ingressClassName: tollgate
  rules:
  - http:
      paths:
      - {path: /*, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
"#;

/// (source group, from, to) of the TCP rules on `group` whose source is another group.
async fn group_sources(ec2: &aws_sdk_ec2::Client, group: &str) -> Vec<(String, i32, i32)> {
    let r = ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .expect("describe group");
    let mut out = Vec::new();
    for g in r.security_groups() {
        for p in g.ip_permissions() {
            if p.ip_protocol() != Some("tcp") {
                continue;
            }
            for pair in p.user_id_group_pairs() {
                out.push((
                    pair.group_id().unwrap_or_default().to_string(),
                    p.from_port().unwrap_or(-1),
                    p.to_port().unwrap_or(-1),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eks_shaped_vpc_gets_reachable_albs_with_nothing_named_by_hand() {
    test_credentials();
    let moto = start_moto();
    let eks = seed_eks(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cluster.yaml"), manifests(&eks)).expect("write");
    std::fs::write(dir.path().join("ingresses.yaml"), INGRESSES).expect("write");
    let opts = options(dir.path(), &moto.endpoint);

    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let aws = opts.connect().await;
    let inv = aws.observe().await.expect("observe");
    assert_eq!(inv.load_balancers.len(), 2, "{inv:#?}");
    let backend = inv
        .backend_security_group
        .clone()
        .expect("a backend security group");

    // Placement: one subnet per zone, of the kind the scheme needs.
    let mut public = eks.public.clone();
    public.sort();
    let mut private = eks.private.clone();
    private.sort();
    for lb in &inv.load_balancers {
        let want = if lb.scheme == "internal" {
            &private
        } else {
            &public
        };
        assert_eq!(&lb.subnets, want, "{} ({})", lb.name, lb.scheme);
        assert!(
            lb.security_groups.contains(&backend.id),
            "{} carries the backend group",
            lb.name
        );
    }

    // Reachability: every registered target's group (the tagged cluster group, as the nodes
    // have two) admits one of its load balancer's groups on the target's port and on the
    // health-check port.
    let rules = group_sources(&eks.ec2, &eks.cluster_sg).await;
    assert!(
        group_sources(&eks.ec2, &eks.extra_sg).await.is_empty(),
        "the untagged group is left alone"
    );
    let admits = |lb_groups: &[String], port: u16| {
        rules.iter().any(|(src, from, to)| {
            lb_groups.contains(src) && *from <= i32::from(port) && i32::from(port) <= *to
        })
    };
    let mut checked = 0;
    for tg in &inv.target_groups {
        let lb = inv
            .load_balancers
            .iter()
            .find(|lb| lb.stack == tg.stack)
            .expect("its load balancer");
        assert!(!tg.spec.targets.is_empty(), "{} has targets", tg.spec.name);
        for (target, port) in &tg.spec.targets {
            assert!(
                admits(&lb.security_groups, *port),
                "target {target}:{port} of {} is not admitted from {:?}: {rules:?}",
                tg.spec.name,
                lb.security_groups
            );
            checked += 1;
        }
        if let Ok(hc) = tg.spec.health_check.port.parse::<u16>() {
            assert!(admits(&lb.security_groups, hc), "health check port {hc}");
        }
    }
    assert_eq!(checked, 4 + 2, "four pods, two nodes");
    let instance_tg = inv
        .target_groups
        .iter()
        .find(|t| t.spec.target_type == "instance")
        .expect("instance target group");
    assert!(instance_tg.spec.targets.iter().all(|(_, p)| *p == 30080));

    // Settled: a fresh read and plan change nothing.
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let aws = opts.connect().await;
    let mut inv = aws.observe().await.expect("observe");
    let r = reconcile(&aws, &mut inv, &snapshot, &opts).await;
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(aws.calls.mutating(), 0, "{:?}", aws.calls.snapshot());

    // A pod gone: its port range stays as other pods use it; a port no target uses any more
    // is revoked. Here: the instance Ingress goes, so 30080 and 10254 are no longer needed.
    std::fs::write(
        dir.path().join("ingresses.yaml"),
        INGRESSES.split("---\n").next().expect("first Ingress"),
    )
    .expect("write");
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let rules: BTreeMap<String, (i32, i32)> = group_sources(&eks.ec2, &eks.cluster_sg)
        .await
        .into_iter()
        .filter(|(src, _, _)| src == &backend.id)
        .map(|(src, f, t)| (src, (f, t)))
        .collect();
    assert_eq!(
        rules.get(&backend.id),
        Some(&(8080, 8080)),
        "only the pods' port is left open"
    );

    // Gone: no load balancer, no backend group, no rule naming it; the cluster's own self
    // rule untouched.
    std::fs::remove_file(dir.path().join("ingresses.yaml")).expect("remove");
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let left = opts.connect().await.observe().await.expect("observe");
    assert!(left.load_balancers.is_empty() && left.target_groups.is_empty());
    assert!(left.backend_security_group.is_none(), "{left:#?}");
    let rules = group_sources(&eks.ec2, &eks.cluster_sg).await;
    assert!(
        rules.is_empty(),
        "no TCP rule from another group is left: {rules:?}"
    );
    let all = eks
        .ec2
        .describe_security_groups()
        .send()
        .await
        .expect("groups");
    assert!(
        !all.security_groups()
            .iter()
            .any(|g| g.group_name() == Some("tollgate-traffic-eks")),
        "backend group deleted"
    );
}

/// The same VPC with every call through a proxy failing 30% of requests (half throttled
/// before the emulator sees them, half answered 5xx after it acted): converges with exactly
/// one backend group and one rule from it on the cluster group, and deleting everything
/// through the same faults leaves neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_rules_converge_through_failing_calls_without_duplicates_or_leaks() {
    test_credentials();
    let moto = start_moto();
    let eks = seed_eks(&moto.endpoint).await;
    let faults = support::fault_proxy::start_fault_proxy(&moto.endpoint, 300, 11).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cluster.yaml"), manifests(&eks)).expect("write");
    std::fs::write(dir.path().join("ingresses.yaml"), INGRESSES).expect("write");
    let opts = options(dir.path(), &faults.endpoint);
    let converge = |what: &'static str| {
        let opts = opts.clone();
        async move {
            for _ in 0..15 {
                if let Ok((r, _)) = run_once(&opts).await {
                    if r.converged {
                        return;
                    }
                }
            }
            panic!("{what}: not converged after 15 rounds through faults");
        }
    };
    converge("create").await;
    faults.set_enabled(false);
    assert!(
        faults.injected.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "faults were injected"
    );
    let backend_groups = |ec2: aws_sdk_ec2::Client| async move {
        ec2.describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-name")
                    .values("tollgate-traffic-eks")
                    .build(),
            )
            .send()
            .await
            .expect("groups")
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let groups = backend_groups(eks.ec2.clone()).await;
    assert_eq!(groups.len(), 1, "one backend group: {groups:?}");
    let from_backend: Vec<_> = group_sources(&eks.ec2, &eks.cluster_sg)
        .await
        .into_iter()
        .filter(|(src, _, _)| src == &groups[0])
        .collect();
    assert_eq!(from_backend.len(), 1, "one rule: {from_backend:?}");

    std::fs::remove_file(dir.path().join("ingresses.yaml")).expect("remove");
    faults.set_enabled(true);
    converge("delete").await;
    faults.set_enabled(false);
    assert!(backend_groups(eks.ec2.clone()).await.is_empty());
    assert!(group_sources(&eks.ec2, &eks.cluster_sg).await.is_empty());
}
