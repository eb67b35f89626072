//! One test per diagnostic: each bad input gets a precise message about the right object,
//! and a healthy Ingress beside it is still built.

use tollgate::sources::manifest_dir::parse_manifests;
use tollgate::{build, BuildOptions, Grouping, ProviderKind};
use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity};

/// A healthy Ingress and its Service, present in every case.
const HEALTHY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: healthy, annotations: {alb.ingress.kubernetes.io/group.name: g}}
spec:
  ingressClassName: tollgate
  rules: [{host: ok.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}]}
"#;

struct Outcome {
    diags: Vec<Diagnostic>,
    hosts_built: Vec<String>,
}

fn run_with(text: &str, grouping: Grouping) -> Outcome {
    let (mut snap, mut diags) = parse_manifests("case.yaml", text, false);
    let (healthy, _) = parse_manifests("healthy.yaml", HEALTHY, false);
    snap.merge(healthy);
    let out = build(
        &snap,
        &BuildOptions {
            provider: if matches!(grouping, Grouping::Single(_)) {
                ProviderKind::Proxy
            } else {
                ProviderKind::Aws
            },
            grouping,
            ..BuildOptions::default()
        },
    );
    diags.extend(out.diagnostics);
    let hosts_built = out
        .model
        .load_balancers
        .iter()
        .flat_map(|lb| &lb.listeners)
        .flat_map(|l| &l.rules)
        .filter_map(|r| r.conditions.host.as_ref().map(|h| h.to_string()))
        .collect();
    Outcome { diags, hosts_built }
}

fn run(text: &str) -> Outcome {
    run_with(text, Grouping::ByIngressGroup)
}

/// Asserts exactly one diagnostic with this reason exists, about `name`, with `severity`,
/// saying `says`; and that the healthy Ingress was still built.
fn expect(o: &Outcome, reason: Reason, severity: Severity, name: &str, says: &str) {
    let found: Vec<&Diagnostic> = o.diags.iter().filter(|d| d.reason == reason).collect();
    assert_eq!(found.len(), 1, "want one {reason:?}, got {:#?}", o.diags);
    let d = found[0];
    assert_eq!(d.severity, severity, "{d}");
    assert!(
        d.subject.name.contains(name),
        "subject {} should name {name}",
        d.subject
    );
    assert!(
        d.message.contains(says),
        "message {:?} should say {says:?}",
        d.message
    );
    assert!(
        o.hosts_built.iter().any(|h| h == "ok.example.com"),
        "the healthy Ingress must still be built: {:?}",
        o.hosts_built
    );
}

fn ingress(name: &str, extra_meta: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}{extra_meta}}}\nspec:\n  ingressClassName: tollgate\n{spec}\n"
    )
}

const ROUTE_TO_WEB: &str = "  rules: [{host: b.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]";

#[test]
fn yaml_syntax_error() {
    let o = run("apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n");
    expect(
        &o,
        Reason::ManifestInvalid,
        Severity::Error,
        "case.yaml",
        "document 0: invalid YAML",
    );
}

#[test]
fn json_syntax_error() {
    let (_, diags) = parse_manifests("bad.json", "{\"apiVersion\": \"v1\",", true);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].reason, Reason::ManifestInvalid);
    assert_eq!(diags[0].subject.kind, ObjectKind::File);
    assert!(
        diags[0].message.contains("invalid JSON"),
        "{}",
        diags[0].message
    );
}

#[test]
fn document_that_is_not_an_object() {
    let o = run("---\n- just\n- a list\n");
    expect(
        &o,
        Reason::ManifestInvalid,
        Severity::Error,
        "case.yaml",
        "not a Kubernetes object",
    );
}

#[test]
fn retired_ingress_api_version() {
    let o = run("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n");
    expect(
        &o,
        Reason::ManifestInvalid,
        Severity::Error,
        "case.yaml",
        "use networking.k8s.io/v1",
    );
}

#[test]
fn unknown_kind_is_ignored_quietly() {
    let o = run("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n");
    expect(
        &o,
        Reason::KindIgnored,
        Severity::Info,
        "case.yaml",
        "apps/v1 Deployment",
    );
}

#[test]
fn duplicate_object_later_wins() {
    let text = format!(
        "{}---\n{}",
        ingress("dup", "", ROUTE_TO_WEB),
        ingress(
            "dup",
            "",
            &ROUTE_TO_WEB.replace("b.example.com", "c.example.com")
        )
    );
    let o = run(&text);
    expect(
        &o,
        Reason::DuplicateObject,
        Severity::Warning,
        "case.yaml",
        "Ingress default/dup is also defined in case.yaml",
    );
    assert!(o.hosts_built.contains(&"c.example.com".to_string()));
    assert!(!o.hosts_built.contains(&"b.example.com".to_string()));
}

#[test]
fn object_that_does_not_decode() {
    let o = run("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\nspec: {rules: \"not a list\"}\n");
    expect(
        &o,
        Reason::ObjectInvalid,
        Severity::Error,
        "case.yaml",
        "not a valid Ingress",
    );
}

#[test]
fn object_without_name() {
    let o = run("apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n");
    expect(
        &o,
        Reason::ObjectInvalid,
        Severity::Error,
        "case.yaml",
        "Service has no metadata.name",
    );
}

#[test]
fn bad_annotation_rejects_only_its_ingress() {
    let o = run(&ingress("bad", ", annotations: {alb.ingress.kubernetes.io/group.name: g, alb.ingress.kubernetes.io/group.order: 'high'}", ROUTE_TO_WEB));
    expect(
        &o,
        Reason::AnnotationInvalid,
        Severity::Error,
        "bad",
        "alb.ingress.kubernetes.io/group.order: expected a whole number from -1000 to 1000",
    );
    assert!(!o.hosts_built.contains(&"b.example.com".to_string()));
}

#[test]
fn bad_service_annotation_is_ignored_with_a_warning() {
    let o = run("apiVersion: v1\nkind: Service\nmetadata: {name: s, annotations: {alb.ingress.kubernetes.io/healthcheck-interval-seconds: '1'}}\nspec: {ports: [{port: 80}]}\n");
    expect(
        &o,
        Reason::AnnotationInvalid,
        Severity::Warning,
        "s",
        "from 5 to 300",
    );
    assert_eq!(o.diags[0].subject.kind, ObjectKind::Service);
}

#[test]
fn invalid_host() {
    let o = run(&ingress("h", "", "  rules: [{host: 'a.*.example.com', http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]"));
    expect(
        &o,
        Reason::HostInvalid,
        Severity::Error,
        "h",
        "spec.rules[0].host \"a.*.example.com\"",
    );
}

#[test]
fn invalid_path() {
    let o = run(&ingress("p", "", "  rules: [{http: {paths: [{path: 'x/y', pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]"));
    expect(
        &o,
        Reason::PathInvalid,
        Severity::Error,
        "p",
        "spec.rules[0].http.paths[0]: path \"x/y\" must start with '/'",
    );
}

#[test]
fn missing_path_type() {
    let o = run(&ingress("p", "", "  rules: [{http: {paths: [{path: /x, backend: {service: {name: web, port: {number: 80}}}}]}}]"));
    expect(
        &o,
        Reason::PathInvalid,
        Severity::Error,
        "p",
        "pathType is required",
    );
}

#[test]
fn no_rules_and_no_default_backend() {
    let o = run(&ingress("empty", "", "  tls: []"));
    expect(
        &o,
        Reason::NoRules,
        Severity::Error,
        "empty",
        "neither spec.rules nor spec.defaultBackend",
    );
}

#[test]
fn class_field_and_annotation_disagree() {
    let o = run(&ingress(
        "amb",
        ", annotations: {kubernetes.io/ingress.class: other}",
        ROUTE_TO_WEB,
    ));
    expect(
        &o,
        Reason::IngressClassAmbiguous,
        Severity::Warning,
        "amb",
        "spec.ingressClassName is used",
    );
    assert!(o.hosts_built.contains(&"b.example.com".to_string()));
}

#[test]
fn missing_service_answers_503() {
    let o = run(&ingress(
        "m",
        "",
        &ROUTE_TO_WEB.replace("name: web", "name: nowhere"),
    ));
    expect(
        &o,
        Reason::ServiceNotFound,
        Severity::Warning,
        "m",
        "Service default/nowhere not found; requests for it answer 503",
    );
    assert!(
        o.hosts_built.contains(&"b.example.com".to_string()),
        "the route stays, answering 503"
    );
}

#[test]
fn missing_service_port() {
    let o = run(&ingress(
        "m",
        "",
        &ROUTE_TO_WEB.replace("number: 80", "number: 9999"),
    ));
    expect(
        &o,
        Reason::ServicePortNotFound,
        Severity::Warning,
        "m",
        "Service default/web has no port 9999 (it has: 80/http)",
    );
}

#[test]
fn instance_target_needs_node_port() {
    let o = run(&ingress(
        "i",
        ", annotations: {alb.ingress.kubernetes.io/target-type: instance}",
        ROUTE_TO_WEB,
    ));
    expect(
        &o,
        Reason::ServiceTypeUnsupported,
        Severity::Warning,
        "i",
        "NodePort or LoadBalancer (it is ClusterIP)",
    );
}

#[test]
fn resource_backend() {
    let o = run(&ingress(
        "r",
        "",
        "  defaultBackend: {resource: {apiGroup: k8s.example.com, kind: Bucket, name: b}}",
    ));
    expect(
        &o,
        Reason::ResourceBackendUnsupported,
        Severity::Warning,
        "r",
        "resource backends (Bucket b) are not supported",
    );
}

#[test]
fn missing_tls_secret() {
    let o = run(&ingress(
        "t",
        "",
        &format!("  tls: [{{hosts: [b.example.com], secretName: nope}}]\n{ROUTE_TO_WEB}"),
    ));
    expect(
        &o,
        Reason::SecretNotFound,
        Severity::Warning,
        "t",
        "Secret default/nope not found",
    );
}

#[test]
fn unusable_tls_secret() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: '', tls.key: ''}}\n",
        ingress("t", "", &format!("  tls: [{{hosts: [b.example.com], secretName: s}}]\n{ROUTE_TO_WEB}"))
    );
    let o = run(&text);
    expect(
        &o,
        Reason::SecretInvalid,
        Severity::Warning,
        "t",
        "Secret default/s is not usable: tls.crt holds no certificate",
    );
}

#[test]
fn route_conflict_goes_to_the_older_ingress() {
    let text = format!(
        "{}---\n{}",
        ingress("younger", ", creationTimestamp: '2025-01-01T00:00:00Z', annotations: {alb.ingress.kubernetes.io/group.name: g}", ROUTE_TO_WEB),
        ingress("older", ", creationTimestamp: '2020-01-01T00:00:00Z', annotations: {alb.ingress.kubernetes.io/group.name: g}", ROUTE_TO_WEB)
    );
    let o = run(&text);
    expect(
        &o,
        Reason::RouteConflict,
        Severity::Warning,
        "younger",
        "already served by Ingress default/older",
    );
}

#[test]
fn default_backend_conflict() {
    let db = "  defaultBackend: {service: {name: web, port: {number: 80}}}";
    let text = format!("{}---\n{}", ingress("d1", "", db), ingress("d2", "", db));
    let o = run_with(&text, Grouping::Single("proxy".into()));
    expect(
        &o,
        Reason::DefaultBackendConflict,
        Severity::Warning,
        "d2",
        "Ingress default/d1 has precedence",
    );
}

#[test]
fn group_setting_conflict() {
    let text = ingress("s", ", annotations: {alb.ingress.kubernetes.io/group.name: g, alb.ingress.kubernetes.io/group.order: '5', alb.ingress.kubernetes.io/scheme: internet-facing}", ROUTE_TO_WEB);
    let o = run(&format!("{text}---\n{}", ingress("s0", ", annotations: {alb.ingress.kubernetes.io/group.name: g, alb.ingress.kubernetes.io/group.order: '-5', alb.ingress.kubernetes.io/scheme: internal}", "  defaultBackend: {service: {name: web, port: {number: 80}}}")));
    expect(
        &o,
        Reason::GroupSettingConflict,
        Severity::Warning,
        "s",
        "scheme InternetFacing is ignored: Ingress default/s0 set Internal first",
    );
}
