//! Last known good: an Ingress that was served and then turns invalid keeps being served as
//! its last valid version, so one bad edit is never an outage.
//!
//! This is a cache around the pure [`build`](super::build), not an effect inside it: the run
//! loops own one [`LastKnownGood`] and call [`LastKnownGood::build`] instead of `build`. It
//! swaps each invalid Ingress for the last valid version it saw (Services, endpoints and
//! Secrets still come from the current snapshot, so endpoint and Secret changes still apply
//! to that version), builds, and then reports the current version's errors with an Error
//! saying the last valid version is served (`Synced=False`).
//!
//! After a restart nothing is in memory. An Ingress invalid at this process's first build
//! may have been serving before, so the load balancer it belongs to is *held*
//! ([`BuildOutput::held_load_balancers`]): the AWS provider neither modifies nor deletes it
//! until the Ingress is fixed or deleted. The proxy has nothing to serve such an Ingress
//! from (its old routes lived in the old process) and leaves it out, with its errors; the
//! other proxy replicas, which kept their memory, go on serving it.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity};

use super::class_selection::ClassSelector;
use super::ingress_member::read_member;
use super::{
    build_with, load_balancer_id, BuildCache, BuildOptions, BuildOutput, FastMap, FastSet,
};
use crate::ClusterSnapshot;

type Key = (String, String);

fn key_of(ing: &Ingress) -> Key {
    (
        ing.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        ing.metadata.name.clone().unwrap_or_default(),
    )
}

/// What one run loop remembers between builds.
#[derive(Debug, Default)]
pub struct LastKnownGood {
    /// The last valid version of each claimed Ingress.
    valid: FastMap<Key, Arc<Ingress>>,
    /// The same versions by allocation, with the build that last saw each: an unchanged
    /// Ingress (sources share unchanged objects) is known valid with no key built and no
    /// read (issue 16). Held, so that an allocation in here is never a new object's.
    valid_by_ptr: FastMap<usize, (Arc<Ingress>, u64)>,
    round: u64,
    /// Invalid Ingresses whose past is unknown (they were invalid at the first build).
    unknown_past: HashSet<Key>,
    built_once: bool,
    /// What the next build can reuse.
    cache: BuildCache,
}

impl LastKnownGood {
    /// [`build`](super::build) with invalid Ingresses served as their last valid version; remembers the
    /// valid ones for next time.
    pub fn build(&mut self, snapshot: &ClusterSnapshot, opts: &BuildOptions) -> BuildOutput {
        let classes = ClassSelector::new(&snapshot.ingress_classes, opts);
        let namespaces = super::NamespaceLabels::new(&snapshot.namespaces);
        let mut substituted: Vec<(usize, Arc<Ingress>)> = Vec::new();
        let mut extra = Vec::new();
        let mut held = std::collections::BTreeSet::new();
        // Claimed Ingresses that were not the last valid version as is.
        let mut claimed_now: FastSet<Key> = FastSet::default();
        self.round += 1;
        let round = self.round;
        for (i, ing) in snapshot.ingresses.iter().enumerate() {
            if ing.metadata.deletion_timestamp.is_some() || !classes.claims(ing, &mut Vec::new()) {
                continue;
            }
            // The same object as the last valid one: valid without reading it again.
            if let Some((_, seen)) = self.valid_by_ptr.get_mut(&(Arc::as_ptr(ing) as usize)) {
                *seen = round;
                continue;
            }
            let key = key_of(ing);
            claimed_now.insert(key.clone());
            let errors = match read_member(ing, opts.provider, &mut Vec::new()) {
                // Its class's parameters no longer select its namespace: not a version of the
                // Ingress to fall back from, so the load balancer it was served on is left
                // as it is (only if it was served: an Ingress never served must not freeze a
                // load balancer it names).
                Ok(_)
                    if !namespaces.admit(
                        ing.metadata.namespace.as_deref().unwrap_or("default"),
                        classes.params_for(ing, &snapshot.class_params),
                    ) =>
                {
                    if self.valid.contains_key(&key) {
                        let id = load_balancer_id(snapshot, opts, ing);
                        extra.push(Diagnostic::new(
                            Severity::Error,
                            ObjectKind::Ingress,
                            key.0.clone(),
                            key.1.clone(),
                            Reason::LastValidVersionServed,
                            format!("its namespace is no longer selected by its class's parameters; load balancer {id} is left as it is until the namespace is selected again or the Ingress leaves the class"),
                        ));
                        held.insert(id);
                    }
                    continue;
                }
                Ok(_) => {
                    self.valid_by_ptr
                        .insert(Arc::as_ptr(ing) as usize, (ing.clone(), round));
                    self.valid.insert(key.clone(), ing.clone());
                    self.unknown_past.remove(&key);
                    continue;
                }
                Err(errors) => errors,
            };
            let served_as = |message: String| {
                Diagnostic::new(
                    Severity::Error,
                    ObjectKind::Ingress,
                    key.0.clone(),
                    key.1.clone(),
                    Reason::LastValidVersionServed,
                    message,
                )
            };
            match self.valid.get(&key) {
                Some(last) if same_object(last, ing) => {
                    extra.extend(errors);
                    extra.push(served_as(format!(
                            "this version is invalid (generation {}); the last valid version (generation {}) is still served until the Ingress is fixed, deleted or leaves the class",
                            generation(ing),
                            generation(last)
                        )));
                    substituted.push((i, last.clone()));
                }
                _ => {
                    self.valid.remove(&key);
                    if !self.built_once {
                        self.unknown_past.insert(key.clone());
                    }
                    if self.unknown_past.contains(&key) {
                        let id = load_balancer_id(snapshot, opts, ing);
                        extra.push(served_as(format!(
                            "this version is invalid and no earlier valid version is known (Tollgate restarted); load balancer {id} is left as it is until the Ingress is fixed or deleted"
                        )));
                        held.insert(id);
                    }
                }
            }
        }
        // Kept: the claimed ones, whether seen as is (by allocation) or looked at by name.
        let by_ptr = &self.valid_by_ptr;
        self.valid.retain(|k, v| {
            by_ptr
                .get(&(Arc::as_ptr(v) as usize))
                .is_some_and(|(_, seen)| *seen == round)
                || claimed_now.contains(k)
        });
        self.valid_by_ptr.retain(|_, (_, seen)| *seen == round);
        self.unknown_past.retain(|k| claimed_now.contains(k));
        self.built_once = true;

        let mut out = if substituted.is_empty() {
            build_with(snapshot, opts, &mut self.cache)
        } else {
            let mut snap = snapshot.clone();
            for (i, last) in substituted {
                snap.ingresses[i] = last;
            }
            build_with(&snap, opts, &mut self.cache)
        };
        out.diagnostics.extend(extra);
        out.diagnostics.sort();
        out.diagnostics.dedup();
        out.held_load_balancers = held;
        out
    }
}

/// The same object, not a new one of the same name (a delete and re-create starts afresh).
fn same_object(a: &Ingress, b: &Ingress) -> bool {
    a.metadata.uid == b.metadata.uid
}

fn generation(ing: &Ingress) -> String {
    ing.metadata
        .generation
        .map(|g| g.to_string())
        .unwrap_or_else(|| "unknown".into())
}
