//! Snapshot tests of the model (and its diagnostics) for every example and every edge-case
//! fixture. Review changes with `cargo insta review`.

use std::path::Path;

use serde::Serialize;
use tollgate::sources::manifest_dir::{load_dir, parse_manifests};
use tollgate::{build, BuildOptions, ClusterSnapshot, Grouping, ProviderKind};
use tollgate_contract::{DesiredState, Diagnostic};

#[derive(Serialize)]
struct Planned {
    diagnostics: Vec<Diagnostic>,
    model: DesiredState,
}

fn plan(
    snapshot: &ClusterSnapshot,
    mut source_diags: Vec<Diagnostic>,
    grouping: Grouping,
) -> Planned {
    let opts = BuildOptions {
        provider: if matches!(grouping, Grouping::Single(_)) {
            ProviderKind::Proxy
        } else {
            ProviderKind::Aws
        },
        grouping,
        ..BuildOptions::default()
    };
    let out = build(snapshot, &opts);
    source_diags.extend(out.diagnostics);
    Planned {
        diagnostics: source_diags,
        model: out.model,
    }
}

#[test]
fn examples_one_load_balancer_per_ingress() {
    let (snap, diags) = load_dir(Path::new("examples")).expect("examples/ is readable");
    let planned = plan(&snap, diags, Grouping::ByIngressGroup);
    assert!(planned.diagnostics.is_empty(), "{:#?}", planned.diagnostics);
    assert_eq!(
        planned.model.load_balancers.len(),
        6,
        "one load balancer per example Ingress"
    );
    insta::assert_yaml_snapshot!(planned);
}

#[test]
fn examples_as_the_proxy_serves_them() {
    let (snap, diags) = load_dir(Path::new("examples")).expect("examples/ is readable");
    let planned = plan(&snap, diags, Grouping::Single("proxy".into()));
    insta::assert_yaml_snapshot!(planned);
}

#[test]
fn edge_cases() {
    let common = std::fs::read_to_string("tests/fixtures/common-backends.json").expect("fixture");
    insta::glob!("fixtures/model/*.yaml", |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("fixture");
        let (mut snap, _) = parse_manifests("common-backends.json", &common, true);
        let (own, diags) = parse_manifests(name, &text, false);
        snap.merge(own);
        let grouping = if text.contains("# tollgate-test: single-load-balancer") {
            Grouping::Single("proxy".into())
        } else {
            Grouping::ByIngressGroup
        };
        insta::assert_yaml_snapshot!(plan(&snap, diags, grouping));
    });
}
