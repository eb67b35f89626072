//! The AWS plan through the real model builder: a cold plan, convergence to a no-op, one
//! changed path → one call, endpoint churn → target calls only, deletion → nothing left, and
//! the quotas Tollgate enforces itself. The inventory is advanced with `Inventory::record`,
//! the same bookkeeping the SDK layer does after each successful call.

use std::collections::BTreeSet;

use tollgate::sources::manifest_dir::parse_manifests;
use tollgate::{build, BuildOptions};
use tollgate_aws::alb_stack::{build_stacks, AlbAction, AlbCondition, AlbLimits, AlbStack};
use tollgate_aws::inventory::Inventory;
use tollgate_aws::plan::{plan, plan_scoped, Change, Plan};
use tollgate_contract::{Diagnostic, Reason};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.1.1], conditions: {ready: true}}
- {addresses: [10.0.1.2], conditions: {ready: true}}
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
- {addresses: [10.0.2.1], conditions: {ready: true}}
"#;

/// HTTPS only, no `tls` and no `certificate-arn`: the certificate is discovered in ACM by
/// the rule's host, as the AWS Load Balancer Controller does.
const NO_TLS: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: notls, annotations: {alb.ingress.kubernetes.io/listen-ports: '[{\"HTTPS\": 443}]'}}\nspec:\n  ingressClassName: tollgate\n  rules: [{host: s.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n";

fn shop(api_path: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, annotations: {{alb.ingress.kubernetes.io/group.name: shop}}}}
spec:
  ingressClassName: tollgate
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
      - {{path: {api_path}, pathType: Prefix, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}
      - {{path: /static, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: admin, annotations: {{alb.ingress.kubernetes.io/group.name: shop}}}}
spec:
  ingressClassName: tollgate
  rules:
  - host: admin.example.com
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}]}}
"#
    )
}

fn stacks(manifests: &str) -> (Vec<AlbStack>, Vec<Diagnostic>) {
    let (snap, _) = parse_manifests("case.yaml", manifests, false);
    let out = build(&snap, &BuildOptions::default());
    let (stacks, stack_diags) = build_stacks("test", &out.model, &AlbLimits::default());
    let mut diags = out.diagnostics;
    diags.extend(stack_diags);
    (stacks, diags)
}

/// Carries a plan out on the inventory, as successful API calls would.
fn apply(inv: &mut Inventory, p: &Plan, stacks: &[AlbStack], next_arn: &mut u32) {
    for c in &p.changes {
        *next_arn += 1;
        let arn = format!("arn:aws:test:{next_arn}");
        inv.record(c, Some(&arn), Some("lb.example.aws"), stacks);
    }
}

fn count(p: &Plan, f: impl Fn(&Change) -> bool) -> usize {
    p.changes.iter().filter(|c| f(c)).count()
}

#[test]
fn cold_plan_converges_and_a_resync_changes_nothing() {
    let (desired, diags) = stacks(&format!("{SERVICES}---{}", shop("/api")));
    assert!(diags.is_empty(), "{diags:#?}");
    let mut inv = Inventory::default();
    let cold = plan(&desired, &inv);
    insta::assert_snapshot!(cold.to_string());
    let mut arn = 0;
    apply(&mut inv, &cold, &desired, &mut arn);
    let resync = plan(&desired, &inv);
    assert!(
        resync.is_empty(),
        "a no-op resync must make no call:\n{resync}"
    );
}

#[test]
fn one_changed_path_is_one_call() {
    let (before, _) = stacks(&format!("{SERVICES}---{}", shop("/api")));
    let mut inv = Inventory::default();
    let mut arn = 0;
    let p = plan(&before, &inv);
    apply(&mut inv, &p, &before, &mut arn);

    let (after, _) = stacks(&format!("{SERVICES}---{}", shop("/apis")));
    let p = plan(&after, &inv);
    assert_eq!(p.changes.len(), 1, "{p}");
    assert!(matches!(p.changes[0], Change::ModifyRule { .. }), "{p}");
    apply(&mut inv, &p, &after, &mut arn);
    assert!(plan(&after, &inv).is_empty());
}

#[test]
fn endpoint_churn_touches_only_targets() {
    let (before, _) = stacks(&format!("{SERVICES}---{}", shop("/api")));
    let mut inv = Inventory::default();
    let mut arn = 0;
    let p = plan(&before, &inv);
    apply(&mut inv, &p, &before, &mut arn);

    let churned = SERVICES.replace("- {addresses: [10.0.1.2], conditions: {ready: true}}", "- {addresses: [10.0.1.2], conditions: {ready: false, terminating: true}}\n- {addresses: [10.0.1.3], conditions: {ready: true}}");
    let (after, _) = stacks(&format!("{churned}---{}", shop("/api")));
    let p = plan(&after, &inv);
    let target_calls = count(&p, |c| {
        matches!(
            c,
            Change::RegisterTargets { .. } | Change::DeregisterTargets { .. }
        )
    });
    assert_eq!(
        (target_calls, p.changes.len()),
        (2, 2),
        "one register, one deregister, nothing else:\n{p}"
    );
}

#[test]
fn deleting_every_ingress_leaves_nothing() {
    let (desired, _) = stacks(&format!("{SERVICES}---{}", shop("/api")));
    let mut inv = Inventory::default();
    let mut arn = 0;
    let p = plan(&desired, &inv);
    apply(&mut inv, &p, &desired, &mut arn);
    let teardown = plan(&[], &inv);
    assert_eq!(
        count(&teardown, |c| matches!(
            c,
            Change::DeleteLoadBalancer { .. }
        )),
        1,
        "{teardown}"
    );
    assert_eq!(
        count(&teardown, |c| matches!(c, Change::DeleteTargetGroup { .. })),
        2,
        "{teardown}"
    );
    apply(&mut inv, &teardown, &[], &mut arn);
    assert_eq!(inv, Inventory::default());
}

#[test]
fn quotas_are_enforced_with_a_diagnostic_and_the_rest_deploys() {
    let paths: String = (0..120)
        .map(|i| format!("      - {{path: /p{i}, pathType: Exact, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"))
        .collect();
    let big = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: big, annotations: {{alb.ingress.kubernetes.io/group.name: shop, alb.ingress.kubernetes.io/group.order: '10'}}}}\nspec:\n  ingressClassName: tollgate\n  rules:\n  - host: big.example.com\n    http:\n      paths:\n{paths}"
    );
    let (desired, diags) = stacks(&format!("{SERVICES}---{}---\n{big}", shop("/api")));
    // The Ingress that does not fit (lowest precedence) is left out; the rest of the group,
    // shop's 3 routes and admin's 1, deploys.
    let rules = desired[0].listeners[0].rules.len();
    assert_eq!(rules, 4, "{:#?}", desired[0].listeners[0].rules);
    assert!(rules <= AlbLimits::default().rules_per_listener);
    let quota: Vec<_> = diags
        .iter()
        .filter(|d| d.reason == Reason::QuotaExceeded)
        .collect();
    assert_eq!(quota.len(), 1, "{quota:#?}");
    assert_eq!(quota[0].subject.name, "big");

    // HTTPS with no certificate anywhere (no tls Secret, no ARN, nothing in ACM for the
    // host): told, and the listener is not created.
    let (desired, _) = stacks(&format!("{SERVICES}---\n{NO_TLS}"));
    let empty_acm = Inventory {
        acm_certificates: Some(Vec::new()),
        ..Default::default()
    };
    let p = plan(&desired, &empty_acm);
    assert!(
        !p.changes
            .iter()
            .any(|c| matches!(c, Change::CreateListener { .. })),
        "{p}"
    );
    assert!(
        p.diagnostics
            .iter()
            .any(|d| d.reason == Reason::CertificateNotFound && d.message.contains("s.example.com")),
        "{:#?}",
        p.diagnostics
    );

    // A regex path cannot be an ALB rule.
    let rx = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: rx, annotations: {nginx.ingress.kubernetes.io/use-regex: 'true'}}\nspec:\n  ingressClassName: tollgate\n  rules: [{host: r.example.com, http: {paths: [{path: '/a(.*)', pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}]}}]\n";
    let (_, diags) = stacks(&format!("{SERVICES}---\n{rx}"));
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("served by the proxy provider only")),
        "{diags:#?}"
    );
}

/// The certificate a CreateListener in `p` carries.
fn listener_certificates(p: &Plan) -> Vec<String> {
    p.changes
        .iter()
        .find_map(|c| match c {
            Change::CreateListener { spec, .. } => Some(spec.certificates.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn acm_discovery_prefers_the_exact_name_over_a_wildcard() {
    use tollgate_aws::inventory::AcmCertificate;
    let (desired, _) = stacks(&format!("{SERVICES}---\n{NO_TLS}"));
    let cert = |arn: &str, names: &[&str]| AcmCertificate {
        arn: arn.into(),
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    let wildcard = cert("arn:aws:acm:r:1:certificate/a-wild", &["*.example.com"]);
    let exact = cert(
        "arn:aws:acm:r:1:certificate/z-exact",
        &["other.example.com", "s.example.com"],
    );
    let unrelated = cert(
        "arn:aws:acm:r:1:certificate/0-other",
        &["*.s.example.com", "example.com"],
    );
    let with = |certs: Vec<AcmCertificate>| Inventory {
        acm_certificates: Some(certs),
        ..Default::default()
    };
    let p = plan(&desired, &with(vec![wildcard.clone(), unrelated.clone()]));
    assert_eq!(listener_certificates(&p), vec![wildcard.arn.clone()], "{p}");
    let p = plan(
        &desired,
        &with(vec![wildcard.clone(), exact.clone(), unrelated]),
    );
    assert_eq!(listener_certificates(&p), vec![exact.arn.clone()], "{p}");
    assert!(p.diagnostics.is_empty(), "{:#?}", p.diagnostics);

    // Converged: the observed listener holds the discovered certificate → nothing to do.
    let mut inv = with(vec![wildcard, exact]);
    let cold = plan(&desired, &inv);
    for c in &cold.changes {
        inv.record(
            c,
            Some(&format!(
                "arn:new:{}",
                inv.target_groups.len() + inv.load_balancers.len()
            )),
            None,
            &desired,
        );
    }
    assert!(plan(&desired, &inv).is_empty(), "{}", plan(&desired, &inv));
}

/// The AWS cold plan (as `tollgate plan --provider aws` prints it) and its diagnostics for
/// every model fixture, then proof that recording it converges: many models, one snapshot
/// each. ACM is taken as listing one wildcard certificate, so discovery resolves.
#[test]
fn cold_plans_of_every_fixture() {
    use tollgate_aws::inventory::AcmCertificate;
    let common = std::fs::read_to_string("tests/fixtures/common-backends.json").expect("fixture");
    insta::glob!("fixtures/model/*.yaml", |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        if text.contains("# tollgate-test: single-load-balancer") {
            return; // a proxy-only case
        }
        let (mut snap, _) = parse_manifests("common-backends.json", &common, true);
        let (own, _) = parse_manifests("fixture.yaml", &text, false);
        snap.merge(own);
        let out = build(&snap, &BuildOptions::default());
        let (stacks, mut diags) = build_stacks("test", &out.model, &AlbLimits::default());
        let mut inv = Inventory {
            acm_certificates: Some(vec![AcmCertificate {
                arn: "arn:aws:acm:us-east-1:1:certificate/wildcard".into(),
                names: vec!["*.example.com".into()],
            }]),
            ..Default::default()
        };
        let cold = plan(&stacks, &inv);
        diags.extend(cold.diagnostics.iter().cloned());
        diags.sort();
        diags.dedup();
        let printed = format!(
            "{cold}\n{}",
            diags
                .iter()
                .map(|d| format!(
                    "{:?} {} {:?}: {}",
                    d.severity, d.subject, d.reason, d.message
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
        insta::assert_snapshot!(printed);
        let mut next = 0;
        apply(&mut inv, &cold, &stacks, &mut next);
        let again = plan(&stacks, &inv);
        assert!(
            again.is_empty(),
            "{}: not converged:\n{again}",
            path.display()
        );
    });
}

/// `healthcheck-port` by name, as the AWS Load Balancer Controller resolves it: the Service
/// port of that name — its numeric targetPort for `ip` targets, its NodePort for `instance`
/// targets; a named targetPort cannot be resolved for `ip` targets: the route answers 503 and
/// a diagnostic says why.
#[test]
fn named_healthcheck_ports_resolve_through_the_service() {
    let manifests = |target_type: &str, health_target: &str| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  ports:
  - {{name: http, port: 80, targetPort: 8080, nodePort: 30080}}
  - {{name: health, port: 81, targetPort: {health_target}, nodePort: 30081}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations: {{alb.ingress.kubernetes.io/target-type: {target_type}, alb.ingress.kubernetes.io/healthcheck-port: health}}
spec:
  ingressClassName: tollgate
  rules:
  - http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}]}}
"#
        )
    };
    let port_of = |m: &str| {
        let (snap, _) = parse_manifests("case.yaml", m, false);
        let out = build(&snap, &BuildOptions::default());
        let tg = out.model.load_balancers[0].target_groups.first().cloned();
        (tg.map(|t| t.health_check.port), out.diagnostics)
    };
    assert_eq!(port_of(&manifests("ip", "8081")).0.as_deref(), Some("8081"));
    assert_eq!(
        port_of(&manifests("instance", "8081")).0.as_deref(),
        Some("30081")
    );
    let (_, diags) = port_of(&manifests("ip", "health-port"));
    assert!(
        diags
            .iter()
            .any(|d| d.severity >= tollgate_contract::Severity::Warning
                && d.message.contains("healthcheck-port")
                && d.message.contains("health-port")
                && d.message.contains("answer 503")),
        "{diags:#?}"
    );
}

/// `ip-address-type: dualstack-without-public-ipv4` reaches ALB as written for an
/// internet-facing load balancer, and its managed security group admits IPv6 clients; an
/// internal one (which ALB refuses it for) gets dualstack, with a warning.
#[test]
fn dualstack_without_public_ipv4() {
    let manifests = |scheme: &str| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations: {{alb.ingress.kubernetes.io/scheme: {scheme}, alb.ingress.kubernetes.io/ip-address-type: dualstack-without-public-ipv4}}
spec:
  ingressClassName: tollgate
  rules:
  - http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
"#
        )
    };
    let (s, diags) = stacks(&manifests("internet-facing"));
    assert!(diags.is_empty(), "{diags:#?}");
    let lb = &s[0].load_balancer;
    assert_eq!(lb.ip_address_type, "dualstack-without-public-ipv4");
    let sg = lb.managed_security_group.as_ref().expect("managed group");
    assert!(
        sg.ingress.contains(&(80, "::/0".to_string())),
        "{:?}",
        sg.ingress
    );
    let (s, diags) = stacks(&manifests("internal"));
    assert_eq!(s[0].load_balancer.ip_address_type, "dualstack");
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("dualstack-without-public-ipv4")),
        "{diags:#?}"
    );
}

fn fixture_cert(name: &str) -> String {
    let path = format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Ingress `i` as its own stack: path `/p{path}` to `svc`; the even ones with a TLS Secret
/// (imported into ACM), so certificate clean-up is in play.
fn own_stack(i: usize, path: usize, svc: &str) -> String {
    let tls = if i % 2 == 0 {
        format!("  tls: [{{hosts: [s{i}.example.com], secretName: tls-{i}}}]\n")
    } else {
        String::new()
    };
    let indent = |pem: String| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let secret = if i % 2 == 0 {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls-{i}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(fixture_cert("a.crt")),
            indent(fixture_cert("a.key"))
        )
    } else {
        String::new()
    };
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: ing{i}}}\nspec:\n  ingressClassName: tollgate\n{tls}  rules: [{{host: s{i}.example.com, http: {{paths: [{{path: /p{path}, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}}}]\n{secret}"
    )
}

/// Issue 16: a reconcile that skips the stacks desired exactly as when AWS last matched them
/// plans the same changes as one that looks at every stack — through path changes, Service
/// changes, deletions (with their imported certificates) and additions.
#[test]
fn planning_only_changed_stacks_plans_what_planning_all_does() {
    // (path, service) of each Ingress; None when deleted.
    let mut ings: Vec<Option<(usize, &str)>> = (0..6).map(|i| Some((i, "web"))).collect();
    let manifests = |ings: &[Option<(usize, &str)>]| -> String {
        let mut m = SERVICES.to_string();
        for (i, ing) in ings.iter().enumerate() {
            if let Some((path, svc)) = ing {
                m.push_str(&own_stack(i, *path, svc));
            }
        }
        m
    };
    let mut inv = Inventory::default();
    let mut arn = 0;
    let (mut last, diags) = stacks(&manifests(&ings));
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(last.len(), 6);
    let cold = plan(&last, &inv);
    apply(&mut inv, &cold, &last, &mut arn);
    assert!(plan(&last, &inv).is_empty());

    let steps: Vec<(usize, Option<(usize, &str)>)> = vec![
        (1, Some((7, "web"))),
        (2, Some((2, "api"))),
        (4, None),
        (4, Some((4, "web"))),
        (0, None),
        (3, Some((9, "api"))),
        (5, None),
    ];
    for (step, (i, now)) in steps.into_iter().enumerate() {
        ings[i] = now;
        let (desired, _) = stacks(&manifests(&ings));
        let settled: BTreeSet<String> = desired
            .iter()
            .filter(|s| last.iter().any(|l| l == *s))
            .map(|s| s.stack.clone())
            .collect();
        assert_eq!(
            settled.len(),
            desired.len() - usize::from(now.is_some()),
            "step {step}: every other stack is unchanged"
        );
        let scoped = plan_scoped(&desired, &inv, &BTreeSet::new(), &settled);
        let full = plan(&desired, &inv);
        assert!(!full.is_empty(), "step {step} changes something");
        assert_eq!(scoped.to_string(), full.to_string(), "step {step}");
        assert_eq!(scoped.changes, full.changes, "step {step}");
        if now.is_none() && i % 2 == 0 {
            assert!(
                scoped
                    .changes
                    .iter()
                    .any(|c| matches!(c, Change::DeleteCertificate { .. })),
                "step {step}: the deleted Ingress's imported certificate goes:\n{scoped}"
            );
        }
        apply(&mut inv, &scoped, &desired, &mut arn);
        assert!(plan(&desired, &inv).is_empty(), "step {step} converged");
        last = desired;
    }
}

/// An ingress-nginx canary on ALB: the header rules ahead of the main's path, the path's
/// forward weighted between the two target groups (ALB weights, the split kept); the
/// cookie is left to the proxy (ALB cannot match a cookie by name) and the canary Ingress
/// makes no load balancer of its own.
#[test]
fn an_ingress_nginx_canary_becomes_header_rules_and_a_weighted_forward() {
    let ingress = |name: &str, annotations: &str, svc: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: tollgate\n  rules: [{{host: app.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}}}]\n"
        )
    };
    let n = "nginx.ingress.kubernetes.io";
    let manifests = format!(
        "{SERVICES}---\n{}---\n{}",
        ingress("app", "", "web"),
        ingress(
            "app-canary",
            &format!("{n}/canary: 'true', {n}/canary-by-header: X-Canary, {n}/canary-by-cookie: c, {n}/canary-weight: '10'"),
            "api"
        )
    );
    let (s, diags) = stacks(&manifests);
    assert_eq!(s.len(), 1, "the canary makes no load balancer of its own");
    assert!(
        diags.iter().any(|d| d.message.contains("canary-by-cookie")),
        "the cookie is named as not honoured by aws: {diags:#?}"
    );
    let tg = |svc: &str| {
        s[0].target_groups
            .iter()
            .find(|t| t.model_id.contains(svc))
            .map(|t| t.name.clone())
            .unwrap_or_else(|| panic!("a target group for {svc}"))
    };
    let (web, api) = (tg("web"), tg("api"));
    let http = s[0]
        .listeners
        .iter()
        .find(|l| l.port == 80)
        .expect("HTTP listener");
    let header = |v: &str| AlbCondition::HttpHeader("X-Canary".into(), vec![v.into()]);
    let forward = |groups: Vec<(String, u32)>| AlbAction::Forward {
        target_groups: groups,
        stickiness_seconds: None,
    };
    let rules: Vec<(&Vec<AlbCondition>, &AlbAction)> = http
        .rules
        .iter()
        .map(|r| (&r.conditions, &r.action))
        .collect();
    let with = |c: &AlbCondition| {
        rules
            .iter()
            .position(|(cs, _)| cs.contains(c))
            .unwrap_or_else(|| panic!("a rule with {c:?}: {rules:#?}"))
    };
    let (always, never) = (with(&header("always")), with(&header("never")));
    assert_eq!(*rules[always].1, forward(vec![(api.clone(), 1)]));
    assert_eq!(*rules[never].1, forward(vec![(web.clone(), 1)]));
    let base = rules
        .iter()
        .position(|(cs, _)| !cs.iter().any(|c| matches!(c, AlbCondition::HttpHeader(..))))
        .expect("the path's own rule");
    assert!(always < base && never < base, "{rules:#?}");
    let AlbAction::Forward { target_groups, .. } = rules[base].1 else {
        panic!("{rules:#?}");
    };
    let mut split = target_groups.clone();
    split.sort();
    let mut want = vec![(web, 9), (api, 1)];
    want.sort();
    assert_eq!(split, want);
    assert!(
        !rules.iter().any(|(cs, _)| cs
            .iter()
            .any(|c| matches!(c, AlbCondition::HttpHeader(h, _) if h == "cookie"))),
        "{rules:#?}"
    );
}
