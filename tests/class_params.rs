//! TollgateClassParams: set fields override the Ingresses' annotations for every Ingress of
//! the IngressClass that points at them; unset fields leave the annotations in charge; other
//! classes are untouched.

use tollgate::sources::manifest_dir::parse_manifests;
use tollgate::{build, BuildOptions};
use tollgate_contract::{Scheme, TargetType};

const MANIFESTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: pinned}
spec:
  controller: tollgate.io/ingress-controller
  parameters: {apiGroup: tollgate.io, kind: TollgateClassParams, name: pinned-params}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: free}
spec:
  controller: tollgate.io/ingress-controller
---
apiVersion: tollgate.io/v1alpha1
kind: TollgateClassParams
metadata: {name: pinned-params}
spec:
  group: {name: platform}
  scheme: internal
  targetType: instance
  tags: {team: platform}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, ports: [{name: http, port: 80, nodePort: 30080}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: a
  annotations:
    alb.ingress.kubernetes.io/group.name: mine
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/target-type: ip
    alb.ingress.kubernetes.io/tags: owner=a
spec:
  ingressClassName: pinned
  rules: [{host: a.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: b
  annotations:
    alb.ingress.kubernetes.io/group.name: mine
    alb.ingress.kubernetes.io/scheme: internet-facing
spec:
  ingressClassName: free
  rules: [{host: b.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"#;

#[test]
fn class_parameters_override_annotations_only_for_their_class() {
    let (snapshot, source_diags) = parse_manifests("test.yaml", MANIFESTS, false);
    assert!(source_diags.is_empty(), "{source_diags:?}");
    assert_eq!(snapshot.class_params.len(), 1);
    let out = build(&snapshot, &BuildOptions::default());
    let lb = |id: &str| {
        out.model
            .load_balancers
            .iter()
            .find(|lb| lb.id == id)
            .unwrap_or_else(|| panic!("no load balancer {id}: {:#?}", out.model.load_balancers))
    };
    // Ingress a: the class pins group, scheme and target type; its tags are merged.
    let platform = lb("group/platform");
    assert_eq!(platform.ingresses.len(), 1);
    assert_eq!(platform.ingresses[0].name, "a");
    assert_eq!(platform.scheme, Scheme::Internal);
    assert_eq!(
        platform.tags.get("team").map(String::as_str),
        Some("platform")
    );
    assert_eq!(platform.tags.get("owner").map(String::as_str), Some("a"));
    assert!(platform
        .target_groups
        .iter()
        .all(|tg| tg.target_type == TargetType::Instance));
    // Ingress b: its class has no parameters, so its annotations decide.
    let mine = lb("group/mine");
    assert_eq!(mine.ingresses.len(), 1);
    assert_eq!(mine.ingresses[0].name, "b");
    assert_eq!(mine.scheme, Scheme::InternetFacing);
}

#[test]
fn the_crd_is_a_structural_cluster_scoped_v1_crd_without_null_enums() {
    let yaml = tollgate::class_params::crd_yaml().expect("crd");
    let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).expect("yaml");
    assert_eq!(v["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(v["spec"]["scope"], "Cluster");
    assert_eq!(v["spec"]["group"], "tollgate.io");
    // kube-apiserver 1.20 rejects a CRD whose enum lists null.
    assert!(!yaml.contains("- null"), "{yaml}");
    let spec =
        &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in [
        "group",
        "scheme",
        "subnets",
        "securityGroups",
        "inboundCidrs",
        "tags",
        "certificateArns",
        "sslPolicy",
        "targetType",
    ] {
        assert!(spec.get(field).is_some(), "CRD lacks spec.{field}");
    }
}

/// The AWS Load Balancer Controller's IngressClassParams, as its documentation writes them,
/// for a class Tollgate claims: the fields Tollgate honours apply as they do there (a set
/// field replaces the annotation; tags and attributes merge, the parameters winning), the
/// others are named in a Warning on each Ingress of the class, a WAF ACL and a name apply to
/// the class's load balancers (one that cannot be applied keeps its Ingresses unserved), and
/// `namespaceSelector` keeps Ingresses
/// of other namespaces out with an Error.
const ALB_PARAMS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: alb}
spec:
  controller: tollgate.io/ingress-controller
  parameters: {apiGroup: elbv2.k8s.aws, kind: IngressClassParams, name: class-params}
---
apiVersion: elbv2.k8s.aws/v1beta1
kind: IngressClassParams
metadata: {name: class-params}
spec:
  namespaceSelector:
    matchLabels: {team: shop}
  group: {name: shop}
  scheme: internal
  ipAddressType: dualstack
  inboundCIDRs: [10.0.0.0/8]
  sslPolicy: ELBSecurityPolicy-TLS13-1-2-2021-06
  tags: [{key: env, value: prod}]
  loadBalancerAttributes: [{key: idle_timeout.timeout_seconds, value: "120"}]
  minimumLoadBalancerCapacity: {capacityUnits: 100}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: other}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: a
  namespace: shop
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/tags: env=dev,owner=a
    alb.ingress.kubernetes.io/load-balancer-attributes: idle_timeout.timeout_seconds=60,routing.http2.enabled=true
spec:
  ingressClassName: alb
  rules: [{host: a.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: b, namespace: other}
spec:
  ingressClassName: alb
  rules: [{host: b.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
"#;

#[test]
fn alb_controller_ingress_class_params_are_read_for_claimed_classes() {
    let (snapshot, source_diags) = parse_manifests("test.yaml", ALB_PARAMS, false);
    assert!(source_diags.is_empty(), "{source_diags:?}");
    let out = build(&snapshot, &BuildOptions::default());
    let lb = out
        .model
        .load_balancers
        .iter()
        .find(|lb| lb.id == "group/shop")
        .unwrap_or_else(|| panic!("{:#?} {:#?}", out.model.load_balancers, out.diagnostics));
    assert_eq!(
        lb.ingresses.len(),
        1,
        "only the selected namespace's Ingress"
    );
    assert_eq!(lb.scheme, Scheme::Internal, "the parameters' scheme wins");
    assert_eq!(
        lb.network.ip_address_type,
        tollgate_contract::IpAddressType::Dualstack
    );
    assert_eq!(lb.network.inbound_cidrs, ["10.0.0.0/8"]);
    assert_eq!(lb.tags.get("env").map(String::as_str), Some("prod"));
    assert_eq!(lb.tags.get("owner").map(String::as_str), Some("a"));
    assert_eq!(
        lb.attributes
            .get("idle_timeout.timeout_seconds")
            .map(String::as_str),
        Some("120")
    );
    assert_eq!(
        lb.attributes
            .get("routing.http2.enabled")
            .map(String::as_str),
        Some("true")
    );
    let about = |name: &str| -> Vec<&tollgate_contract::Diagnostic> {
        out.diagnostics
            .iter()
            .filter(|d| d.subject.name == name)
            .collect()
    };
    assert!(
        about("a")
            .iter()
            .any(|d| d.severity == tollgate_contract::Severity::Warning
                && d.message.contains("minimumLoadBalancerCapacity")),
        "a field not honoured is named: {:#?}",
        out.diagnostics
    );
    assert!(
        about("b")
            .iter()
            .any(|d| d.severity == tollgate_contract::Severity::Error
                && d.message.contains("namespaceSelector")),
        "{:#?}",
        out.diagnostics
    );

    // A WAF ACL and a name in the parameters: applied to the class's load balancers (the
    // parameters win over the Ingresses' annotations, as in the AWS controller).
    let waf = ALB_PARAMS.replace(
        "  minimumLoadBalancerCapacity: {capacityUnits: 100}\n",
        "  wafv2AclArn: arn:aws:wafv2:us-east-1:111122223333:regional/webacl/x/1\n  loadBalancerName: shop-public\n",
    );
    let (snapshot, _) = parse_manifests("test.yaml", &waf, false);
    let out = build(&snapshot, &BuildOptions::default());
    let lb = out
        .model
        .load_balancers
        .iter()
        .find(|lb| lb.ingresses.iter().any(|i| i.name == "a"))
        .expect("a is served");
    assert_eq!(
        lb.protection.web_acl,
        Some(tollgate_contract::WebAcl::Arn(
            "arn:aws:wafv2:us-east-1:111122223333:regional/webacl/x/1".into()
        ))
    );
    assert_eq!(lb.name.as_deref(), Some("shop-public"));
    // One that cannot be applied as written: not served rather than served without it.
    let bad = waf.replace(
        "arn:aws:wafv2:us-east-1:111122223333:regional/webacl/x/1",
        "my-acl",
    );
    let (snapshot, _) = parse_manifests("test.yaml", &bad, false);
    let out = build(&snapshot, &BuildOptions::default());
    assert!(
        out.model
            .load_balancers
            .iter()
            .all(|lb| lb.ingresses.iter().all(|i| i.name != "a")),
        "{:#?}",
        out.model.load_balancers
    );
    assert!(out.diagnostics.iter().any(|d| d.subject.name == "a"
        && d.severity == tollgate_contract::Severity::Error
        && d.message.contains("wafv2AclArn")));
}

/// An Ingress served while its namespace was selected keeps being served as it was once the
/// namespace no longer is (an error, not a deletion): nothing that was serving is lost to a
/// label change.
#[test]
fn a_namespace_that_stops_being_selected_keeps_what_was_served() {
    let selected = ALB_PARAMS.replace(
        "metadata: {name: other, labels: {team: other}}",
        "metadata: {name: other, labels: {team: shop}}",
    );
    let opts = BuildOptions::default();
    let mut lkg = tollgate::LastKnownGood::default();
    let (snapshot, _) = parse_manifests("test.yaml", &selected, false);
    let out = lkg.build(&snapshot, &opts);
    let served = |out: &tollgate::BuildOutput| {
        out.model
            .load_balancers
            .iter()
            .flat_map(|lb| lb.ingresses.iter())
            .any(|i| i.name == "b")
    };
    assert!(served(&out), "selected: served");
    let _ = served;
    let (snapshot, _) = parse_manifests("test.yaml", ALB_PARAMS, false);
    let out = lkg.build(&snapshot, &opts);
    // Not rebuilt without it: its load balancer is held as it is, and that is said.
    assert!(
        out.held_load_balancers.contains("group/shop"),
        "{:?}",
        out.held_load_balancers
    );
    assert!(out
        .diagnostics
        .iter()
        .any(|d| d.subject.name == "b" && d.message.contains("no longer selected")));
    // An Ingress never served in an unselected namespace holds nothing.
    let mut fresh = tollgate::LastKnownGood::default();
    let out = fresh.build(&snapshot, &opts);
    assert!(
        out.held_load_balancers.is_empty(),
        "{:?}",
        out.held_load_balancers
    );
}
