//! The pod readiness gate (issue 14): in `ip` mode, Kubernetes ends old pods as soon as new
//! ones are Ready, while the ALB may still hold the new targets in `initial`; with few
//! replicas a target group is then left with no healthy target. As the AWS Load Balancer
//! Controller's gate does (docs/deploy/pod_readiness_gate.md), a mutating webhook adds a
//! readiness gate to new pods whose Service backs an `ip` target group, in namespaces
//! labelled for it; the ALB registers such a pod once its containers are ready
//! (`TargetState::GatePending`), and the AWS loop sets the gate's condition True once
//! `DescribeTargetHealth` reports it healthy.
//!
//! Where Tollgate differs: one gate per pod (every target group the pod is in must report
//! it healthy), and a timeout after which the gate opens anyway with an Event saying so,
//! so a stuck ALB never freezes a rollout. The webhook is `failurePolicy: Ignore`, so
//! Tollgate being down never blocks pod creation (those pods get no gate).
//!
//! The namespace label is Tollgate's or the AWS Load Balancer Controller's: namespaces set
//! up for that controller's gate keep their rollout safety when they move over.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use tollgate_contract::{DesiredState, TargetAddress, TargetType};

use crate::{build, BuildOptions, ClusterSnapshot};

/// The pod condition the gate waits for.
pub const CONDITION: &str = "target-health.tollgate.io/load-balancer";
/// Put on the pods the webhook gates, so Tollgate watches only those pods.
pub const LABEL: &str = "tollgate.io/readiness-gate";
/// Namespace labels (key, value) that turn the webhook on; deploy/base/webhook.yaml
/// selects on them.
pub const NAMESPACE_LABELS: [(&str, &str); 2] = [
    ("tollgate.io/pod-readiness-gate-inject", "enabled"),
    ("elbv2.k8s.aws/pod-readiness-gate-inject", "enabled"),
];
/// The path the pod webhook answers on.
pub const PATH: &str = "/mutate-v1-pod";
/// How long a gate waits for the ALB before it opens anyway.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

fn condition_status<'p>(pod: &'p Pod, kind: &str) -> Option<&'p str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

fn has_gate(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.condition_type == CONDITION))
}

/// Whether the pod's containers are ready and only this gate keeps it from Ready: the
/// gate waits on the ALB's health check.
pub fn only_the_gate_holds(pod: &Pod) -> bool {
    registrable(pod) && condition_status(pod, CONDITION) != Some("True")
}

/// Whether the ALB should register the pod's not-ready endpoints: a gated pod whose
/// containers are ready, open gate or not — between the gate opening and the endpoint
/// turning ready, deregistering it would restart its health checks just as Kubernetes
/// counts it Ready and ends an old pod.
pub fn registrable(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && has_gate(pod)
        && condition_status(pod, "ContainersReady") == Some("True")
}

/// When the pod's containers became ready: what the timeout counts from.
fn containers_ready_since(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ContainersReady" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Whether a new pod should carry the gate: its namespace is labelled for it and a
/// Service selecting it backs an `ip` target group of one of Tollgate's load balancers.
/// Built from the namespace's own Ingresses and Services only (a backend is always in its
/// Ingress's namespace), so the cost follows the namespace, not the cluster.
pub fn wants_gate(
    pod: &Pod,
    namespace: &str,
    snapshot: &ClusterSnapshot,
    opts: &BuildOptions,
) -> bool {
    // Only an AWS loop opens gates, and only on the pods it watches: otherwise a gate
    // would never open.
    if opts.provider != crate::model_builder::ProviderKind::Aws || !snapshot.gated_pods_watched {
        return false;
    }
    let labelled = snapshot.namespaces.iter().any(|n| {
        n.metadata.name.as_deref() == Some(namespace)
            && n.metadata.labels.as_ref().is_some_and(|l| {
                NAMESPACE_LABELS
                    .iter()
                    .any(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
    });
    if !labelled {
        return false;
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let in_ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.as_deref().unwrap_or("default") == namespace
    };
    let selecting: Vec<&str> = snapshot
        .services
        .iter()
        .filter(|s| in_ns(&s.metadata))
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.selector.as_ref())
                .is_some_and(|sel| {
                    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        })
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    if selecting.is_empty() {
        return false;
    }
    let own = ClusterSnapshot {
        ingresses: snapshot
            .ingresses
            .iter()
            .filter(|i| in_ns(&i.metadata))
            .cloned()
            .collect(),
        services: snapshot
            .services
            .iter()
            .filter(|s| in_ns(&s.metadata))
            .cloned()
            .collect(),
        ingress_classes: snapshot.ingress_classes.clone(),
        class_params: snapshot.class_params.clone(),
        namespaces: snapshot.namespaces.clone(),
        secrets: snapshot
            .secrets
            .iter()
            .filter(|s| in_ns(&s.metadata))
            .cloned()
            .collect(),
        ..ClusterSnapshot::default()
    };
    build(&own, opts)
        .model
        .load_balancers
        .iter()
        .flat_map(|lb| &lb.target_groups)
        .any(|tg| {
            tg.target_type == TargetType::Ip
                && tg.service.namespace == namespace
                && selecting.contains(&tg.service.name.as_str())
        })
}

/// The AdmissionReview answer to a pod's creation: the gate and the label added when the
/// pod wants the gate, nothing otherwise. Never a refusal: a pod is never blocked here.
pub fn mutate(body: &[u8], snapshot: &ClusterSnapshot, opts: &BuildOptions) -> serde_json::Value {
    let review: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let request = &review["request"];
    let uid = request["uid"].as_str().unwrap_or_default();
    let mut response = json!({"uid": uid, "allowed": true});
    let pod: Option<Pod> = serde_json::from_value(request["object"].clone()).ok();
    let namespace = request["namespace"].as_str().unwrap_or("default");
    if let Some(pod) = pod.filter(|p| !has_gate(p) && wants_gate(p, namespace, snapshot, opts)) {
        let gate = json!({"conditionType": CONDITION});
        let mut ops = Vec::new();
        match pod.spec.as_ref().and_then(|s| s.readiness_gates.as_ref()) {
            Some(_) => {
                ops.push(json!({"op": "add", "path": "/spec/readinessGates/-", "value": gate}))
            }
            None => ops.push(json!({"op": "add", "path": "/spec/readinessGates", "value": [gate]})),
        }
        match &pod.metadata.labels {
            Some(_) => ops.push(json!({"op": "add", "path": format!("/metadata/labels/{}", LABEL.replace('/', "~1")), "value": "true"})),
            None => ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {LABEL: "true"}})),
        }
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD
            .encode(serde_json::Value::Array(ops).to_string()));
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

/// A gated pod waiting for its condition, as the AWS loop checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Every IP of the pod (dual-stack pods have two).
    pub ips: Vec<String>,
    /// Since its containers became ready.
    pub waited: Duration,
}

/// The gated pods whose gate is still closed and whose containers are ready.
pub fn waiting(snapshot: &ClusterSnapshot, now: k8s_openapi::jiff::Timestamp) -> Vec<Waiting> {
    snapshot
        .gated_pods
        .iter()
        .filter(|p| only_the_gate_holds(p))
        .filter_map(|p| {
            let since = containers_ready_since(p).unwrap_or(now);
            let status = p.status.as_ref()?;
            let mut ips: Vec<String> = status
                .pod_ips
                .iter()
                .flatten()
                .map(|i| i.ip.clone())
                .collect();
            if ips.is_empty() {
                ips.push(status.pod_ip.clone()?);
            }
            Some(Waiting {
                namespace: p.metadata.namespace.clone()?,
                name: p.metadata.name.clone()?,
                uid: p.metadata.uid.clone().unwrap_or_default(),
                ips,
                waited: Duration::from_secs(
                    u64::try_from(now.duration_since(since).as_secs()).unwrap_or(0),
                ),
            })
        })
        .collect()
}

/// What to do with one waiting pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every target group holding it reports it healthy.
    Healthy,
    /// Waited `timeout` without every target group reporting it healthy; what was seen.
    TimedOut(String),
    Wait,
}

/// The verdict for `w`, given the target groups (by AWS name) that hold its IP in the
/// model and the health AWS reports for it in each (`None`: not registered yet). A pod in
/// no target group yet (its endpoint not written, or its Service no longer behind an ALB)
/// waits too: a gate opens only on health or at the timeout.
pub fn decide(w: &Waiting, health: &[(String, Option<String>)], timeout: Duration) -> Verdict {
    if !health.is_empty() && health.iter().all(|(_, s)| s.as_deref() == Some("healthy")) {
        return Verdict::Healthy;
    }
    if w.waited >= timeout {
        let seen: Vec<String> = health
            .iter()
            .map(|(tg, s)| format!("{tg}: {}", s.as_deref().unwrap_or("not registered")))
            .collect();
        return Verdict::TimedOut(if seen.is_empty() {
            "no target group of Tollgate's holds it".into()
        } else {
            seen.join(", ")
        });
    }
    Verdict::Wait
}

/// The model's `ip` target groups each of `ips` is registered in (as ALB names them).
pub fn target_groups_by_ip(
    model: &DesiredState,
    ips: &std::collections::HashSet<&str>,
    tg_name: impl Fn(&str, &tollgate_contract::TargetGroup) -> String,
) -> BTreeMap<String, Vec<(String, u16)>> {
    let mut out: BTreeMap<String, Vec<(String, u16)>> = BTreeMap::new();
    for lb in &model.load_balancers {
        for tg in lb
            .target_groups
            .iter()
            .filter(|t| t.target_type == TargetType::Ip)
        {
            for t in tg.targets.iter().filter(|t| t.state.registered()) {
                let TargetAddress::Ip(ip) = &t.address else {
                    continue;
                };
                let ip = ip.to_string();
                if ips.contains(ip.as_str()) {
                    out.entry(ip)
                        .or_default()
                        .push((tg_name(&lb.id, tg), t.port));
                }
            }
        }
    }
    out
}

/// Writes the gate's condition True, with why; an Event on the pod when it timed out.
pub async fn open(
    client: &kube::Client,
    recorder: &Recorder,
    w: &Waiting,
    verdict: &Verdict,
) -> Result<(), kube::Error> {
    let (reason, message) = match verdict {
        Verdict::Healthy => ("TargetHealthy", "the load balancer reports the target healthy".to_string()),
        Verdict::TimedOut(seen) => (
            "ReadinessGateTimeout",
            format!("the load balancer did not report the target healthy in time ({seen}); the gate opens anyway so the rollout goes on"),
        ),
        Verdict::Wait => return Ok(()),
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &w.namespace);
    let patch = json!({
        "metadata": {"uid": w.uid},
        "status": {"conditions": [{
            "type": CONDITION,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        }]}
    });
    api.patch_status(&w.name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    if matches!(verdict, Verdict::TimedOut(_)) {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(w.namespace.clone()),
            name: Some(w.name.clone()),
            uid: Some(w.uid.clone()),
            ..Default::default()
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(message),
            action: "ReadinessGate".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, pod = %w.name, "cannot record the readiness gate Event");
        }
    }
    Ok(())
}

/// The Event recorder the gate's Events come from.
pub fn recorder(client: &kube::Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: "tollgate".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::manifest_dir::parse_manifests;

    fn cluster(label: &str, target_type: &str) -> ClusterSnapshot {
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{{label}: enabled}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{selector: {{app: web}}, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: tollgate}}\nspec: {{controller: tollgate.io/ingress-controller}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i, namespace: shop, annotations: {{alb.ingress.kubernetes.io/target-type: {target_type}}}}}\nspec:\n  ingressClassName: tollgate\n  rules: [{{host: a.example, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n"
        );
        let mut snap = parse_manifests("c.yaml", &yaml, false).0;
        snap.gated_pods_watched = true;
        snap
    }

    fn review(labels: &str) -> Vec<u8> {
        let pod: serde_json::Value = serde_json::from_str(&format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p","labels":{labels}}},"spec":{{"containers":[{{"name":"c","image":"x"}}]}}}}"#
        ))
        .expect("pod");
        json!({"request": {"uid": "u1", "namespace": "shop", "object": pod}})
            .to_string()
            .into_bytes()
    }

    fn aws() -> BuildOptions {
        BuildOptions {
            provider: crate::model_builder::ProviderKind::Aws,
            grouping: crate::Grouping::ByIngressGroup,
            ..BuildOptions::default()
        }
    }

    fn patch(answer: &serde_json::Value) -> Option<serde_json::Value> {
        let b64 = answer["response"]["patch"].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    #[test]
    fn only_pods_of_ip_target_groups_in_labelled_namespaces_are_gated() {
        let ns = NAMESPACE_LABELS[0].0;
        let a = mutate(&review(r#"{"app":"web"}"#), &cluster(ns, "ip"), &aws());
        assert_eq!(a["response"]["allowed"], true);
        let p = patch(&a).expect("a patch");
        assert_eq!(p[0]["path"], "/spec/readinessGates");
        assert_eq!(p[0]["value"][0]["conditionType"], CONDITION);
        assert_eq!(p[1]["path"], "/metadata/labels/tollgate.io~1readiness-gate");
        // The AWS Load Balancer Controller's label works too.
        let lbc = mutate(
            &review(r#"{"app":"web"}"#),
            &cluster(NAMESPACE_LABELS[1].0, "ip"),
            &aws(),
        );
        assert!(patch(&lbc).is_some());
        // Not: another Service's pod, instance targets, an unlabelled namespace, the proxy.
        for (answer, why) in [
            (
                mutate(&review(r#"{"app":"db"}"#), &cluster(ns, "ip"), &aws()),
                "no Service selects it",
            ),
            (
                mutate(
                    &review(r#"{"app":"web"}"#),
                    &cluster(ns, "instance"),
                    &aws(),
                ),
                "instance targets",
            ),
            (
                mutate(&review(r#"{"app":"web"}"#), &cluster("other", "ip"), &aws()),
                "namespace not labelled",
            ),
            (
                mutate(
                    &review(r#"{"app":"web"}"#),
                    &ClusterSnapshot {
                        gated_pods_watched: false,
                        ..cluster(ns, "ip")
                    },
                    &aws(),
                ),
                "pods not watched",
            ),
            (
                mutate(
                    &review(r#"{"app":"web"}"#),
                    &cluster(ns, "ip"),
                    &BuildOptions {
                        provider: crate::model_builder::ProviderKind::Proxy,
                        ..aws()
                    },
                ),
                "proxy mode",
            ),
        ] {
            assert_eq!(answer["response"]["allowed"], true, "{why}");
            assert!(patch(&answer).is_none(), "{why}: {answer}");
        }
        // Garbage is allowed, never refused.
        let a = mutate(b"not json", &cluster(ns, "ip"), &aws());
        assert_eq!(a["response"]["allowed"], true);
    }

    fn waiting(secs: u64) -> Waiting {
        Waiting {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            ips: vec!["10.0.0.1".into()],
            waited: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_pod_only_the_gate_holds_is_registered_with_the_alb_but_takes_no_new_requests_elsewhere() {
        let mut snap = cluster(NAMESPACE_LABELS[0].0, "ip");
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n- {addresses: [10.0.0.1], conditions: {ready: false}, targetRef: {kind: Pod, name: gated, namespace: shop}}\n- {addresses: [10.0.0.2], conditions: {ready: false}, targetRef: {kind: Pod, name: starting, namespace: shop}}\n";
        snap.merge(parse_manifests("s.yaml", slice, false).0);
        let pod = |name: &str, containers_ready: &str| -> std::sync::Arc<Pod> {
            std::sync::Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "shop", "labels": {LABEL: "true"}},
                    "spec": {"containers": [{"name": "c"}], "readinessGates": [{"conditionType": CONDITION}]},
                    "status": {"conditions": [{"type": "ContainersReady", "status": containers_ready}]}
                }))
                .expect("pod"),
            )
        };
        snap.gated_pods = vec![pod("gated", "True"), pod("starting", "False")];
        let states = |snap: &ClusterSnapshot| -> Vec<(String, tollgate_contract::TargetState)> {
            build(snap, &aws())
                .model
                .load_balancers
                .iter()
                .flat_map(|lb| &lb.target_groups)
                .flat_map(|tg| &tg.targets)
                .map(|t| (t.address.to_string(), t.state))
                .collect()
        };
        let on_aws = states(&snap);
        assert_eq!(
            on_aws,
            [
                (
                    "10.0.0.1".to_string(),
                    tollgate_contract::TargetState::GatePending
                ),
                (
                    "10.0.0.2".to_string(),
                    tollgate_contract::TargetState::NotReady
                )
            ]
        );
        assert!(on_aws[0].1.registered() && !on_aws[0].1.accepts_new_requests());
        assert!(!on_aws[1].1.registered());

        // The same through core Endpoints (a cluster without EndpointSlices).
        let gated_pods = std::mem::take(&mut snap.gated_pods);
        let mut snap = cluster(NAMESPACE_LABELS[0].0, "ip");
        let endpoints = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web, namespace: shop}\nsubsets:\n- notReadyAddresses: [{ip: 10.0.0.1, targetRef: {kind: Pod, name: gated, namespace: shop}}, {ip: 10.0.0.2, targetRef: {kind: Pod, name: starting, namespace: shop}}]\n  ports: [{name: http, port: 8080}]\n";
        snap.merge(parse_manifests("e.yaml", endpoints, false).0);
        snap.gated_pods = gated_pods;
        assert_eq!(states(&snap), on_aws);
    }

    #[test]
    fn the_gate_opens_on_health_or_timeout_never_before() {
        let t = Duration::from_secs(60);
        let h = |s: &[Option<&str>]| -> Vec<(String, Option<String>)> {
            s.iter()
                .enumerate()
                .map(|(i, s)| (format!("tg{i}"), s.map(str::to_string)))
                .collect()
        };
        assert_eq!(
            decide(&waiting(1), &h(&[Some("healthy")]), t),
            Verdict::Healthy
        );
        assert_eq!(
            decide(&waiting(1), &h(&[Some("healthy"), Some("initial")]), t),
            Verdict::Wait
        );
        assert_eq!(decide(&waiting(1), &h(&[None]), t), Verdict::Wait);
        assert_eq!(decide(&waiting(1), &[], t), Verdict::Wait);
        assert_eq!(
            decide(&waiting(60), &[], t),
            Verdict::TimedOut("no target group of Tollgate's holds it".into())
        );
        assert_eq!(
            decide(&waiting(60), &h(&[Some("healthy"), None]), t),
            Verdict::TimedOut("tg0: healthy, tg1: not registered".into())
        );
    }
}
