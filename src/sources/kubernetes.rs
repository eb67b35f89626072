//! The Kubernetes API as a source: one kube-rs watcher + reflector store per kind, coalesced
//! into whole [`ClusterSnapshot`]s for the model builder.
//!
//! What is held in memory is only what the builder reads: `managedFields` are dropped on
//! arrival; Secrets are watched as metadata only (name, resourceVersion) and a Secret's data is
//! fetched only when an Ingress's `tls` section names it, and fetched again only when its
//! resourceVersion changes. A watch that breaks (including 410 Gone after etcd compaction) is
//! resumed or re-listed by kube-runtime's watcher with back-off; nothing is lost, the next
//! snapshot carries the re-listed state.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity};

use super::{Source, SourceState};
use crate::alb_class_params::IngressClassParams;
use crate::class_params::TollgateClassParams;
use crate::ClusterSnapshot;

/// What the Kubernetes source watches.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// Watch Nodes (needed for `instance` targets; proxy mode does without).
    pub watch_nodes: bool,
    /// Watch TollgateClassParams (skipped when the CRD is not installed).
    pub watch_class_params: bool,
    /// How long to wait after a change for more changes before publishing: a burst of events
    /// (an initial list, a rollout) becomes one snapshot.
    pub coalesce: Duration,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            watch_nodes: true,
            watch_class_params: true,
            coalesce: Duration::from_millis(20),
        }
    }
}

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("Kubernetes API discovery failed: {0}")]
    Discovery(#[source] kube::Error),
}

/// A running set of watchers publishing snapshots; dropping the last clone stops them.
#[derive(Clone)]
pub struct KubeSource {
    rx: watch::Receiver<Arc<SourceState>>,
    _tasks: Arc<JoinSet<()>>,
}

impl Source for KubeSource {
    fn subscribe(&self) -> watch::Receiver<Arc<SourceState>> {
        self.rx.clone()
    }
}

/// Drops what the builder never reads before an object enters a store.
fn drop_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// Runs `stream` (a reflector) forever, waking the publisher on every change.
fn drive<S, T>(tasks: &mut JoinSet<()>, kind: &'static str, stream: S, notify: Arc<Notify>)
where
    S: Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying with back-off"),
            }
        }
    });
}

fn typed<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    kind: &'static str,
    notify: &Arc<Notify>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(writer);
    drive(tasks, kind, stream, notify.clone());
    reader
}

/// Whether the server serves `discovery.k8s.io/v1` EndpointSlices (Kubernetes 1.21+, what
/// production uses); older servers, such as the v1.20 test apiserver, serve only v1beta1.
async fn serves_endpoint_slice_v1(client: &Client) -> Result<bool, KubeSourceError> {
    match client.list_api_group_resources("discovery.k8s.io/v1").await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "endpointslices")),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(KubeSourceError::Discovery(e)),
    }
}

/// Reads a v1beta1 slice as v1: the fields Tollgate reads (addresses, conditions, ports,
/// targetRef, nodeName) have the same shape in both.
fn endpoint_slice_from(obj: DynamicObject) -> Option<EndpointSlice> {
    let mut v = serde_json::to_value(obj).ok()?;
    let o = v.as_object_mut()?;
    o.insert("apiVersion".into(), "discovery.k8s.io/v1".into());
    o.insert("kind".into(), "EndpointSlice".into());
    serde_json::from_value(v).ok()
}

/// A v1beta1 watch event as a v1 one (an object that does not convert is skipped).
fn v1beta1_event(ev: watcher::Event<DynamicObject>) -> Option<watcher::Event<EndpointSlice>> {
    use watcher::Event as E;
    Some(match ev {
        E::Apply(o) => E::Apply(endpoint_slice_from(o)?),
        E::Delete(o) => E::Delete(endpoint_slice_from(o)?),
        E::InitApply(o) => E::InitApply(endpoint_slice_from(o)?),
        E::Init => E::Init,
        E::InitDone => E::InitDone,
    })
}

async fn crd_installed(client: &Client) -> bool {
    served(client, "tollgate.io/v1alpha1", "TollgateClassParams").await
}

/// Whether the API server serves `kind` in `group_version` (a CRD that may not be installed).
async fn served(client: &Client, group_version: &str, kind: &str) -> bool {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => list.resources.iter().any(|r| r.kind == kind),
        Err(_) => false,
    }
}

struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Option<Store<Node>>,
    class_params: Option<Store<TollgateClassParams>>,
    /// The AWS Load Balancer Controller's IngressClassParams, when its CRD is installed.
    alb_class_params: Option<Store<IngressClassParams>>,
    /// Namespaces as metadata (their labels), for class parameters' `namespaceSelector`.
    namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    secret_meta: Store<PartialObjectMeta<Secret>>,
    /// Only pods carrying Tollgate's readiness gate (selected by its label).
    gated_pods: Option<Store<Pod>>,
}

impl KubeSource {
    /// Starts the watchers; the first snapshot is published once every store has listed.
    pub async fn spawn(client: Client, opts: KubeSourceOptions) -> Result<Self, KubeSourceError> {
        let notify = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let slices_v1 = serves_endpoint_slice_v1(&client).await?;
        let class_params = opts.watch_class_params && crd_installed(&client).await;
        if opts.watch_class_params && !class_params {
            tracing::info!(
                "TollgateClassParams CRD not installed; IngressClass parameters ignored"
            );
        }

        // Slices are stored as the v1 type either way, so the snapshot is read without
        // conversion; only a v1beta1-only server pays for converting each event once.
        let slices_reader = if slices_v1 {
            typed(
                &mut tasks,
                Api::all(client.clone()),
                "EndpointSlice",
                &notify,
            )
        } else {
            tracing::info!("discovery.k8s.io/v1 is not served; reading v1beta1 EndpointSlices");
            let v1beta1 = ApiResource {
                group: "discovery.k8s.io".into(),
                version: "v1beta1".into(),
                api_version: "discovery.k8s.io/v1beta1".into(),
                kind: "EndpointSlice".into(),
                plural: "endpointslices".into(),
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &v1beta1);
            let (reader, writer) = reflector::store();
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .filter_map(|r| async move {
                    match r {
                        Ok(ev) => v1beta1_event(ev).map(Ok),
                        Err(e) => Some(Err(e)),
                    }
                })
                .modify(drop_managed_fields)
                .reflect(writer);
            drive(&mut tasks, "EndpointSlice", stream, notify.clone());
            reader
        };

        let alb_class_params = opts.watch_class_params
            && served(&client, "elbv2.k8s.aws/v1beta1", "IngressClassParams").await;
        // Namespaces are read only if allowed: an RBAC role from before this watch must not
        // keep the first snapshot from ever being published.
        let ns_api = Api::<PartialObjectMeta<Namespace>>::all(client.clone());
        let namespaces = match ns_api
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
        {
            Ok(_) => {
                let (ns_reader, ns_writer) = reflector::store();
                let stream = watcher(ns_api, watcher::Config::default())
                    .default_backoff()
                    .modify(drop_managed_fields)
                    .reflect(ns_writer);
                drive(&mut tasks, "Namespace", stream, notify.clone());
                Some(ns_reader)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list Namespaces (grant list and watch on namespaces); a namespaceSelector sees only each namespace's kubernetes.io/metadata.name label");
                None
            }
        };

        // Pods only with the readiness gate's label: the pods Tollgate gated, nothing else.
        // Read only if allowed, as Namespaces.
        let pod_api = Api::<Pod>::all(client.clone());
        let gated_pods = match pod_api
            .list_metadata(
                &kube::api::ListParams::default()
                    .labels(crate::readiness_gate::LABEL)
                    .limit(1),
            )
            .await
        {
            Ok(_) => {
                let (reader, writer) = reflector::store();
                let stream = watcher(
                    pod_api,
                    watcher::Config::default().labels(crate::readiness_gate::LABEL),
                )
                .default_backoff()
                .modify(drop_managed_fields)
                .reflect(writer);
                drive(&mut tasks, "Pod", stream, notify.clone());
                Some(reader)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list Pods (grant list and watch on pods); the pod readiness gate is not served");
                None
            }
        };

        let (meta_reader, meta_writer) = reflector::store();
        let stream = watcher(
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(meta_writer);
        drive(&mut tasks, "Secret", stream, notify.clone());

        let stores = Stores {
            ingresses: typed(&mut tasks, Api::all(client.clone()), "Ingress", &notify),
            classes: typed(
                &mut tasks,
                Api::all(client.clone()),
                "IngressClass",
                &notify,
            ),
            services: typed(&mut tasks, Api::all(client.clone()), "Service", &notify),
            slices: slices_reader,
            nodes: opts
                .watch_nodes
                .then(|| typed(&mut tasks, Api::all(client.clone()), "Node", &notify)),
            class_params: class_params.then(|| {
                typed(
                    &mut tasks,
                    Api::all(client.clone()),
                    "TollgateClassParams",
                    &notify,
                )
            }),
            alb_class_params: alb_class_params.then(|| {
                typed(
                    &mut tasks,
                    Api::all(client.clone()),
                    "IngressClassParams",
                    &notify,
                )
            }),
            namespaces,
            secret_meta: meta_reader,
            gated_pods,
        };

        let (tx, rx) = watch::channel(Arc::new(SourceState::default()));
        tasks.spawn(publish(client, stores, notify, tx, opts.coalesce));
        Ok(KubeSource {
            rx,
            _tasks: Arc::new(tasks),
        })
    }

    /// Waits until the first snapshot (every kind listed) has been published.
    pub async fn wait_synced(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| s.generation > 0).await;
    }
}

/// Secret data held for referenced Secrets, keyed by (namespace, name), with the
/// resourceVersion it was read at.
type SecretCache = HashMap<(String, String), (String, Arc<Secret>)>;

async fn publish(
    client: Client,
    stores: Stores,
    notify: Arc<Notify>,
    tx: watch::Sender<Arc<SourceState>>,
    coalesce: Duration,
) {
    for ready in [
        stores.ingresses.wait_until_ready().await,
        stores.classes.wait_until_ready().await,
        stores.services.wait_until_ready().await,
        stores.slices.wait_until_ready().await,
        stores.secret_meta.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return;
        }
    }
    if let Some(n) = &stores.nodes {
        if n.wait_until_ready().await.is_err() {
            return;
        }
    }
    if let Some(p) = &stores.class_params {
        if p.wait_until_ready().await.is_err() {
            return;
        }
    }
    if let Some(p) = &stores.alb_class_params {
        if p.wait_until_ready().await.is_err() {
            return;
        }
    }
    if let Some(n) = &stores.namespaces {
        if n.wait_until_ready().await.is_err() {
            return;
        }
    }
    // Gated pods too: a first snapshot without them would deregister their targets.
    if let Some(p) = &stores.gated_pods {
        if p.wait_until_ready().await.is_err() {
            return;
        }
    }
    let mut cache = SecretCache::new();
    let mut generation = 0u64;
    loop {
        let (snapshot, diagnostics) = read_snapshot(&client, &stores, &mut cache).await;
        let unchanged = {
            let cur = tx.borrow();
            generation > 0 && cur.snapshot == snapshot && cur.diagnostics == diagnostics
        };
        if !unchanged {
            generation += 1;
            let state = SourceState {
                snapshot,
                diagnostics,
                generation,
            };
            if tx.send(Arc::new(state)).is_err() {
                return;
            }
        }
        notify.notified().await;
        // Let a burst of events land before reading the stores again.
        tokio::time::sleep(coalesce).await;
    }
}

fn owned<K>(store: &Store<K>) -> Vec<Arc<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut v = store.state();
    // Stores are hash maps: sort so equal states compare equal.
    v.sort_by_key(|a| (a.namespace(), a.name_any()));
    v
}

async fn read_snapshot(
    client: &Client,
    stores: &Stores,
    cache: &mut SecretCache,
) -> (ClusterSnapshot, Vec<Diagnostic>) {
    let ingresses = owned(&stores.ingresses);
    let endpoint_slices = owned(&stores.slices);
    let mut diagnostics = Vec::new();
    let secrets = referenced_secrets(client, &ingresses, stores, cache, &mut diagnostics).await;
    let mut class_params = stores.class_params.as_ref().map(owned).unwrap_or_default();
    if let Some(alb) = &stores.alb_class_params {
        class_params.extend(owned(alb).iter().map(|p| Arc::new(p.to_tollgate())));
    }
    // Namespaces matter to a namespaceSelector (all of them, while some parameters have
    // one) and to the readiness gate's webhook (those labelled for it).
    let every = class_params
        .iter()
        .any(|p| p.spec.namespace_selector.is_some());
    let gated = |n: &PartialObjectMeta<Namespace>| {
        n.metadata.labels.as_ref().is_some_and(|l| {
            crate::readiness_gate::NAMESPACE_LABELS
                .iter()
                .any(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    };
    let namespaces = stores
        .namespaces
        .iter()
        .flat_map(owned)
        .filter(|n| every || gated(n))
        .map(|n| {
            Arc::new(Namespace {
                metadata: n.metadata.clone(),
                ..Namespace::default()
            })
        })
        .collect();
    let snapshot = ClusterSnapshot {
        ingress_classes: owned(&stores.classes),
        services: owned(&stores.services),
        endpoint_slices,
        secrets,
        nodes: stores.nodes.as_ref().map(owned).unwrap_or_default(),
        class_params,
        namespaces,
        ingresses,
        gated_pods_watched: stores.gated_pods.is_some(),
        // Only those not Ready yet: a Ready pod's endpoints speak for it, and its status
        // changes then need not rebuild the model.
        gated_pods: stores
            .gated_pods
            .as_ref()
            .map(owned)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                !p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .collect(),
        ..Default::default()
    };
    (snapshot, diagnostics)
}

/// Secrets an Ingress names in annotations (ingress-nginx's `auth-secret`, `auth-tls-secret`,
/// the AWS Load Balancer Controller's `auth-idp-oidc` `secretName`), in its own namespace: a
/// Secret of another namespace is refused by the builder, so it is not read.
fn annotated_secrets<'i>(ing: &'i Ingress, ns: &'i str) -> impl Iterator<Item = String> + 'i {
    let oidc = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("alb.ingress.kubernetes.io/auth-idp-oidc"))
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
        .and_then(|v| v.get("secretName")?.as_str().map(str::to_string));
    ["auth-secret", "auth-tls-secret"]
        .into_iter()
        .filter_map(move |a| {
            let v = ing
                .metadata
                .annotations
                .as_ref()?
                .get(&format!("nginx.ingress.kubernetes.io/{a}"))?
                .trim();
            match v.split_once('/') {
                Some((other, _)) if !other.is_empty() && other != ns => None,
                Some((_, name)) => Some(name.to_string()),
                None => Some(v.to_string()),
            }
        })
        .chain(oidc)
}

/// The Secrets named in Ingress `tls` sections and annotations, read through `cache`: a GET only for a
/// Secret not read yet or whose resourceVersion moved.
async fn referenced_secrets(
    client: &Client,
    ingresses: &[Arc<Ingress>],
    stores: &Stores,
    cache: &mut SecretCache,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Arc<Secret>> {
    let wanted: BTreeSet<(String, String)> = ingresses
        .iter()
        .flat_map(|ing| {
            let ns = ing.namespace().unwrap_or_default();
            let tls = ing
                .spec
                .iter()
                .flat_map(|s| s.tls.iter().flatten())
                .filter_map(|t| t.secret_name.clone());
            let annotated: Vec<String> = annotated_secrets(ing, &ns).collect();
            tls.chain(annotated).map(move |n| (ns.clone(), n))
        })
        .collect();
    cache.retain(|k, _| wanted.contains(k));
    let mut out = Vec::with_capacity(wanted.len());
    for (ns, name) in wanted {
        let meta_ref = reflector::ObjectRef::<PartialObjectMeta<Secret>>::new(&name).within(&ns);
        let Some(meta) = stores.secret_meta.get(&meta_ref) else {
            // Not in the cluster: the builder reports the missing Secret.
            cache.remove(&(ns, name));
            continue;
        };
        let rv = meta.resource_version().unwrap_or_default();
        let key = (ns.clone(), name.clone());
        if let Some((cached_rv, s)) = cache.get(&key) {
            if *cached_rv == rv {
                out.push(s.clone());
                continue;
            }
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        match api.get_opt(&name).await {
            Ok(Some(mut s)) => {
                drop_managed_fields(&mut s);
                let s = Arc::new(s);
                cache.insert(key, (rv, s.clone()));
                out.push(s);
            }
            Ok(None) => {
                cache.remove(&key);
            }
            Err(e) => {
                // Keep serving the last good copy if there is one.
                if let Some((_, s)) = cache.get(&key) {
                    out.push(s.clone());
                }
                diagnostics.push(Diagnostic::new(
                    Severity::Warning,
                    ObjectKind::Secret,
                    ns,
                    name,
                    Reason::SecretInvalid,
                    format!("cannot read the Secret: {e}"),
                ));
            }
        }
    }
    out
}
