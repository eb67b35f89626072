//! Where cluster objects come from. A source publishes whole [`ClusterSnapshot`]s; the
//! consumer rebuilds the model from the newest one. A kube-rs reflector-backed source fits the
//! same shape: its stores are read into a snapshot whenever a watch event arrives.

pub mod kubernetes;
pub mod manifest_dir;

use std::sync::Arc;

use tokio::sync::watch;
use tollgate_contract::Diagnostic;

use crate::ClusterSnapshot;

/// Where a command reads cluster objects from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A directory of manifests, followed as it changes.
    Manifests(std::path::PathBuf),
    /// The Kubernetes API.
    Kubernetes(Box<crate::kubernetes_mode::KubeOptions>),
}

/// One published state of a source: the objects, and what went wrong reading them.
#[derive(Debug, Clone, Default)]
pub struct SourceState {
    pub snapshot: ClusterSnapshot,
    /// Problems reading the source (unparsable files, duplicates); never fatal.
    pub diagnostics: Vec<Diagnostic>,
    /// Counts up with every publication.
    pub generation: u64,
}

/// A producer of snapshots. `subscribe` hands out a receiver that always holds the latest
/// state; intermediate states may be skipped (coalesced), which is what a builder wants.
pub trait Source: Send + Sync {
    /// The latest state, and every later one.
    fn subscribe(&self) -> watch::Receiver<Arc<SourceState>>;
}
