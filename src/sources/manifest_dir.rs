//! A directory of Kubernetes manifests as a source: YAML (multi-document) and JSON files,
//! `kind: List` included, re-read whenever a file is created, changed or removed.
//!
//! A file that fails to parse is reported (file, document, reason) and skipped; every other
//! file keeps being served. Re-reading the whole directory on each change keeps the result
//! a pure function of what is on disk, which is what a tool that drops files in expects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    let files = manifest_files(dir)?;
    let mut loader = Loader::default();
    for f in &files {
        loader.load_file(f);
    }
    Ok(loader.finish())
}

/// Parses manifest text as if it were one file named `label` (JSON when `is_json`).
pub fn parse_manifests(
    label: &str,
    text: &str,
    is_json: bool,
) -> (ClusterSnapshot, Vec<Diagnostic>) {
    let mut loader = Loader::default();
    loader.load_text(label.to_string(), text, is_json);
    loader.finish()
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestDirError> {
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
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Where an object came from, for messages.
#[derive(Clone)]
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

#[derive(Default)]
struct Loader {
    snapshot: ClusterSnapshot,
    diags: Vec<Diagnostic>,
    /// (kind, namespace, name) → where it was first seen, to report duplicates.
    seen: HashMap<(&'static str, String, String), (String, usize)>,
}

impl Loader {
    fn file_diag(&mut self, severity: Severity, origin: &Origin, reason: Reason, msg: String) {
        self.diags.push(Diagnostic::new(
            severity,
            ObjectKind::File,
            "",
            origin.file.clone(),
            reason,
            format!("{origin}: {msg}"),
        ));
    }

    fn load_file(&mut self, path: &Path) {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let o = Origin {
                    file,
                    document: 0,
                    item: None,
                };
                self.file_diag(
                    Severity::Error,
                    &o,
                    Reason::ManifestInvalid,
                    format!("cannot read: {e}"),
                );
                return;
            }
        };
        let is_json = path.extension().is_some_and(|e| e == "json");
        self.load_text(file, &text, is_json);
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
                        self.file_diag(
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
                        self.file_diag(
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
            self.file_diag(
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
            ("networking.k8s.io/v1", "Ingress") => self.push::<Ingress>(v, origin, "Ingress", true, |s| &mut s.ingresses),
            ("networking.k8s.io/v1", "IngressClass") => {
                self.push::<IngressClass>(v, origin, "IngressClass", false, |s| &mut s.ingress_classes)
            }
            ("v1", "Service") => self.push::<Service>(v, origin, "Service", true, |s| &mut s.services),
            ("v1", "Endpoints") => self.push::<Endpoints>(v, origin, "Endpoints", true, |s| &mut s.endpoints),
            ("v1", "Secret") => {
                let v = merge_string_data(v);
                self.push::<Secret>(v, origin, "Secret", true, |s| &mut s.secrets)
            }
            ("v1", "Node") => self.push::<Node>(v, origin, "Node", false, |s| &mut s.nodes),
            ("v1", "Namespace") => self.push::<Namespace>(v, origin, "Namespace", false, |s| &mut s.namespaces),
            ("discovery.k8s.io/v1" | "discovery.k8s.io/v1beta1", "EndpointSlice") => {
                // v1beta1 carries the same core fields; read it as v1.
                let mut v = v;
                if let Some(o) = v.as_object_mut() {
                    o.insert("apiVersion".into(), Value::String("discovery.k8s.io/v1".into()));
                }
                self.push::<EndpointSlice>(v, origin, "EndpointSlice", true, |s| &mut s.endpoint_slices)
            }
            ("tollgate.io/v1alpha1", "TollgateClassParams") => self.push::<TollgateClassParams>(v, origin, "TollgateClassParams", false, |s| &mut s.class_params),
            ("networking.k8s.io/v1beta1" | "extensions/v1beta1", "Ingress") => self.file_diag(
                Severity::Error,
                origin,
                Reason::ManifestInvalid,
                format!("{api_version} Ingress is no longer served by Kubernetes; use networking.k8s.io/v1"),
            ),
            ("", _) | (_, "") => self.file_diag(
                Severity::Error,
                origin,
                Reason::ManifestInvalid,
                "object lacks apiVersion or kind".into(),
            ),
            _ => self.file_diag(
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
        list: impl FnOnce(&mut ClusterSnapshot) -> &mut Vec<Arc<T>>,
    ) where
        T: DeserializeOwned + kube::Resource,
    {
        let mut obj: T = match serde_json::from_value(v) {
            Ok(o) => o,
            Err(e) => {
                self.file_diag(
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
            self.file_diag(
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
        let ns = if namespaced {
            meta.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let key = (kind, ns.clone(), name.clone());
        let items = list(&mut self.snapshot);
        if let Some((first_file, idx)) = self.seen.get(&key).cloned() {
            // The later definition wins, as `kubectl apply` of the files in order would.
            items[idx] = Arc::new(obj);
            let at = if ns.is_empty() {
                name
            } else {
                format!("{ns}/{name}")
            };
            self.file_diag(
                Severity::Warning,
                origin,
                Reason::DuplicateObject,
                format!(
                    "{kind} {at} is also defined in {first_file}; this later definition is used"
                ),
            );
        } else {
            items.push(Arc::new(obj));
            let idx = items.len() - 1;
            self.seen.insert(key, (origin.file.clone(), idx));
        }
    }

    fn finish(self) -> (ClusterSnapshot, Vec<Diagnostic>) {
        (self.snapshot, self.diags)
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

/// A fingerprint of the directory: paths, sizes and modification times.
fn dir_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    manifest_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let md = std::fs::metadata(&p).ok();
            let len = md.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = md.and_then(|m| m.modified().ok());
            (p, len, mtime)
        })
        .collect()
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
    /// Reads `dir` now and re-reads it whenever something in it changes. Must be called
    /// inside a Tokio runtime.
    ///
    /// File-system events are coalesced for a few milliseconds so that a tool writing several
    /// files produces one snapshot; a periodic fingerprint check catches any missed event.
    pub fn spawn(dir: PathBuf) -> Result<Self, ManifestDirError> {
        let (snapshot, diagnostics) = load_dir(&dir)?;
        let (tx, rx) = watch::channel(Arc::new(SourceState {
            snapshot,
            diagnostics,
            generation: 1,
        }));
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Our own reads raise access events; reacting to them would re-read forever.
            if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                let _ = ev_tx.send(());
            }
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
            let mut last = dir_fingerprint(&dir);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let now = tokio::select! {
                    ev = ev_rx.recv() => {
                        if ev.is_none() { return; }
                        // Coalesce a burst of events into one re-read.
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        while ev_rx.try_recv().is_ok() {}
                        dir_fingerprint(&dir)
                    }
                    _ = tick.tick() => {
                        let now = dir_fingerprint(&dir);
                        if now == last {
                            continue;
                        }
                        now
                    }
                };
                last = now;
                let dir2 = dir.clone();
                let loaded = tokio::task::spawn_blocking(move || load_dir(&dir2)).await;
                match loaded {
                    Ok(Ok((snapshot, diagnostics))) => {
                        let current = tx.borrow().clone();
                        if current.snapshot == snapshot && current.diagnostics == diagnostics {
                            continue; // touched but unchanged: nothing to rebuild
                        }
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
                    // Keep serving the last good state when the directory itself is unreadable.
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "manifest directory unreadable; keeping the last state")
                    }
                    Err(e) => tracing::warn!(error = %e, "manifest reader task failed"),
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
