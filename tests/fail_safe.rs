//! Fail safe on the Ingresses users already run: the annotation registry's rules as the
//! builder applies them (protective → not served, snippet → refused, other → warned,
//! unknown → warned with the closest name), the README reference generated from the
//! registry, and last known good (an Ingress that turns invalid keeps being served).

use tollgate::model_builder::annotation_registry::markdown;
use tollgate::sources::manifest_dir::parse_manifests;
use tollgate::{build, BuildOptions, BuildOutput, Grouping, LastKnownGood, ProviderKind};
use tollgate_contract::{Action, Diagnostic, Reason, Severity};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec: {ports: [{name: http, port: 80}]}
"#;

fn ingress(name: &str, host: &str, path: &str, svc: &str, annotations: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, uid: uid-{name}, generation: 1, annotations: {{{annotations}}}}}
spec:
  ingressClassName: tollgate
  rules: [{{host: {host}, http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}}}]
"#
    )
}

fn opts(provider: ProviderKind) -> BuildOptions {
    BuildOptions {
        grouping: match provider {
            ProviderKind::Proxy => Grouping::Single("proxy".into()),
            ProviderKind::Aws => Grouping::ByIngressGroup,
        },
        provider,
        ..BuildOptions::default()
    }
}

fn snapshot(docs: &[String]) -> tollgate::ClusterSnapshot {
    let text = format!("{SERVICES}---\n{}", docs.join("---\n"));
    let (snap, diags) = parse_manifests("case.yaml", &text, false);
    assert!(diags.is_empty(), "{diags:?}");
    snap
}

fn run(docs: &[String], provider: ProviderKind) -> BuildOutput {
    build(&snapshot(docs), &opts(provider))
}

/// The rules of the plain-HTTP listener that match a path (not the fences and defaults).
fn path_rules(out: &BuildOutput) -> Vec<&tollgate_contract::Rule> {
    out.model
        .load_balancers
        .iter()
        .flat_map(|lb| &lb.listeners)
        .filter(|l| l.port == 80)
        .flat_map(|l| &l.rules)
        .filter(|r| r.conditions.path.is_some())
        .collect()
}

/// The (host, path, action) of every rule served.
fn served(out: &BuildOutput) -> Vec<(String, String, String)> {
    path_rules(out)
        .into_iter()
        .filter_map(|r| {
            let host = r.conditions.host.as_ref()?.to_string();
            let path = r.conditions.path.as_ref()?.path.clone();
            let action = match &r.action {
                Action::Forward(f) => f.target_groups[0].target_group.clone(),
                other => format!("{other:?}"),
            };
            Some((host, path, action))
        })
        .collect()
}

fn find<'a>(out: &'a BuildOutput, reason: Reason, name: &str) -> Vec<&'a Diagnostic> {
    out.diagnostics
        .iter()
        .filter(|d| d.reason == reason && d.subject.name == name)
        .collect()
}

#[test]
fn protective_annotation_not_honoured_is_not_served() {
    let out = run(
        &[
            ingress(
                "guarded",
                "a.example.com",
                "/",
                "web",
                "nginx.ingress.kubernetes.io/enable-modsecurity: 'true'",
            ),
            ingress("open", "b.example.com", "/", "web", ""),
        ],
        ProviderKind::Proxy,
    );
    let errs = find(&out, Reason::AnnotationUnsupported, "guarded");
    assert_eq!(errs.len(), 1, "{:?}", out.diagnostics);
    assert_eq!(errs[0].severity, Severity::Error);
    assert!(errs[0].message.contains("enable-modsecurity"));
    let hosts: Vec<String> = served(&out).into_iter().map(|r| r.0).collect();
    assert!(!hosts.contains(&"a.example.com".to_string()), "{hosts:?}");
    assert!(hosts.contains(&"b.example.com".to_string()), "{hosts:?}");
}

#[test]
fn protective_annotation_honoured_by_one_provider_only() {
    // The load balancer's own security groups: aws applies them, the proxy has none.
    let docs = [ingress(
        "groups",
        "a.example.com",
        "/",
        "web",
        "alb.ingress.kubernetes.io/security-groups: sg-0123",
    )];
    let aws = run(&docs, ProviderKind::Aws);
    assert!(!aws.has_errors(), "{:?}", aws.diagnostics);
    assert_eq!(served(&aws).len(), 1);
    let proxy = run(&docs, ProviderKind::Proxy);
    assert_eq!(
        find(&proxy, Reason::AnnotationUnsupported, "groups").len(),
        1
    );
    assert!(served(&proxy).is_empty());
}

#[test]
fn inbound_cidrs_are_the_proxys_allow_list() {
    let cidrs = |v: &str| {
        ingress(
            "cidrs",
            "a.example.com",
            "/",
            "web",
            &format!("alb.ingress.kubernetes.io/inbound-cidrs: '{v}'"),
        )
    };
    // aws: the security group's rule, no extra rules.
    let aws = run(&[cidrs("10.0.0.0/8")], ProviderKind::Aws);
    assert_eq!(served(&aws).len(), 1);
    // proxy: the path limited to those sources, and 403 for everyone else.
    let proxy = run(&[cidrs("10.0.0.0/8")], ProviderKind::Proxy);
    assert!(!proxy.has_errors(), "{:?}", proxy.diagnostics);
    let rules = served(&proxy);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules[1].2.contains("403"), "{rules:?}");
    // Open to everyone: nothing to enforce.
    assert_eq!(
        served(&run(&[cidrs("0.0.0.0/0, ::/0")], ProviderKind::Proxy)).len(),
        1
    );
    // With an ingress-nginx allow-list too: one allow-list only, refused.
    let both = run(
        &[ingress(
            "both",
            "a.example.com",
            "/",
            "web",
            "alb.ingress.kubernetes.io/inbound-cidrs: 10.0.0.0/8, nginx.ingress.kubernetes.io/allowlist-source-range: 10.1.0.0/16",
        )],
        ProviderKind::Proxy,
    );
    assert_eq!(find(&both, Reason::AnnotationUnsupported, "both").len(), 1);
}

#[test]
fn protective_annotation_on_a_service_closes_its_routes() {
    let svc = r#"
apiVersion: v1
kind: Service
metadata: {name: guarded, annotations: {alb.ingress.kubernetes.io/auth-type: oidc}}
spec: {ports: [{name: http, port: 80}]}
"#;
    let out = run(
        &[
            svc.to_string(),
            ingress("uses-guarded", "a.example.com", "/", "guarded", ""),
        ],
        ProviderKind::Aws,
    );
    let errs = find(&out, Reason::AnnotationUnsupported, "uses-guarded");
    assert_eq!(errs.len(), 1, "{:?}", out.diagnostics);
    assert_eq!(errs[0].severity, Severity::Error);
    assert_eq!(
        find(&out, Reason::AnnotationUnsupported, "guarded").len(),
        1
    );
    let rules = served(&out);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(
        rules[0].2.contains("FixedResponse") && rules[0].2.contains("503"),
        "the route must answer 503, not forward: {rules:?}"
    );
}

#[test]
fn snippets_are_refused() {
    for provider in ProviderKind::ALL {
        let out = run(
            &[ingress(
                "snippet",
                "a.example.com",
                "/",
                "web",
                "nginx.ingress.kubernetes.io/configuration-snippet: 'more_set_headers \"X-Frame-Options: DENY\";'",
            )],
            provider,
        );
        let errs = find(&out, Reason::AnnotationRefused, "snippet");
        assert_eq!(errs.len(), 1, "{provider}: {:?}", out.diagnostics);
        assert!(served(&out).is_empty(), "{provider}");
    }
}

#[test]
fn other_annotations_not_honoured_are_warned_and_served() {
    let docs = [ingress(
        "timeouts",
        "a.example.com",
        "/",
        "web",
        "nginx.ingress.kubernetes.io/limit-rate: '1024', alb.ingress.kubernetes.io/healthcheck-path: /healthz",
    )];
    let out = run(&docs, ProviderKind::Proxy);
    let warns = find(&out, Reason::AnnotationIgnored, "timeouts");
    assert_eq!(warns.len(), 2, "{:?}", out.diagnostics);
    assert!(warns.iter().all(|d| d.severity == Severity::Warning));
    assert_eq!(served(&out).len(), 1);
    // The same annotations under aws: healthcheck-path is honoured, the nginx one is not.
    let aws = run(&docs, ProviderKind::Aws);
    let warns = find(&aws, Reason::AnnotationIgnored, "timeouts");
    assert_eq!(warns.len(), 1, "{:?}", aws.diagnostics);
    assert!(warns[0].message.contains("limit-rate"));
}

#[test]
fn unknown_annotation_is_warned_with_the_closest_name() {
    let out = run(
        &[ingress(
            "typo",
            "a.example.com",
            "/",
            "web",
            "nginx.ingress.kubernetes.io/rewrite-targt: /",
        )],
        ProviderKind::Proxy,
    );
    let warns = find(&out, Reason::AnnotationUnknown, "typo");
    assert_eq!(warns.len(), 1, "{:?}", out.diagnostics);
    assert!(
        warns[0]
            .message
            .contains("nginx.ingress.kubernetes.io/rewrite-target"),
        "{}",
        warns[0].message
    );
    assert_eq!(served(&out).len(), 1);
}

#[test]
fn readme_annotation_reference_is_the_registry() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let begin = "<!-- annotations:begin -->\n";
    let end = "<!-- annotations:end -->";
    let start = readme
        .find(begin)
        .expect("README has the annotations:begin marker")
        + begin.len();
    let stop = readme[start..].find(end).expect("annotations:end marker") + start;
    // Compared line by line, so a failure names the rows that differ, not two whole tables.
    let generated = markdown();
    let readme_lines: Vec<&str> = readme[start..stop].lines().collect();
    let generated_lines: Vec<&str> = generated.lines().collect();
    let differ: Vec<_> = readme_lines
        .iter()
        .zip(&generated_lines)
        .filter(|(a, b)| a != b)
        .collect();
    assert!(
        differ.is_empty() && readme_lines.len() == generated_lines.len(),
        "README's annotation reference differs from the registry (regenerate it with `tollgate annotations`): {differ:#?}, {} vs {} lines",
        readme_lines.len(),
        generated_lines.len()
    );
}

// ---- last known good ----

fn lkg_run(lkg: &mut LastKnownGood, docs: &[String], provider: ProviderKind) -> BuildOutput {
    lkg.build(&snapshot(docs), &opts(provider))
}

#[test]
fn an_ingress_turned_invalid_is_served_as_its_last_valid_version() {
    for provider in ProviderKind::ALL {
        let mut lkg = LastKnownGood::default();
        let v1 = ingress("app", "a.example.com", "/v1", "web", "");
        let first = lkg_run(&mut lkg, std::slice::from_ref(&v1), provider);
        assert!(!first.has_errors(), "{:?}", first.diagnostics);
        let before = served(&first);
        assert_eq!(before.len(), 1);

        // A broken edit: a bad value and a new path.
        let broken = ingress(
            "app",
            "a.example.com",
            "/v2",
            "other",
            "nginx.ingress.kubernetes.io/use-regex: maybe",
        )
        .replace("generation: 1", "generation: 2");
        let out = lkg_run(&mut lkg, std::slice::from_ref(&broken), provider);
        assert_eq!(served(&out), before, "{provider}: still served as before");
        assert_eq!(
            find(&out, Reason::AnnotationInvalid, "app").len(),
            1,
            "{provider}: the current version's error is reported: {:?}",
            out.diagnostics
        );
        let kept = find(&out, Reason::LastValidVersionServed, "app");
        assert_eq!(kept.len(), 1, "{provider}");
        assert_eq!(kept[0].severity, Severity::Error);
        assert!(
            kept[0].message.contains("generation 1"),
            "{}",
            kept[0].message
        );
        assert!(out.held_load_balancers.is_empty());

        // Still broken on the next change elsewhere: still served.
        let out = lkg_run(
            &mut lkg,
            &[broken, ingress("b", "b.example.com", "/", "web", "")],
            provider,
        );
        assert!(served(&out).contains(&before[0]), "{provider}");

        // Fixed: the new version is served.
        let fixed = ingress("app", "a.example.com", "/v2", "other", "");
        let out = lkg_run(&mut lkg, &[fixed], provider);
        assert!(!out.has_errors(), "{:?}", out.diagnostics);
        let now = served(&out);
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].1, "/v2");

        // Deleted: gone, and a re-created invalid one is not served from memory.
        let out = lkg_run(&mut lkg, &[], provider);
        assert!(served(&out).is_empty());
        let out = lkg_run(
            &mut lkg,
            &[ingress(
                "app",
                "a.example.com",
                "/v3",
                "web",
                "nginx.ingress.kubernetes.io/use-regex: maybe",
            )],
            provider,
        );
        assert!(served(&out).is_empty(), "{provider}");
        assert!(out.held_load_balancers.is_empty(), "{provider}");
    }
}

#[test]
fn leaving_the_class_removes_the_last_valid_version() {
    let mut lkg = LastKnownGood::default();
    let v1 = ingress("app", "a.example.com", "/", "web", "");
    assert_eq!(
        served(&lkg_run(
            &mut lkg,
            std::slice::from_ref(&v1),
            ProviderKind::Proxy
        ))
        .len(),
        1
    );
    let moved = v1.replace("ingressClassName: tollgate", "ingressClassName: nginx");
    assert!(served(&lkg_run(&mut lkg, &[moved], ProviderKind::Proxy)).is_empty());
    // Back in the class but invalid: nothing remembered any more.
    let back = ingress(
        "app",
        "a.example.com",
        "/",
        "web",
        "nginx.ingress.kubernetes.io/use-regex: maybe",
    );
    assert!(served(&lkg_run(&mut lkg, &[back], ProviderKind::Proxy)).is_empty());
}

#[test]
fn after_a_restart_an_invalid_ingress_holds_its_load_balancer() {
    let mut lkg = LastKnownGood::default();
    let broken = ingress(
        "app",
        "a.example.com",
        "/",
        "web",
        "alb.ingress.kubernetes.io/group.name: shop, nginx.ingress.kubernetes.io/use-regex: maybe",
    );
    let out = lkg_run(&mut lkg, std::slice::from_ref(&broken), ProviderKind::Aws);
    assert_eq!(
        out.held_load_balancers.iter().collect::<Vec<_>>(),
        ["group/shop"]
    );
    assert_eq!(find(&out, Reason::LastValidVersionServed, "app").len(), 1);
    // Still held on later builds, until fixed.
    let out = lkg_run(&mut lkg, &[broken], ProviderKind::Aws);
    assert!(out.held_load_balancers.contains("group/shop"));
    let fixed = ingress(
        "app",
        "a.example.com",
        "/",
        "web",
        "alb.ingress.kubernetes.io/group.name: shop",
    );
    let out = lkg_run(&mut lkg, &[fixed], ProviderKind::Aws);
    assert!(out.held_load_balancers.is_empty());
    // An Ingress created invalid while Tollgate runs had nothing serving: nothing is held.
    let new_broken = ingress(
        "new",
        "n.example.com",
        "/",
        "web",
        "nginx.ingress.kubernetes.io/use-regex: maybe",
    );
    let out = lkg_run(&mut lkg, &[new_broken], ProviderKind::Aws);
    assert!(out.held_load_balancers.is_empty());
}

#[test]
fn the_last_valid_version_follows_endpoint_changes() {
    let slice = |ip: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n- {{addresses: ['{ip}'], conditions: {{ready: true}}}}\n"
        )
    };
    let targets = |out: &BuildOutput| -> Vec<String> {
        out.model
            .load_balancers
            .iter()
            .flat_map(|lb| &lb.target_groups)
            .flat_map(|tg| &tg.targets)
            .map(|t| format!("{:?}", t.address))
            .collect()
    };
    let mut lkg = LastKnownGood::default();
    let v1 = ingress("app", "a.example.com", "/", "web", "");
    let out = lkg_run(&mut lkg, &[v1, slice("10.0.0.1")], ProviderKind::Proxy);
    assert!(targets(&out)[0].contains("10.0.0.1"), "{:?}", targets(&out));
    let broken = ingress(
        "app",
        "a.example.com",
        "/",
        "web",
        "nginx.ingress.kubernetes.io/use-regex: maybe",
    );
    let out = lkg_run(&mut lkg, &[broken, slice("10.0.0.2")], ProviderKind::Proxy);
    assert_eq!(served(&out).len(), 1, "still served");
    let t = targets(&out);
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(t[0].contains("10.0.0.2"), "endpoint changes apply: {t:?}");
}

#[test]
fn allow_and_deny_lists_become_source_conditions_and_403s() {
    for provider in ProviderKind::ALL {
        let allow = run(
            &[ingress(
                "allow",
                "a.example.com",
                "/",
                "web",
                "nginx.ingress.kubernetes.io/whitelist-source-range: '10.0.0.0/8, 192.168.1.1'",
            )],
            provider,
        );
        assert!(!allow.has_errors(), "{provider}: {:?}", allow.diagnostics);
        let rules = path_rules(&allow);
        assert_eq!(rules.len(), 2, "{provider}: {rules:#?}");
        assert_eq!(
            rules[0].conditions.source_ips,
            ["10.0.0.0/8", "192.168.1.1/32"],
            "{provider}: the allowed sources first"
        );
        assert!(matches!(rules[0].action, Action::Forward(_)));
        assert!(rules[1].conditions.source_ips.is_empty());
        assert!(
            matches!(&rules[1].action, Action::FixedResponse(f) if f.status_code == 403),
            "{provider}: everyone else gets 403: {:?}",
            rules[1].action
        );

        let deny = run(
            &[ingress(
                "deny",
                "a.example.com",
                "/",
                "web",
                "nginx.ingress.kubernetes.io/denylist-source-range: 10.1.0.0/16",
            )],
            provider,
        );
        assert!(!deny.has_errors(), "{provider}: {:?}", deny.diagnostics);
        let rules = path_rules(&deny);
        assert_eq!(rules.len(), 2, "{provider}: {rules:#?}");
        assert_eq!(rules[0].conditions.source_ips, ["10.1.0.0/16"]);
        assert!(matches!(&rules[0].action, Action::FixedResponse(f) if f.status_code == 403));
        assert!(matches!(rules[1].action, Action::Forward(_)));
    }
}

#[test]
fn deny_then_allow_then_403_when_both_lists_are_set() {
    let out = run(
        &[ingress(
            "both",
            "a.example.com",
            "/",
            "web",
            "nginx.ingress.kubernetes.io/allowlist-source-range: 10.0.0.0/8, nginx.ingress.kubernetes.io/denylist-source-range: 10.1.0.0/16",
        )],
        ProviderKind::Proxy,
    );
    assert!(!out.has_errors(), "{:?}", out.diagnostics);
    let listener = out.model.load_balancers[0]
        .listeners
        .iter()
        .find(|l| l.port == 80)
        .expect("http");
    // Evaluated with the model's reference first-match semantics.
    let answer = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().expect("ip");
        let req = tollgate_contract::matching::RequestFacts {
            host: "a.example.com",
            path: "/x",
            method: "GET",
            query: "",
            headers: &[],
            source_ip: Some(ip),
        };
        match listener.route(&req) {
            Action::FixedResponse(f) => f.status_code,
            Action::Forward(_) => 200,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(answer("10.1.2.3"), 403, "denied inside the allowed range");
    assert_eq!(answer("10.2.2.3"), 200, "allowed");
    assert_eq!(answer("192.168.0.1"), 403, "neither");
}

#[test]
fn source_ranges_that_cannot_be_enforced_are_refused() {
    // A default backend: no rule can limit it.
    let with_default = ingress(
        "dflt",
        "a.example.com",
        "/",
        "web",
        "nginx.ingress.kubernetes.io/allowlist-source-range: 10.0.0.0/8",
    )
    .replace(
        "  rules:",
        "  defaultBackend: {service: {name: web, port: {number: 80}}}\n  rules:",
    );
    let out = run(&[with_default], ProviderKind::Proxy);
    assert_eq!(find(&out, Reason::AnnotationUnsupported, "dflt").len(), 1);
    assert!(served(&out).is_empty());
    let bad = run(
        &[ingress(
            "bad",
            "a.example.com",
            "/",
            "web",
            "nginx.ingress.kubernetes.io/allowlist-source-range: not-a-cidr",
        )],
        ProviderKind::Proxy,
    );
    assert_eq!(find(&bad, Reason::AnnotationInvalid, "bad").len(), 1);
}

#[test]
fn an_allow_list_becomes_an_alb_source_ip_condition_and_a_403_rule() {
    use tollgate_aws::alb_stack::{build_stacks, AlbAction, AlbCondition, AlbLimits};
    let out = run(
        &[ingress(
            "allow",
            "a.example.com",
            "/",
            "web",
            "nginx.ingress.kubernetes.io/allowlist-source-range: 10.0.0.0/8",
        )],
        ProviderKind::Aws,
    );
    let (stacks, diags) = build_stacks("c", &out.model, &AlbLimits::default());
    assert!(diags.is_empty(), "{diags:?}");
    let rules = &stacks[0].listeners[0].rules;
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert!(rules[0]
        .conditions
        .contains(&AlbCondition::SourceIp(vec!["10.0.0.0/8".into()])));
    assert!(
        matches!(&rules[1].action, AlbAction::FixedResponse { status_code, .. } if status_code == "403"),
        "{:?}",
        rules[1].action
    );
}
