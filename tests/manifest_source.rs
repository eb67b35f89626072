//! The manifest-directory source on a real directory: formats, bad files beside good ones,
//! and hot reload on create, modify and delete.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tollgate::sources::manifest_dir::{load_dir, ManifestDirSource};
use tollgate::sources::{Source, SourceState};
use tollgate_contract::Reason;

fn names(state: &SourceState) -> Vec<String> {
    let mut v: Vec<String> = state
        .snapshot
        .ingresses
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    v.sort();
    v
}

fn ingress_yaml(name: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
    )
}

#[test]
fn reads_yaml_multi_document_json_and_lists_and_skips_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("a.yaml"),
        format!("{}---\n{}---\n", ingress_yaml("one"), ingress_yaml("two")),
    )
    .unwrap();
    std::fs::write(
        d.join("b.json"),
        r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}},
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop"},"spec":{"ports":[{"port":80}]}},
            {"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"type":"kubernetes.io/tls","stringData":{"tls.crt":"x","tls.key":"y"}}
        ]}"#,
    )
    .unwrap();
    std::fs::create_dir(d.join("nested")).unwrap();
    std::fs::write(d.join("nested/c.yml"), ingress_yaml("three")).unwrap();
    std::fs::write(d.join("broken.yaml"), "kind: [\n").unwrap();
    std::fs::write(d.join(".hidden.yaml"), ingress_yaml("hidden")).unwrap();
    std::fs::write(d.join("notes.txt"), "not a manifest").unwrap();

    let (snap, diags) = load_dir(d).expect("readable");
    let mut ingresses: Vec<_> = snap
        .ingresses
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    ingresses.sort();
    assert_eq!(ingresses, ["one", "three", "two"]);
    assert_eq!(snap.namespaces.len(), 1);
    assert_eq!(snap.services[0].metadata.namespace.as_deref(), Some("shop"));
    // stringData is folded into data, as the API server does.
    let data = snap.secrets[0].data.as_ref().expect("data");
    assert_eq!(data.get("tls.crt").map(|b| b.0.as_slice()), Some(&b"x"[..]));
    assert_eq!(
        snap.secrets[0].metadata.namespace.as_deref(),
        Some("default")
    );
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].reason, Reason::ManifestInvalid);
    assert!(diags[0].subject.name.ends_with("broken.yaml"));
}

#[test]
fn an_unreadable_directory_is_an_error() {
    assert!(load_dir(Path::new("/nonexistent/tollgate")).is_err());
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<SourceState>>,
    what: &str,
    pred: impl Fn(&SourceState) -> bool,
) -> Arc<SourceState> {
    let res = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            {
                let s = rx.borrow_and_update().clone();
                if pred(&s) {
                    return s;
                }
            }
            rx.changed().await.expect("source alive");
        }
    })
    .await;
    match res {
        Ok(s) => s,
        Err(_) => panic!(
            "timed out waiting for {what}; last state: {:?}",
            names(&rx.borrow())
        ),
    }
}

#[tokio::test]
async fn hot_reload_follows_create_modify_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("first.yaml"), ingress_yaml("first")).unwrap();
    let source = ManifestDirSource::spawn(d.clone()).expect("spawn");
    let mut rx = source.subscribe();
    assert_eq!(names(&rx.borrow()), ["first"]);

    // Created the way a tool drops a file in: write elsewhere, rename into place.
    let tmp = d.join(".second.yaml.tmp");
    std::fs::write(&tmp, ingress_yaml("second")).unwrap();
    std::fs::rename(&tmp, d.join("second.yaml")).unwrap();
    wait_for(&mut rx, "second to appear", |s| {
        names(s) == ["first", "second"]
    })
    .await;

    std::fs::write(d.join("first.yaml"), ingress_yaml("renamed")).unwrap();
    wait_for(&mut rx, "first to be replaced", |s| {
        names(s) == ["renamed", "second"]
    })
    .await;

    // A broken edit is reported and everything else keeps being served.
    std::fs::write(d.join("second.yaml"), "apiVersion: [\n").unwrap();
    let s = wait_for(&mut rx, "the broken file to be reported", |s| {
        !s.diagnostics.is_empty()
    })
    .await;
    assert_eq!(names(&s), ["renamed"]);

    std::fs::remove_file(d.join("second.yaml")).unwrap();
    std::fs::remove_file(d.join("first.yaml")).unwrap();
    let s = wait_for(&mut rx, "everything to be gone", |s| {
        s.snapshot.ingresses.is_empty() && s.diagnostics.is_empty()
    })
    .await;
    assert!(s.generation > 1);
}
