//! The manifest-directory source on a real directory: formats, bad files beside good ones,
//! and hot reload on create, modify and delete.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tollgate::sources::manifest_dir::{load_dir, DirCache, ManifestDirSource};
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

fn ingress_named<'a>(
    snap: &'a tollgate::ClusterSnapshot,
    name: &str,
) -> &'a Arc<k8s_openapi::api::networking::v1::Ingress> {
    snap.ingresses
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Ingress {name}"))
}

/// A change costs what it changes: an event re-reads only the file it names, and every
/// object whose definition did not change keeps its allocation, which the builder's caches
/// key on.
#[test]
fn a_change_rereads_only_what_it_names_and_keeps_unchanged_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("a.yaml"),
        format!("{}---\n{}", ingress_yaml("a1"), ingress_yaml("a2")),
    )
    .unwrap();
    std::fs::write(d.join("b.yaml"), ingress_yaml("b")).unwrap();
    let mut cache = DirCache::load(d).expect("load");
    let (before, _) = cache.snapshot();

    // a.yaml rewritten with a2 changed and a1 the same; b.yaml changed behind the cache's
    // back (no event names it).
    std::fs::write(
        d.join("a.yaml"),
        format!(
            "{}---\n{}",
            ingress_yaml("a1"),
            ingress_yaml("a2").replace("web", "api")
        ),
    )
    .unwrap();
    std::fs::write(d.join("b.yaml"), ingress_yaml("b").replace("web", "other")).unwrap();
    assert!(cache.update(&[d.join("a.yaml")]).expect("update"));
    let (after, _) = cache.snapshot();
    assert!(Arc::ptr_eq(
        ingress_named(&before, "a1"),
        ingress_named(&after, "a1")
    ));
    assert!(!Arc::ptr_eq(
        ingress_named(&before, "a2"),
        ingress_named(&after, "a2")
    ));
    assert!(
        Arc::ptr_eq(ingress_named(&before, "b"), ingress_named(&after, "b")),
        "b.yaml was not named, so not read"
    );

    // The periodic check finds what no event named, and reads only that.
    assert!(cache.rescan().expect("rescan"));
    let (rescanned, _) = cache.snapshot();
    assert!(Arc::ptr_eq(
        ingress_named(&after, "a2"),
        ingress_named(&rescanned, "a2")
    ));
    let b = ingress_named(&rescanned, "b");
    assert!(serde_json::to_string(&**b).unwrap().contains("other"));
    assert!(!cache.rescan().expect("rescan"), "nothing moved since");

    // Touched with the same content: read again, nothing changed, nothing shared lost.
    std::fs::write(d.join("b.yaml"), ingress_yaml("b").replace("web", "other")).unwrap();
    assert!(!cache.update(&[d.join("b.yaml")]).expect("update"));
    assert!(Arc::ptr_eq(b, ingress_named(&cache.snapshot().0, "b")));
}

/// A file that is gone when it is read (deleted between the event and the read, or named by
/// an event after its removal) is a removal, not an error; so is a removed directory.
#[test]
fn a_vanished_file_or_directory_is_a_removal_not_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/x.yaml"), ingress_yaml("x")).unwrap();
    std::fs::write(d.join("sub/y.yaml"), ingress_yaml("y")).unwrap();
    std::fs::write(d.join("z.yaml"), ingress_yaml("z")).unwrap();
    let mut cache = DirCache::load(d).expect("load");
    assert_eq!(cache.snapshot().0.ingresses.len(), 3);

    std::fs::remove_file(d.join("z.yaml")).unwrap();
    assert!(cache
        .update(&[d.join("z.yaml"), d.join("never-was.yaml")])
        .expect("update"));
    std::fs::remove_dir_all(d.join("sub")).unwrap();
    assert!(cache
        .update(&[d.join("sub/x.yaml"), d.join("sub")])
        .expect("update"));
    let (snap, diags) = cache.snapshot();
    assert!(snap.ingresses.is_empty());
    assert!(diags.is_empty(), "{diags:?}");
}

/// One edit of the property test below.
#[derive(Debug, Clone)]
enum Edit {
    /// File `f` rewritten holding Ingresses `names`, each pointing at Service `svc`.
    Write {
        f: usize,
        names: Vec<usize>,
        svc: usize,
    },
    /// File `f` gets a document that is not a manifest (a diagnostic) after its objects.
    Garble {
        f: usize,
    },
    Remove {
        f: usize,
    },
}

fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
    use proptest::prelude::*;
    prop_oneof![
        5 => (0..4usize, proptest::collection::vec(0..6usize, 0..3), 0..3usize)
            .prop_map(|(f, names, svc)| Edit::Write { f, names, svc }),
        1 => (0..4usize).prop_map(|f| Edit::Garble { f }),
        1 => (0..4usize).prop_map(|f| Edit::Remove { f }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// The snapshot patched in place after an edit (issue 16) is the snapshot of reading the
    /// whole directory afresh: same objects in the same order, same diagnostics, through
    /// content changes, shape changes, an object defined in two files, bad documents and
    /// removals.
    #[test]
    fn a_patched_snapshot_is_the_snapshot_read_afresh(
        edits in proptest::collection::vec(edit(), 1..14)
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let path = |f: usize| d.join(format!("f{f}.yaml"));
        let mut text: Vec<String> = (0..4).map(|f| ingress_yaml(&format!("i{f}"))).collect();
        for (f, t) in text.iter().enumerate() {
            std::fs::write(path(f), t).expect("write");
        }
        let mut cache = DirCache::load(d).expect("load");
        let _ = cache.snapshot();
        for (step, e) in edits.iter().enumerate() {
            let f = match e {
                Edit::Write { f, names, svc } => {
                    text[*f] = names
                        .iter()
                        .map(|n| ingress_yaml(&format!("i{n}")).replace("web", &format!("s{svc}")))
                        .collect::<Vec<_>>()
                        .join("---\n");
                    *f
                }
                Edit::Garble { f } => {
                    text[*f].push_str("---\n: not [yaml\n");
                    *f
                }
                Edit::Remove { f } => {
                    let _ = std::fs::remove_file(path(*f));
                    text[*f].clear();
                    cache.update(&[path(*f)]).expect("update");
                    let fresh = load_dir(d).expect("load_dir");
                    proptest::prop_assert_eq!(cache.snapshot(), fresh, "after step {}", step);
                    continue;
                }
            };
            // A new file each time (rename over), so the stamp always moves.
            let tmp = d.join(".tmp");
            std::fs::write(&tmp, &text[f]).expect("write");
            std::fs::rename(&tmp, path(f)).expect("rename");
            cache.update(&[path(f)]).expect("update");
            let fresh = load_dir(d).expect("load_dir");
            proptest::prop_assert_eq!(cache.snapshot(), fresh, "after step {}", step);
        }
    }
}
