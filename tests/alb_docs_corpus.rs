//! Ingresses as the AWS Load Balancer Controller's documentation and examples write them
//! (tests/fixtures/alb-docs, each file citing its page): moved over unchanged — the class
//! `alb` pointed at Tollgate, nothing else edited — each plans for AWS without an Error
//! (issue 13: nobody rewrites an Ingress to switch). Files are planned one at a time, as
//! the docs reuse names across pages.
//!
//! Where a page writes something Tollgate refuses, the file is listed in [`REFUSED`] with
//! the reason, and the test checks that the refusal is still an Error naming it (never a
//! silent drop), so that the list shrinks as support grows.

use tollgate::sources::manifest_dir::parse_manifests;
use tollgate::{build, BuildOptions, Grouping, ProviderKind};
use tollgate_aws::alb_stack::{build_stacks, AlbLimits};
use tollgate_aws::inventory::{AcmCertificate, Inventory};
use tollgate_aws::plan::plan;
use tollgate_contract::Severity;

/// Files whose Ingresses Tollgate refuses, with a fragment of the Error each must carry.
const REFUSED: &[(&str, &str)] = &[
    // `path: /*` with `pathType: Prefix`, as the URL-rewrite page writes it: the AWS Load
    // Balancer Controller refuses it too ("prefix path shouldn't contain wildcards").
    ("16-host-header-rewrite.yaml", "may hold only letters"),
];

const ALB_CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: alb}\nspec: {controller: tollgate.io/ingress-controller}\n";

#[test]
fn the_controllers_documented_ingresses_plan_without_an_error() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alb-docs");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus is there: {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(path).expect("fixture");
        let (mut snap, source_diags) = parse_manifests(&name, &text, false);
        let (class, _) = parse_manifests("class.yaml", ALB_CLASS, false);
        snap.merge(class);
        let opts = BuildOptions {
            grouping: Grouping::ByIngressGroup,
            provider: ProviderKind::Aws,
            // A page that sets no class relies on the controller taking such Ingresses.
            watch_ingress_without_class: true,
            ingress_class: Some("alb".into()),
            ..BuildOptions::default()
        };
        let out = build(&snap, &opts);
        let (stacks, mut diags) = build_stacks("docs", &out.model, &AlbLimits::default());
        // The account: one ACM certificate for discovery, and the target groups made
        // outside Kubernetes that `targetGroupName` forwards name (looked up by name).
        let inv = Inventory {
            acm_certificates: Some(vec![AcmCertificate {
                arn: "arn:aws:acm:us-west-2:111122223333:certificate/discovered".into(),
                names: vec!["*.example.com".into(), "example.com".into()],
            }]),
            ids_by_name: ["name-of-your-target-group", "non-k8s-target-group"]
                .iter()
                .map(|n| {
                    (
                        format!("tg:{n}"),
                        format!("arn:aws:elasticloadbalancing:us-west-2:111122223333:targetgroup/{n}/0123456789abcdef"),
                    )
                })
                .collect(),
            ..Inventory::default()
        };
        let cold = plan(&stacks, &inv);
        diags.extend(out.diagnostics.iter().cloned());
        diags.extend(cold.diagnostics.iter().cloned());
        diags.extend(source_diags);
        let errors: Vec<String> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}: {}", d.subject, d.message))
            .collect();
        match REFUSED.iter().find(|(f, _)| *f == name) {
            Some((_, why)) if !errors.iter().any(|e| e.contains(why)) => failures.push(format!(
                "{name}: expected an Error about {why:?}, got {errors:#?}"
            )),
            Some(_) => {}
            None if !errors.is_empty() => failures.push(format!("{name}: {errors:#?}")),
            None if out
                .model
                .load_balancers
                .iter()
                .all(|lb| lb.ingresses.is_empty()) =>
            {
                failures.push(format!("{name}: no Ingress served: {:#?}", out.diagnostics))
            }
            None => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
