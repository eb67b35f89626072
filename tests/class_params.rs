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
