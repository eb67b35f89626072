//! `tollgate plan` as a user runs it: the real binary on real directories.

use std::process::Command;

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

#[test]
fn plans_every_example_and_exits_zero() {
    let out = tollgate()
        .args(["plan", "--manifests", "examples"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for ingress in [
        "minimal-ingress",
        "simple-fanout-example",
        "name-virtual-host-ingress",
        "ingress-wildcard-host",
        "test-ingress",
        "tls-example-ingress",
    ] {
        assert!(
            stdout.contains(&format!("id: ingress/default/{ingress}")),
            "no load balancer for {ingress}"
        );
    }
    assert!(
        !stdout.contains("PRIVATE KEY"),
        "key material must never be printed"
    );
}

#[test]
fn json_output_parses() {
    let out = tollgate()
        .args(["plan", "--manifests", "examples", "-o", "json"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(
        v["model"]["loadBalancers"].as_array().map(Vec::len),
        Some(6)
    );
}

#[test]
fn rejected_objects_exit_two_and_the_rest_is_planned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("malformed.yaml"),
        "kind: Ingress\nmetadata: {name: [\n",
    )
    .unwrap();
    std::fs::write(
        d.join("ingresses.yaml"),
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: good}
spec:
  ingressClassName: tollgate
  rules: [{host: good.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad, annotations: {alb.ingress.kubernetes.io/scheme: public}}
spec:
  ingressClassName: tollgate
  rules: [{host: bad.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: orphan}
spec:
  ingressClassName: tollgate
  rules: [{host: orphan.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: ghost, port: {number: 80}}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"#,
    )
    .unwrap();
    let out = tollgate()
        .args(["plan", "--manifests"])
        .arg(d)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("host: good.example.com"), "{stdout}");
    assert!(
        stdout.contains("host: orphan.example.com"),
        "the orphan's route stays, answering 503"
    );
    assert!(!stdout.contains("host: bad.example.com"));
    assert!(
        stderr.contains("malformed.yaml") && stderr.contains("document 0: invalid YAML"),
        "{stderr}"
    );
    assert!(stderr.contains("Ingress default/bad: AnnotationInvalid: annotation alb.ingress.kubernetes.io/scheme: expected internal or internet-facing"), "{stderr}");
    assert!(
        stderr.contains("Ingress default/orphan: ServiceNotFound: Service default/ghost not found"),
        "{stderr}"
    );
}

#[test]
fn a_missing_directory_exits_one() {
    let out = tollgate()
        .args(["plan", "--manifests", "/nonexistent/dir"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read manifest directory /nonexistent/dir"));
}

#[test]
fn help_explains_the_commands() {
    let out = tollgate().arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("plan"), "{text}");
    let out = tollgate().args(["plan", "--help"]).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--manifests") && text.contains("Exit status"),
        "{text}"
    );
}

#[test]
fn plan_shows_per_ingress_what_each_provider_does_not_honour() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ing.yaml"),
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: migrated
  annotations:
    alb.ingress.kubernetes.io/security-groups: sg-0123
    nginx.ingress.kubernetes.io/limit-rate: "1024"
    nginx.ingress.kubernetes.io/rewrite-target: /
spec:
  ingressClassName: tollgate
  rules: [{host: a.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}]}
"#,
    )
    .expect("write");
    let out = tollgate()
        .args(["plan", "-o", "json", "--manifests"])
        .arg(dir.path())
        .output()
        .expect("runs");
    // Built for aws (the default): security-groups is honoured there, so nothing is rejected.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = v["annotations"]["default/migrated"]
        .as_array()
        .expect("the Ingress has an annotations entry");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["annotation"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"))
            .clone()
    };
    let cidrs = row("alb.ingress.kubernetes.io/security-groups");
    assert!(cidrs["aws"].is_null(), "honoured by aws: {cidrs}");
    assert!(
        cidrs["proxy"]
            .as_str()
            .is_some_and(|s| s.starts_with("Error")),
        "refused by the proxy: {cidrs}"
    );
    let timeout = row("nginx.ingress.kubernetes.io/limit-rate");
    assert!(timeout["aws"]
        .as_str()
        .is_some_and(|s| s.starts_with("Warning")));
    assert!(timeout["proxy"]
        .as_str()
        .is_some_and(|s| s.starts_with("Warning")));
    let rewrite = row("nginx.ingress.kubernetes.io/rewrite-target");
    assert!(rewrite["proxy"].is_null(), "the proxy rewrites: {rewrite}");
    assert!(rewrite["aws"].is_string(), "ALB does not: {rewrite}");

    // Built for the proxy, the same Ingress is rejected (exit 2).
    let out = tollgate()
        .args(["plan", "--provider", "proxy", "--manifests"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AnnotationUnsupported"));
}

#[test]
fn annotations_command_prints_the_registry() {
    let out = tollgate().arg("annotations").output().expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| `nginx.ingress.kubernetes.io/auth-url` | protective"));
    assert!(text.contains("| `alb.ingress.kubernetes.io/actions.*` |"));
}
