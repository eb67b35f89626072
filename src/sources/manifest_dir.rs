//! A directory of Kubernetes manifests as a source: YAML (multi-document) and JSON files,
//! `kind: List` included, re-read whenever a file is created, changed or removed.
//!
//! A file that fails to parse is reported (file, document, reason) and skipped; every other
//! file keeps being served. The result is a pure function of what is on disk, which is what
//! a tool that drops files in expects; but a change costs what it changes: each file's
//! parsed objects are kept ([`DirCache`]), an event re-reads only the files it names, the
//! periodic check for missed events only looks at sizes and times, and an object whose
//! definition did not change keeps its `Arc`, so consumers can tell it apart by pointer.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use notify::Watcher;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;
use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity};

use super::{Source, SourceState};
use crate::alb_class_params::IngressClassParams;
use crate::class_params::TollgateClassParams;
use crate::ClusterSnapshot;

/// Failure to read the directory itself (not a file in it).
#[derive(Debug, thiserror::Error)]
pub enum ManifestDirError {
    #[error("cannot read manifest directory {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch manifest directory {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Reads every manifest below `dir` into a snapshot. Only the directory itself being
/// unreadable is an error; bad files become diagnostics.
pub fn load_dir(dir: &Path) -> Result<(ClusterSnapshot, Vec<Diagnostic>), ManifestDirError> {
    Ok(DirCache::load(dir)?.snapshot())
}

/// Parses manifest text as if it were one file named `label` (JSON when `is_json`).
pub fn parse_manifests(
    label: &str,
    text: &str,
    is_json: bool,
) -> (ClusterSnapshot, Vec<Diagnostic>) {
    let a = assemble([&parse_file(label.to_string(), text, is_json)]);
    (a.snapshot, a.diags)
}

/// Whether a path below the manifest directory is skipped: a hidden component (editor swap
/// files, a tool's temporary file before its rename, ConfigMap volume `..data` internals).
fn hidden(relative: &Path) -> bool {
    relative.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_none_or(|n| n.starts_with('.') && n != "." && n != "..")
    })
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Every manifest file below `dir` with its metadata (symlinks followed, as ConfigMap volumes
/// need), sorted by path.
fn manifest_files(dir: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>, ManifestDirError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| ManifestDirError::Read {
            path: d.clone(),
            source,
        })?;
        for entry in rd.flatten() {
            let p = entry.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            if hidden {
                continue; // editor swap files, ConfigMap volume `..data` internals
            }
            // A file removed between the listing and the stat is simply not there.
            let Ok(md) = std::fs::metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if is_manifest(&p) {
                out.push((p, md));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What says a file may have changed without reading it: a rename puts a new inode in place,
/// an in-place write moves the modification time (nanoseconds) or the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(md: &std::fs::Metadata) -> Self {
        Stamp {
            len: md.len(),
            ino: md.ino(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// One file, read and parsed.
struct CachedFile {
    stamp: Stamp,
    parsed: ParsedFile,
}

/// How long a file-system event waits for others of the same burst (a tool writing several
/// files). Each refresh is a consistent state whatever the window; a longer one only saves
/// builds, at the price of every change's latency (it was 15 ms; issue 16).
const EVENT_COALESCE: Duration = Duration::from_millis(5);

/// The parsed contents of a manifest directory, file by file. Refreshing re-reads only files
/// whose [`Stamp`] moved; re-reading a file keeps the `Arc` of every object in it that did not
/// change.
pub struct DirCache {
    dir: PathBuf,
    files: BTreeMap<PathBuf, CachedFile>,
    /// The last snapshot assembled, with where each object sits in it.
    assembled: Option<Assembled>,
    /// What changed since: files that only replaced objects in place can be patched into
    /// `assembled`; anything else assembles every file again (issue 16: an edit to one file
    /// of 10,000 must not cost a walk of all of them).
    pending: Pending,
}

/// A snapshot with the position of every object in it.
#[derive(Debug)]
struct Assembled {
    snapshot: ClusterSnapshot,
    diags: Vec<Diagnostic>,
    /// (kind, namespace, name) → (index in the kind's list, defined in more than one place).
    at: HashMap<ObjectKey, (usize, bool)>,
}

#[derive(Debug, Default)]
enum Pending {
    #[default]
    Nothing,
    /// Files whose objects changed with the same identities in the same order and whose
    /// diagnostics did not change.
    Patch(Vec<PathBuf>),
    Everything,
}

impl Pending {
    fn patch(&mut self, path: &Path) {
        match self {
            Pending::Nothing => *self = Pending::Patch(vec![path.to_path_buf()]),
            Pending::Patch(p) => p.push(path.to_path_buf()),
            Pending::Everything => {}
        }
    }
}

type ObjectKey = (&'static str, String, String);

fn object_key(kind: &'static str, namespace: &str, name: &str) -> ObjectKey {
    (kind, namespace.to_string(), name.to_string())
}

impl DirCache {
    /// Reads every manifest below `dir`.
    pub fn load(dir: &Path) -> Result<Self, ManifestDirError> {
        let mut cache = DirCache {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            assembled: None,
            pending: Pending::Everything,
        };
        cache.rescan()?;
        Ok(cache)
    }

    /// Looks at every file's size and times, re-reads those that moved and forgets those that
    /// are gone. Returns whether anything the snapshot holds changed.
    pub fn rescan(&mut self) -> Result<bool, ManifestDirError> {
        let dir = self.dir.clone();
        self.update_subtree(&dir)
    }

    /// Refreshes what file-system events named: files are re-read if they moved, removed
    /// paths (a file or a whole directory) forgotten, directories scanned. A hidden path is
    /// ignored, except the `..data` swap of a ConfigMap volume, which changes what every
    /// file points at and so rescans. Returns whether anything the snapshot holds changed.
    pub fn update(&mut self, paths: &[PathBuf]) -> Result<bool, ManifestDirError> {
        let mut changed = false;
        let mut seen = std::collections::HashSet::new();
        for p in paths {
            if !seen.insert(p) {
                continue;
            }
            let Ok(rel) = p.strip_prefix(&self.dir) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                return self.rescan(); // the directory itself
            }
            if hidden(rel) {
                let atomic_writer = rel
                    .components()
                    .any(|c| c.as_os_str().to_str().is_some_and(|n| n.starts_with("..")));
                if atomic_writer {
                    return self.rescan();
                }
                continue;
            }
            match std::fs::metadata(p) {
                Ok(md) if md.is_dir() => changed |= self.update_subtree(p)?,
                Ok(md) if is_manifest(p) => changed |= self.refresh_file(p, &md),
                Ok(_) => {}
                Err(_) => changed |= self.forget(p),
            }
        }
        Ok(changed)
    }

    /// Re-reads the files below `dir` that moved and forgets those no longer there.
    fn update_subtree(&mut self, dir: &Path) -> Result<bool, ManifestDirError> {
        let listed = manifest_files(dir)?;
        let mut changed = false;
        for (p, md) in &listed {
            changed |= self.refresh_file(p, md);
        }
        let keep: std::collections::HashSet<&PathBuf> = listed.iter().map(|(p, _)| p).collect();
        let gone: Vec<PathBuf> = self
            .cached_below(dir)
            .filter(|p| !keep.contains(p))
            .cloned()
            .collect();
        for p in gone {
            if self.files.remove(&p).is_some() {
                changed = true;
                self.pending = Pending::Everything;
            }
        }
        Ok(changed)
    }

    /// Forgets a removed path: a file, or every file below a removed directory.
    fn forget(&mut self, p: &Path) -> bool {
        let gone: Vec<PathBuf> = self.cached_below(p).cloned().collect();
        for f in &gone {
            self.files.remove(f);
            self.pending = Pending::Everything;
        }
        !gone.is_empty()
    }

    /// Cached files at or below `p` (paths order component by component, so they are one
    /// range of the map).
    fn cached_below<'s>(&'s self, p: &'s Path) -> impl Iterator<Item = &'s PathBuf> + 's {
        self.files
            .range(p.to_path_buf()..)
            .map(|(f, _)| f)
            .take_while(move |f| f.starts_with(p))
    }

    /// Re-reads one file when its stamp moved. A file that vanished while being read is a
    /// removal, not an error. Returns whether the snapshot's contents changed.
    fn refresh_file(&mut self, path: &Path, md: &std::fs::Metadata) -> bool {
        let stamp = Stamp::of(md);
        if self.files.get(path).is_some_and(|c| c.stamp == stamp) {
            return false;
        }
        let file = path.display().to_string();
        let mut parsed = match std::fs::read_to_string(path) {
            Ok(text) => {
                let is_json = path.extension().is_some_and(|e| e == "json");
                parse_file(file, &text, is_json)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.forget(path),
            Err(e) => {
                let mut p = ParsedFile::default();
                let o = Origin {
                    file,
                    document: 0,
                    item: None,
                };
                p.diag(
                    Severity::Error,
                    &o,
                    Reason::ManifestInvalid,
                    format!("cannot read: {e}"),
                );
                p
            }
        };
        let changed = match self.files.get(path) {
            Some(old) => {
                parsed.reuse_unchanged(&old.parsed);
                let changed = old.parsed != parsed;
                if changed && old.parsed.same_shape(&parsed) {
                    self.pending.patch(path);
                } else if changed {
                    self.pending = Pending::Everything;
                }
                changed
            }
            None => {
                self.pending = Pending::Everything;
                true
            }
        };
        self.files
            .insert(path.to_path_buf(), CachedFile { stamp, parsed });
        changed
    }

    /// The snapshot of every file, in path order (a later file's duplicate wins): the last
    /// one with the changed files' objects put in place when that is all that changed.
    pub fn snapshot(&mut self) -> (ClusterSnapshot, Vec<Diagnostic>) {
        let pending = std::mem::take(&mut self.pending);
        let patched = match (&mut self.assembled, &pending) {
            (Some(a), Pending::Nothing) => Some(&*a),
            (Some(a), Pending::Patch(paths)) => {
                let files = &self.files;
                let all = paths
                    .iter()
                    .all(|p| files.get(p).is_some_and(|f| a.patch(&f.parsed)));
                all.then_some(&*a)
            }
            _ => None,
        };
        if let Some(a) = patched {
            return (a.snapshot.clone(), a.diags.clone());
        }
        let a = assemble(self.files.values().map(|f| &f.parsed));
        let out = (a.snapshot.clone(), a.diags.clone());
        self.assembled = Some(a);
        out
    }
}

/// Where an object came from, for messages.
#[derive(Debug, Clone, PartialEq)]
struct Origin {
    file: String,
    document: usize,
    item: Option<usize>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// One object read from a file.
#[derive(Debug, Clone, PartialEq)]
enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Service(Arc<Service>),
    Endpoints(Arc<Endpoints>),
    Secret(Arc<Secret>),
    Node(Arc<Node>),
    Namespace(Arc<Namespace>),
    EndpointSlice(Arc<EndpointSlice>),
    ClassParams(Arc<TollgateClassParams>),
}

impl Object {
    /// Whether both hold the same allocation (an unchanged object kept).
    fn same(&self, other: &Object) -> bool {
        use Object::*;
        match (self, other) {
            (Ingress(a), Ingress(b)) => Arc::ptr_eq(a, b),
            (IngressClass(a), IngressClass(b)) => Arc::ptr_eq(a, b),
            (Service(a), Service(b)) => Arc::ptr_eq(a, b),
            (Endpoints(a), Endpoints(b)) => Arc::ptr_eq(a, b),
            (Secret(a), Secret(b)) => Arc::ptr_eq(a, b),
            (Node(a), Node(b)) => Arc::ptr_eq(a, b),
            (Namespace(a), Namespace(b)) => Arc::ptr_eq(a, b),
            (EndpointSlice(a), EndpointSlice(b)) => Arc::ptr_eq(a, b),
            (ClassParams(a), ClassParams(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// An object with its identity and where it was read.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    kind: &'static str,
    namespace: String,
    name: String,
    origin: Origin,
    object: Object,
}

/// What one file said, in file order: objects and diagnostics interleaved as read.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Object(Read),
    Diag(Diagnostic),
}

/// One file's entries.
#[derive(Debug, Default, Clone, PartialEq)]
struct ParsedFile {
    entries: Vec<Entry>,
}

fn parse_file(file: String, text: &str, is_json: bool) -> ParsedFile {
    let mut p = ParsedFile::default();
    p.load_text(file, text, is_json);
    p
}

/// Merges files, in order, into one snapshot. An object defined twice (same kind, namespace
/// and name) takes the later definition, as `kubectl apply` of the files in order would, and
/// the later one is told where the first was.
fn assemble<'a>(files: impl IntoIterator<Item = &'a ParsedFile>) -> Assembled {
    let mut snapshot = ClusterSnapshot::default();
    let mut diags = Vec::new();
    // (kind, namespace, name) → (the file first defining it, its index, defined again).
    let mut seen: HashMap<(&'static str, &str, &str), (&str, usize, bool)> = HashMap::new();
    for f in files {
        for e in &f.entries {
            let r = match e {
                Entry::Diag(d) => {
                    diags.push(d.clone());
                    continue;
                }
                Entry::Object(r) => r,
            };
            macro_rules! put {
                ($list:ident, $obj:expr) => {{
                    let key = (r.kind, r.namespace.as_str(), r.name.as_str());
                    match seen.get_mut(&key) {
                        Some((first_file, idx, again)) => {
                            snapshot.$list[*idx] = $obj.clone();
                            *again = true;
                            let at = if r.namespace.is_empty() {
                                r.name.clone()
                            } else {
                                format!("{}/{}", r.namespace, r.name)
                            };
                            diags.push(Diagnostic::new(
                                Severity::Warning,
                                ObjectKind::File,
                                "",
                                r.origin.file.clone(),
                                Reason::DuplicateObject,
                                format!(
                                    "{}: {} {at} is also defined in {first_file}; this later definition is used",
                                    r.origin, r.kind
                                ),
                            ));
                        }
                        None => {
                            snapshot.$list.push($obj.clone());
                            seen.insert(key, (r.origin.file.as_str(), snapshot.$list.len() - 1, false));
                        }
                    }
                }};
            }
            match &r.object {
                Object::Ingress(o) => put!(ingresses, o),
                Object::IngressClass(o) => put!(ingress_classes, o),
                Object::Service(o) => put!(services, o),
                Object::Endpoints(o) => put!(endpoints, o),
                Object::Secret(o) => put!(secrets, o),
                Object::Node(o) => put!(nodes, o),
                Object::Namespace(o) => put!(namespaces, o),
                Object::EndpointSlice(o) => put!(endpoint_slices, o),
                Object::ClassParams(o) => put!(class_params, o),
            }
        }
    }
    let at = seen
        .into_iter()
        .map(|((kind, ns, name), (_, idx, again))| (object_key(kind, ns, name), (idx, again)))
        .collect();
    Assembled {
        snapshot,
        diags,
        at,
    }
}

impl Assembled {
    /// Puts a re-read file's objects where their earlier versions are. False (nothing
    /// done that matters: the caller assembles afresh) when an object is defined in more than
    /// one place or is not in the snapshot.
    fn patch(&mut self, file: &ParsedFile) -> bool {
        for e in &file.entries {
            let Entry::Object(r) = e else {
                continue;
            };
            let Some(&(idx, dup)) = self.at.get(&object_key(r.kind, &r.namespace, &r.name)) else {
                return false;
            };
            if dup {
                return false;
            }
            let s = &mut self.snapshot;
            let put = match &r.object {
                Object::Ingress(o) => s.ingresses.get_mut(idx).map(|x| *x = o.clone()),
                Object::IngressClass(o) => s.ingress_classes.get_mut(idx).map(|x| *x = o.clone()),
                Object::Service(o) => s.services.get_mut(idx).map(|x| *x = o.clone()),
                Object::Endpoints(o) => s.endpoints.get_mut(idx).map(|x| *x = o.clone()),
                Object::Secret(o) => s.secrets.get_mut(idx).map(|x| *x = o.clone()),
                Object::Node(o) => s.nodes.get_mut(idx).map(|x| *x = o.clone()),
                Object::Namespace(o) => s.namespaces.get_mut(idx).map(|x| *x = o.clone()),
                Object::EndpointSlice(o) => s.endpoint_slices.get_mut(idx).map(|x| *x = o.clone()),
                Object::ClassParams(o) => s.class_params.get_mut(idx).map(|x| *x = o.clone()),
            };
            if put.is_none() {
                return false;
            }
        }
        true
    }
}

impl ParsedFile {
    /// The same objects (by kind, namespace and name, in order) and the same diagnostics:
    /// a change that only replaces objects' contents.
    fn same_shape(&self, other: &ParsedFile) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| match (a, b) {
                    (Entry::Object(a), Entry::Object(b)) => {
                        a.kind == b.kind && a.namespace == b.namespace && a.name == b.name
                    }
                    (Entry::Diag(a), Entry::Diag(b)) => a == b,
                    _ => false,
                })
    }

    /// Puts back the `Arc` of every object `old` held that reads the same now, so a
    /// re-read file changes only the objects that changed.
    fn reuse_unchanged(&mut self, old: &ParsedFile) {
        let before: HashMap<(&'static str, &str, &str), &Object> = old
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Object(r) => {
                    Some(((r.kind, r.namespace.as_str(), r.name.as_str()), &r.object))
                }
                Entry::Diag(_) => None,
            })
            .collect();
        for e in &mut self.entries {
            if let Entry::Object(r) = e {
                if let Some(prev) = before.get(&(r.kind, r.namespace.as_str(), r.name.as_str())) {
                    if !prev.same(&r.object) && **prev == r.object {
                        r.object = (*prev).clone();
                    }
                }
            }
        }
    }

    fn diag(&mut self, severity: Severity, origin: &Origin, reason: Reason, msg: String) {
        self.entries.push(Entry::Diag(Diagnostic::new(
            severity,
            ObjectKind::File,
            "",
            origin.file.clone(),
            reason,
            format!("{origin}: {msg}"),
        )));
    }

    fn load_text(&mut self, file: String, text: &str, is_json: bool) {
        let mut docs = Vec::new();
        if is_json {
            for (i, v) in serde_json::Deserializer::from_str(text)
                .into_iter::<Value>()
                .enumerate()
            {
                match v {
                    Ok(v) => docs.push((i, v)),
                    Err(e) => {
                        let o = Origin {
                            file: file.clone(),
                            document: i,
                            item: None,
                        };
                        self.diag(
                            Severity::Error,
                            &o,
                            Reason::ManifestInvalid,
                            format!("invalid JSON: {e}"),
                        );
                        break; // the stream cannot resynchronize after a syntax error
                    }
                }
            }
        } else {
            for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
                match Value::deserialize(doc) {
                    Ok(v) => docs.push((i, v)),
                    Err(e) => {
                        let o = Origin {
                            file: file.clone(),
                            document: i,
                            item: None,
                        };
                        self.diag(
                            Severity::Error,
                            &o,
                            Reason::ManifestInvalid,
                            format!("invalid YAML: {e}"),
                        );
                        // A YAML syntax error ends the stream; documents before it are kept.
                        break;
                    }
                }
            }
        }
        for (i, v) in docs {
            let o = Origin {
                file: file.clone(),
                document: i,
                item: None,
            };
            self.ingest(v, &o);
        }
    }

    fn ingest(&mut self, v: Value, origin: &Origin) {
        if v.is_null() {
            return; // an empty document (`---` at the end of a file)
        }
        let Some(obj) = v.as_object() else {
            self.diag(
                Severity::Error,
                origin,
                Reason::ManifestInvalid,
                "not a Kubernetes object (expected a mapping with apiVersion and kind)".into(),
            );
            return;
        };
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if kind.ends_with("List") && obj.get("items").is_some_and(Value::is_array) {
            let items = match v {
                Value::Object(mut m) => match m.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            for (i, item) in items.into_iter().enumerate() {
                let o = Origin {
                    item: Some(i),
                    ..origin.clone()
                };
                self.ingest(item, &o);
            }
            return;
        }
        match (api_version.as_str(), kind.as_str()) {
            ("networking.k8s.io/v1", "Ingress") => self.push::<Ingress>(v, origin, "Ingress", true, Object::Ingress),
            ("networking.k8s.io/v1", "IngressClass") => {
                self.push::<IngressClass>(v, origin, "IngressClass", false, Object::IngressClass)
            }
            ("v1", "Service") => self.push::<Service>(v, origin, "Service", true, Object::Service),
            ("v1", "Endpoints") => self.push::<Endpoints>(v, origin, "Endpoints", true, Object::Endpoints),
            ("v1", "Secret") => {
                let v = merge_string_data(v);
                self.push::<Secret>(v, origin, "Secret", true, Object::Secret)
            }
            ("v1", "Node") => self.push::<Node>(v, origin, "Node", false, Object::Node),
            ("v1", "Namespace") => self.push::<Namespace>(v, origin, "Namespace", false, Object::Namespace),
            ("discovery.k8s.io/v1" | "discovery.k8s.io/v1beta1", "EndpointSlice") => {
                // v1beta1 carries the same core fields; read it as v1.
                let mut v = v;
                if let Some(o) = v.as_object_mut() {
                    o.insert("apiVersion".into(), Value::String("discovery.k8s.io/v1".into()));
                }
                self.push::<EndpointSlice>(v, origin, "EndpointSlice", true, Object::EndpointSlice)
            }
            ("tollgate.io/v1alpha1", "TollgateClassParams") => self.push::<TollgateClassParams>(v, origin, "TollgateClassParams", false, Object::ClassParams),
            // The AWS Load Balancer Controller's, read as Tollgate's.
            ("elbv2.k8s.aws/v1beta1", "IngressClassParams") => self.push::<IngressClassParams>(v, origin, "IngressClassParams", false, |p| {
                Object::ClassParams(Arc::new(p.to_tollgate()))
            }),
            ("networking.k8s.io/v1beta1" | "extensions/v1beta1", "Ingress") => self.diag(
                Severity::Error,
                origin,
                Reason::ManifestInvalid,
                format!("{api_version} Ingress is no longer served by Kubernetes; use networking.k8s.io/v1"),
            ),
            ("", _) | (_, "") => self.diag(
                Severity::Error,
                origin,
                Reason::ManifestInvalid,
                "object lacks apiVersion or kind".into(),
            ),
            _ => self.diag(
                Severity::Info,
                origin,
                Reason::KindIgnored,
                format!("{api_version} {kind} is not read by Tollgate; ignored"),
            ),
        }
    }

    fn push<T>(
        &mut self,
        v: Value,
        origin: &Origin,
        kind: &'static str,
        namespaced: bool,
        wrap: impl FnOnce(Arc<T>) -> Object,
    ) where
        T: DeserializeOwned + kube::Resource,
    {
        let mut obj: T = match serde_json::from_value(v) {
            Ok(o) => o,
            Err(e) => {
                self.diag(
                    Severity::Error,
                    origin,
                    Reason::ObjectInvalid,
                    format!("not a valid {kind}: {e}"),
                );
                return;
            }
        };
        let meta = obj.meta_mut();
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            self.diag(
                Severity::Error,
                origin,
                Reason::ObjectInvalid,
                format!("{kind} has no metadata.name"),
            );
            return;
        };
        if namespaced && meta.namespace.as_deref().is_none_or(str::is_empty) {
            meta.namespace = Some("default".into());
        }
        let namespace = if namespaced {
            meta.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        self.entries.push(Entry::Object(Read {
            kind,
            namespace,
            name,
            origin: origin.clone(),
            object: wrap(Arc::new(obj)),
        }));
    }
}

/// The API server folds `stringData` into `data`; do the same for manifests.
fn merge_string_data(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        if let Some(Value::Object(sd)) = obj.remove("stringData") {
            let data = obj
                .entry("data")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(d) = data.as_object_mut() {
                for (k, val) in sd {
                    if let Some(s) = val.as_str() {
                        let b = ByteString(s.as_bytes().to_vec());
                        if let Ok(encoded) = serde_json::to_value(&b) {
                            d.insert(k, encoded);
                        }
                    }
                }
            }
        }
    }
    v
}

/// How often every file's size and times are compared, for events the kernel dropped. It
/// reads no file that did not move, but it does look at every one, so it is not frequent.
pub const FALLBACK_RESCAN: Duration = Duration::from_secs(10);

/// What a burst of file-system events named.
enum Touched {
    Paths(Vec<PathBuf>),
    Everything,
}

impl Touched {
    fn absorb(&mut self, other: Touched) {
        match (&mut *self, other) {
            (Touched::Everything, _) => {}
            (_, Touched::Everything) => *self = Touched::Everything,
            (Touched::Paths(a), Touched::Paths(b)) => a.extend(b),
        }
    }
}

/// A watched manifest directory. Dropping it stops the watch.
pub struct ManifestDirSource {
    rx: watch::Receiver<Arc<SourceState>>,
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ManifestDirSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Source for ManifestDirSource {
    fn subscribe(&self) -> watch::Receiver<Arc<SourceState>> {
        self.rx.clone()
    }
}

impl ManifestDirSource {
    /// Reads `dir` now and re-reads what changes in it. Must be called inside a Tokio runtime.
    ///
    /// File-system events are coalesced for a few milliseconds so that a tool writing several
    /// files produces one snapshot; only the paths they name are looked at. Every
    /// [`FALLBACK_RESCAN`] the sizes and times of all files are compared, for events the
    /// kernel dropped (and notify's overflow marker rescans at once).
    pub fn spawn(dir: PathBuf) -> Result<Self, ManifestDirError> {
        let mut cache = DirCache::load(&dir)?;
        let (snapshot, diagnostics) = cache.snapshot();
        let (tx, rx) = watch::channel(Arc::new(SourceState {
            snapshot,
            diagnostics,
            generation: 1,
        }));
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel::<Touched>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let touched = match res {
                // Our own reads raise access events; reacting to them would re-read forever.
                Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => return,
                Ok(e) if e.need_rescan() || e.paths.is_empty() => Touched::Everything,
                Ok(e) => Touched::Paths(e.paths),
                Err(_) => Touched::Everything,
            };
            let _ = ev_tx.send(touched);
        })
        .map_err(|source| ManifestDirError::Watch {
            path: dir.clone(),
            source,
        })?;
        watcher
            .watch(&dir, notify::RecursiveMode::Recursive)
            .map_err(|source| ManifestDirError::Watch {
                path: dir.clone(),
                source,
            })?;

        let task = tokio::spawn(async move {
            let mut generation = 1;
            let mut cache = Some(cache);
            let mut tick = tokio::time::interval(FALLBACK_RESCAN);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the directory was just read
            loop {
                let touched = tokio::select! {
                    ev = ev_rx.recv() => {
                        let Some(first) = ev else { return };
                        // Coalesce a burst of events into one refresh. Short: it is added
                        // to every change's latency, and events that arrive while a
                        // refresh and build run are absorbed by the next one anyway.
                        tokio::time::sleep(EVENT_COALESCE).await;
                        let mut touched = first;
                        while let Ok(more) = ev_rx.try_recv() {
                            touched.absorb(more);
                        }
                        touched
                    }
                    _ = tick.tick() => Touched::Everything,
                };
                let mut c = match cache.take() {
                    Some(c) => c,
                    None => match tokio::task::spawn_blocking({
                        let dir = dir.clone();
                        move || DirCache::load(&dir)
                    })
                    .await
                    {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "manifest directory unreadable; keeping the last state");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "manifest reader task failed");
                            continue;
                        }
                    },
                };
                let refreshed = tokio::task::spawn_blocking(move || {
                    let changed = match &touched {
                        Touched::Everything => c.rescan(),
                        Touched::Paths(p) => c.update(p),
                    };
                    let state = match changed {
                        Ok(true) => Ok(Some(c.snapshot())),
                        Ok(false) => Ok(None),
                        Err(e) => Err(e),
                    };
                    (c, state)
                })
                .await;
                let (c, state) = match refreshed {
                    Ok(r) => r,
                    Err(e) => {
                        // The cache went with the failed task; the next event reads afresh.
                        tracing::warn!(error = %e, "manifest reader task failed");
                        continue;
                    }
                };
                cache = Some(c);
                match state {
                    Ok(Some((snapshot, diagnostics))) => {
                        generation += 1;
                        tracing::debug!(
                            generation,
                            objects = snapshot.len(),
                            "manifest directory re-read"
                        );
                        if tx
                            .send(Arc::new(SourceState {
                                snapshot,
                                diagnostics,
                                generation,
                            }))
                            .is_err()
                        {
                            return; // nobody listens any more
                        }
                    }
                    Ok(None) => {} // touched but unchanged: nothing to rebuild
                    // Keep serving the last good state when the directory itself is unreadable.
                    Err(e) => {
                        tracing::warn!(error = %e, "manifest directory unreadable; keeping the last state")
                    }
                }
            }
        });
        Ok(ManifestDirSource {
            rx,
            _watcher: watcher,
            task,
        })
    }
}
