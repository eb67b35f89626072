//! What Tollgate writes back to the cluster about each Ingress it claims: the load balancer's
//! address in `status.loadBalancer.ingress`, a `Synced` condition, Kubernetes Events (Normal
//! on sync, Warning for every diagnostic), and in aws mode the `tollgate.io/resources`
//! finalizer. Only the leader calls this.
//!
//! networking.k8s.io/v1 `IngressStatus` has no conditions field, so the condition is kept in
//! the annotation `status.tollgate.io/conditions` as a JSON list shaped like
//! `metav1.Condition`. Every write is skipped when the object already says the same thing,
//! so a steady state makes no API calls.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::json;
use tollgate_contract::{Diagnostic, ObjectKind, Severity};

/// The finalizer that keeps an Ingress until its AWS resources are gone.
pub const FINALIZER: &str = "tollgate.io/resources";
/// Annotation holding the `Synced` condition.
pub const CONDITIONS_ANNOTATION: &str = "status.tollgate.io/conditions";

/// One address to publish for an Ingress: a DNS name (ALB) or an IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PublishedAddress {
    Hostname(String),
    Ip(String),
}

impl PublishedAddress {
    /// Reads a configured address: an IP literal or a hostname.
    pub fn parse(s: &str) -> Self {
        if s.parse::<std::net::IpAddr>().is_ok() {
            PublishedAddress::Ip(s.to_string())
        } else {
            PublishedAddress::Hostname(s.to_string())
        }
    }
}

/// The outcome of one sync for the Ingresses it touched.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Claimed Ingresses by (namespace, name) → addresses (empty when not deployed).
    pub addresses: BTreeMap<(String, String), Vec<PublishedAddress>>,
    /// Every diagnostic from the source, the builder and the provider.
    pub diagnostics: Vec<Diagnostic>,
}

/// Writes status, conditions and Events; remembers what it has already said.
pub struct IngressStatusWriter {
    client: Client,
    recorder: Recorder,
    /// Diagnostics already published as Events.
    reported: BTreeSet<Diagnostic>,
    /// (uid, generation) of Ingresses already announced as synced.
    announced: HashMap<String, i64>,
}

/// Why a write failed (logged; the next sync retries).
#[derive(Debug, thiserror::Error)]
#[error("{what} {namespace}/{name}: {source}")]
pub struct StatusError {
    what: &'static str,
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

impl StatusError {
    /// Wraps a failed API call about `namespace/name`.
    fn on<'a>(
        what: &'static str,
        namespace: &'a str,
        name: &'a str,
    ) -> impl FnOnce(kube::Error) -> StatusError + 'a {
        move |source| StatusError {
            what,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        }
    }
}

fn diag_event(d: &Diagnostic) -> Event {
    Event {
        type_: if d.severity >= Severity::Warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: format!("{:?}", d.reason),
        note: Some(d.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

fn object_ref(
    kind: ObjectKind,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> Option<ObjectReference> {
    let (api_version, kind) = match kind {
        ObjectKind::Ingress => ("networking.k8s.io/v1", "Ingress"),
        ObjectKind::IngressClass => ("networking.k8s.io/v1", "IngressClass"),
        ObjectKind::Service => ("v1", "Service"),
        ObjectKind::Secret => ("v1", "Secret"),
        ObjectKind::Node => ("v1", "Node"),
        _ => return None,
    };
    Some(ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
        name: Some(name.to_string()),
        uid,
        ..Default::default()
    })
}

fn condition_of(ing: &Ingress, diags: &[&Diagnostic], now: &str) -> serde_json::Value {
    let errors: Vec<&&Diagnostic> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let warnings = diags
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    let (status, reason, message) = match errors.first() {
        Some(d) => ("False", format!("{:?}", d.reason), d.message.clone()),
        None if warnings > 0 => (
            "True",
            "SyncedWithWarnings".to_string(),
            format!("synced; {warnings} warning(s), see Events"),
        ),
        None => ("True", "Synced".to_string(), "synced".to_string()),
    };
    // Keep the transition time while the status stays the same.
    let previous = ing
        .annotations()
        .get(CONDITIONS_ANNOTATION)
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.get(0).cloned());
    let since = match &previous {
        Some(p) if p["status"] == status => {
            p["lastTransitionTime"].as_str().unwrap_or(now).to_string()
        }
        _ => now.to_string(),
    };
    json!([{
        "type": "Synced",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": ing.metadata.generation.unwrap_or(0),
        "lastTransitionTime": since,
    }])
}

fn load_balancer_status(addrs: &[PublishedAddress]) -> IngressLoadBalancerStatus {
    IngressLoadBalancerStatus {
        ingress: (!addrs.is_empty()).then(|| {
            addrs
                .iter()
                .map(|a| match a {
                    PublishedAddress::Hostname(h) => IngressLoadBalancerIngress {
                        hostname: Some(h.clone()),
                        ..Default::default()
                    },
                    PublishedAddress::Ip(ip) => IngressLoadBalancerIngress {
                        ip: Some(ip.clone()),
                        ..Default::default()
                    },
                })
                .collect()
        }),
    }
}

impl IngressStatusWriter {
    /// A writer reporting as `controller` (the Event's reportingController) from `instance`.
    pub fn new(client: Client, instance: String) -> Self {
        let reporter = Reporter {
            controller: "tollgate".into(),
            instance: Some(instance),
        };
        IngressStatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            reported: BTreeSet::new(),
            announced: HashMap::new(),
        }
    }

    /// Brings every claimed Ingress's status, condition and Events in line with `report`.
    /// Returns the failures (each is retried on the next sync).
    pub async fn sync(
        &mut self,
        ingresses: &[Arc<Ingress>],
        report: &SyncReport,
    ) -> Vec<StatusError> {
        let mut errors = Vec::new();
        let now = jiff_now();
        let by_ingress: HashMap<(&str, &str), Vec<&Diagnostic>> = report
            .diagnostics
            .iter()
            .filter(|d| d.subject.kind == ObjectKind::Ingress)
            .fold(HashMap::new(), |mut m, d| {
                m.entry((d.subject.namespace.as_str(), d.subject.name.as_str()))
                    .or_default()
                    .push(d);
                m
            });
        for ing in ingresses {
            let ns = ing.namespace().unwrap_or_default();
            let name = ing.name_any();
            let key = (ns.clone(), name.clone());
            let diags = by_ingress
                .get(&(ns.as_str(), name.as_str()))
                .cloned()
                .unwrap_or_default();
            let claimed = report.addresses.get(&key);
            if claimed.is_none() && diags.is_empty() {
                continue;
            }
            if ing.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &ns);
            // Status: only for Ingresses that are part of a load balancer.
            if let Some(addrs) = claimed {
                let want = load_balancer_status(addrs);
                let have = ing
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.clone())
                    .unwrap_or_default();
                if want != have {
                    let patch = json!({ "status": IngressStatus { load_balancer: Some(want) } });
                    let written = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                    errors.extend(written.err().map(StatusError::on(
                        "writing the status of Ingress",
                        &ns,
                        &name,
                    )));
                }
            }
            // Condition.
            let cond = condition_of(ing, &diags, &now);
            let cond_text = cond.to_string();
            if ing.annotations().get(CONDITIONS_ANNOTATION) != Some(&cond_text) {
                let patch =
                    json!({ "metadata": { "annotations": { CONDITIONS_ANNOTATION: cond_text } } });
                let written = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                errors.extend(written.err().map(StatusError::on(
                    "writing the Synced condition of Ingress",
                    &ns,
                    &name,
                )));
            }
            // Normal event once per generation that synced without error.
            let ok = !diags.iter().any(|d| d.severity == Severity::Error);
            let uid = ing.uid().unwrap_or_default();
            let generation = ing.metadata.generation.unwrap_or(0);
            if ok && claimed.is_some() && self.announced.get(&uid) != Some(&generation) {
                if let Some(r) = object_ref(ObjectKind::Ingress, &ns, &name, ing.uid()) {
                    let ev = Event {
                        type_: EventType::Normal,
                        reason: "Synced".into(),
                        note: Some("Ingress synced".into()),
                        action: "Reconcile".into(),
                        secondary: None,
                    };
                    match self.recorder.publish(&ev, &r).await {
                        Ok(()) => {
                            self.announced.insert(uid, generation);
                        }
                        Err(e) => errors.push(StatusError::on(
                            "publishing an Event for Ingress",
                            &ns,
                            &name,
                        )(e)),
                    }
                }
            }
        }
        // Warning (or Normal) Events: once per diagnostic, on the object it is about.
        let uids: HashMap<(String, String), Option<String>> = ingresses
            .iter()
            .map(|i| ((i.namespace().unwrap_or_default(), i.name_any()), i.uid()))
            .collect();
        let current: BTreeSet<Diagnostic> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity >= Severity::Warning)
            .cloned()
            .collect();
        for d in current.difference(&self.reported) {
            let s = &d.subject;
            let uid = if s.kind == ObjectKind::Ingress {
                uids.get(&(s.namespace.clone(), s.name.clone()))
                    .cloned()
                    .flatten()
            } else {
                None
            };
            let Some(r) = object_ref(s.kind, &s.namespace, &s.name, uid) else {
                continue;
            };
            let published = self.recorder.publish(&diag_event(d), &r).await;
            errors.extend(published.err().map(StatusError::on(
                "publishing an Event for",
                &s.namespace,
                &s.name,
            )));
        }
        // Forget what went away, so it is reported again if it comes back.
        self.reported = current;
        self.announced
            .retain(|uid, _| ingresses.iter().any(|i| i.uid().as_deref() == Some(uid)));
        errors
    }

    /// Adds the finalizer to each Ingress that lacks it (aws mode, before creating resources).
    pub async fn add_finalizers(&self, ingresses: &[&Ingress]) -> Vec<StatusError> {
        let mut errors = Vec::new();
        for ing in ingresses {
            if ing.metadata.deletion_timestamp.is_some()
                || ing.finalizers().iter().any(|f| f == FINALIZER)
            {
                continue;
            }
            let mut fins = ing.finalizers().to_vec();
            fins.push(FINALIZER.into());
            if let Err(e) = self.set_finalizers(ing, fins).await {
                errors.push(e);
            }
        }
        errors
    }

    /// Removes the finalizer (the Ingress's AWS resources are gone).
    pub async fn remove_finalizer(&self, ing: &Ingress) -> Result<(), StatusError> {
        let fins: Vec<String> = ing
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        self.set_finalizers(ing, fins).await
    }

    async fn set_finalizers(&self, ing: &Ingress, fins: Vec<String>) -> Result<(), StatusError> {
        let ns = ing.namespace().unwrap_or_default();
        let name = ing.name_any();
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &ns);
        // The resourceVersion makes this a compare-and-swap: a concurrent change to the
        // finalizer list fails with 409 and is retried on the next sync.
        let patch = json!({
            "metadata": {
                "finalizers": fins,
                "resourceVersion": ing.resource_version(),
            }
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(StatusError::on(
                "updating the finalizers of Ingress",
                &ns,
                &name,
            ))
    }
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
