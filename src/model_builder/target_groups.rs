//! Backends → target groups: resolving a Service port, shaping the target group from
//! annotations, and filling it with targets from EndpointSlices (or Endpoints) and Nodes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Node, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IngressBackend;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use tollgate_contract::{
    BackendProtocol, Diagnostic, HealthCheck, ObjectKind, ObjectRef, ProtocolVersion, Reason,
    Severity, Target, TargetAddress, TargetGroup, TargetState, TargetType,
};

use super::annotation_registry::{self, OnObject, ProviderKind};
use super::annotations::{backend_settings, BackendSettings};
use super::{BuildOptions, FastMap};
use crate::ClusterSnapshot;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const EXCLUDE_NODE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The cluster objects backends are resolved against, indexed once per build.
pub(crate) struct BackendIndex<'a> {
    services: FastMap<(&'a str, &'a str), &'a Arc<Service>>,
    slices: FastMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    endpoints: FastMap<(&'a str, &'a str), &'a Endpoints>,
    nodes: Vec<&'a Node>,
    /// Node name → EC2 instance ID, for the nodes with an AWS `providerID`.
    instances: FastMap<&'a str, &'a str>,
    /// Parsed Service annotations, with their errors reported once.
    service_settings: FastMap<(&'a str, &'a str), BackendSettings>,
    /// Services carrying a protective annotation the provider does not honour: routes to
    /// them answer 503 instead of forwarding without the protection.
    service_refusals: FastMap<(&'a str, &'a str), String>,
    /// Set when every Service is the same object as in the last build (see `unchanged`).
    services_as_last_build: bool,
    /// Pods (namespace, name) whose containers are ready and whom only Tollgate's
    /// readiness gate holds back: their not-ready endpoints are registered with the ALB.
    gate_pending: std::collections::HashSet<(&'a str, &'a str)>,
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

impl<'a> BackendIndex<'a> {
    pub(crate) fn new(
        snap: &'a ClusterSnapshot,
        provider: ProviderKind,
        diags: &mut Vec<Diagnostic>,
    ) -> Self {
        let mut service_settings = FastMap::default();
        let mut service_refusals = FastMap::default();
        let mut services = FastMap::default();
        for s in &snap.services {
            let key = ns_name(&s.metadata);
            services.insert(key, s);
            if let Some(a) = s.metadata.annotations.as_ref() {
                let mut refusals = Vec::new();
                for f in annotation_registry::check(a, OnObject::Service, provider) {
                    if f.severity == Severity::Error {
                        refusals.push(f.message.clone());
                    }
                    diags.push(Diagnostic::new(
                        f.severity,
                        ObjectKind::Service,
                        key.0,
                        key.1,
                        f.reason,
                        f.message,
                    ));
                }
                if !refusals.is_empty() {
                    service_refusals.insert(key, refusals.join("; "));
                }
                let (settings, errors) = backend_settings(a);
                for e in errors {
                    diags.push(Diagnostic::new(
                        Severity::Warning,
                        ObjectKind::Service,
                        key.0,
                        key.1,
                        Reason::AnnotationInvalid,
                        format!("{e}; the value is ignored"),
                    ));
                }
                service_settings.insert(key, settings);
            }
        }
        let mut slices: FastMap<(&str, &str), Vec<&EndpointSlice>> = FastMap::default();
        for s in &snap.endpoint_slices {
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                slices
                    .entry((ns_name(&s.metadata).0, svc.as_str()))
                    .or_default()
                    .push(s);
            }
        }
        BackendIndex {
            services,
            slices,
            endpoints: snap
                .endpoints
                .iter()
                .map(|e| (ns_name(&e.metadata), &**e))
                .collect(),
            nodes: snap.nodes.iter().map(|n| &**n).collect(),
            instances: snap
                .nodes
                .iter()
                .filter_map(|n| Some((n.metadata.name.as_deref()?, instance_of(n)?)))
                .collect(),
            service_settings,
            service_refusals,
            services_as_last_build: false,
            gate_pending: snap
                .gated_pods
                .iter()
                .filter(|p| crate::readiness_gate::registrable(p))
                .map(|p| ns_name(&p.metadata))
                .collect(),
        }
    }
}

/// Why a backend could not be resolved; the route then answers 503.
pub(crate) struct Unresolved {
    pub reason: Reason,
    pub message: String,
}

impl Unresolved {
    /// A backend refused for a protective annotation is an Error: its route is not served.
    pub(crate) fn severity(&self) -> Severity {
        match self.reason {
            Reason::AnnotationUnsupported | Reason::AnnotationRefused => Severity::Error,
            _ => Severity::Warning,
        }
    }
}

fn unresolved(reason: Reason, message: String) -> Unresolved {
    Unresolved { reason, message }
}

/// The target groups of one load balancer, shared per (Service, port, settings).
pub(crate) struct TargetGroupSet<'i, 'a> {
    index: &'i BackendIndex<'a>,
    groups: BTreeMap<String, TargetGroup>,
}

impl<'i, 'a> TargetGroupSet<'i, 'a> {
    pub(crate) fn new(index: &'i BackendIndex<'a>) -> Self {
        TargetGroupSet {
            index,
            groups: BTreeMap::new(),
        }
    }

    pub(crate) fn into_sorted(self) -> Vec<TargetGroup> {
        self.groups.into_values().collect()
    }

    /// Adds the target group `spec` describes, with its targets as the cluster has them now,
    /// unless it is already in the set.
    pub(crate) fn add(&mut self, spec: &TargetGroupSpec) {
        if self.groups.contains_key(&spec.group.id) {
            return;
        }
        let mut tg = spec.group.clone();
        tg.targets = match (spec.cluster_ip, spec.node_port) {
            (Some(ip), _) => vec![Target {
                address: TargetAddress::Ip(ip),
                port: tg.service_port,
                node: None,
                instance: None,
                state: TargetState::Ready,
            }],
            (None, Some(np)) => self.node_targets(np),
            (None, None) => self.pod_targets(&tg.service.namespace, &tg.service.name, &spec.port),
        };
        self.groups.insert(tg.id.clone(), tg);
    }
}

/// A Service looked up while resolving a backend, and what was found: a resolution stays
/// valid while each Service it looked up is the same object (or still absent).
#[derive(Debug, Clone)]
pub(crate) struct ServiceDep {
    namespace: String,
    name: String,
    found: Option<Arc<Service>>,
}

impl BackendIndex<'_> {
    /// Every Service is the same object as in the last build: a resolution checked then
    /// (the only ones the builder keeps) is unchanged without looking at its lookups.
    pub(crate) fn services_unchanged_since_last_build(&mut self) {
        self.services_as_last_build = true;
    }

    /// Whether every Service in `deps` is still what was found then.
    pub(crate) fn unchanged(&self, deps: &[ServiceDep]) -> bool {
        self.services_as_last_build
            || deps.iter().all(|d| {
                match (
                    self.services.get(&(d.namespace.as_str(), d.name.as_str())),
                    &d.found,
                ) {
                    (None, None) => true,
                    (Some(now), Some(then)) => Arc::ptr_eq(now, then),
                    _ => false,
                }
            })
    }
}

/// A target group as a backend resolves it, without its targets: those follow the
/// endpoints, which change without the Ingress or the Service changing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TargetGroupSpec {
    pub group: TargetGroup,
    node_port: Option<u16>,
    port: ServicePort,
    /// ingress-nginx `service-upstream`: the one target is this cluster IP.
    cluster_ip: Option<IpAddr>,
}

impl<'a> BackendIndex<'a> {
    /// The target group serving `backend` for an Ingress in `namespace`; the Service looked
    /// up is added to `deps`.
    pub(crate) fn target_group_spec(
        &self,
        namespace: &str,
        backend: &IngressBackend,
        ingress_settings: &BackendSettings,
        opts: &BuildOptions,
        deps: &mut Vec<ServiceDep>,
    ) -> Result<TargetGroupSpec, Unresolved> {
        if let Some(r) = &backend.resource {
            return Err(unresolved(
                Reason::ResourceBackendUnsupported,
                format!(
                    "resource backends ({} {}) are not supported",
                    r.kind, r.name
                ),
            ));
        }
        let Some(sb) = &backend.service else {
            return Err(unresolved(
                Reason::ObjectInvalid,
                "a backend names neither a service nor a resource".into(),
            ));
        };
        let found = self.services.get(&(namespace, sb.name.as_str()));
        if !deps
            .iter()
            .any(|d| d.namespace == namespace && d.name == sb.name)
        {
            deps.push(ServiceDep {
                namespace: namespace.to_string(),
                name: sb.name.clone(),
                found: found.map(|s| Arc::clone(s)),
            });
        }
        let Some(svc) = found else {
            return Err(unresolved(
                Reason::ServiceNotFound,
                format!("Service {namespace}/{} not found", sb.name),
            ));
        };
        if let Some(why) = self.service_refusals.get(&(namespace, sb.name.as_str())) {
            return Err(unresolved(
                Reason::AnnotationUnsupported,
                format!("Service {namespace}/{}: {why}", sb.name),
            ));
        }
        let spec = svc.spec.as_ref();
        let svc_type = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
        if svc_type == "ExternalName" {
            return Err(unresolved(
                Reason::ServiceTypeUnsupported,
                format!("Service {namespace}/{} is of type ExternalName, which has no endpoints to balance", sb.name),
            ));
        }
        let ports: &[ServicePort] = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        let wanted = sb.port.as_ref();
        let port = ports.iter().find(|p| match wanted {
            Some(w) => match (&w.name, w.number) {
                (Some(n), _) if !n.is_empty() => p.name.as_deref() == Some(n.as_str()),
                (_, Some(num)) => p.port == num,
                _ => false,
            },
            None => ports.len() == 1,
        });
        let Some(port) = port else {
            let want = match wanted {
                Some(w) => w
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .or(w.number.map(|n| n.to_string()))
                    .unwrap_or_else(|| "(none given)".into()),
                None => "(none given)".into(),
            };
            let have: Vec<String> = ports
                .iter()
                .map(|p| match &p.name {
                    Some(n) => format!("{}/{n}", p.port),
                    None => p.port.to_string(),
                })
                .collect();
            return Err(unresolved(
                Reason::ServicePortNotFound,
                format!(
                    "Service {namespace}/{} has no port {want} (it has: {})",
                    sb.name,
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ),
            ));
        };
        let Ok(service_port) = u16::try_from(port.port) else {
            return Err(unresolved(
                Reason::ServicePortNotFound,
                format!(
                    "Service {namespace}/{} port {} is out of range",
                    sb.name, port.port
                ),
            ));
        };

        let settings = match self.service_settings.get(&(namespace, sb.name.as_str())) {
            Some(svc_settings) => ingress_settings.overridden_by(svc_settings),
            None => ingress_settings.clone(),
        };
        let target_type = settings.target_type.unwrap_or(opts.default_target_type);
        let node_port = if target_type == TargetType::Instance {
            match (svc_type, port.node_port.and_then(|p| u16::try_from(p).ok())) {
                ("NodePort" | "LoadBalancer", Some(np)) => Some(np),
                _ => {
                    return Err(unresolved(
                        Reason::ServiceTypeUnsupported,
                        format!(
                            "target-type instance needs Service {namespace}/{} to be of type NodePort or LoadBalancer (it is {svc_type})",
                            sb.name
                        ),
                    ))
                }
            }
        } else {
            None
        };

        let protocol = settings.protocol.unwrap_or_default();
        let health_check = HealthCheck {
            path: settings
                .healthcheck_path
                .clone()
                .unwrap_or_else(|| "/".into()),
            port: health_check_port(settings.healthcheck_port.as_deref(), ports, target_type)
                .map_err(|why| {
                    unresolved(
                        Reason::AnnotationInvalid,
                        format!("Service {namespace}/{}: healthcheck-port: {why}", sb.name),
                    )
                })?,
            protocol: settings.healthcheck_protocol.unwrap_or(protocol),
            interval_seconds: settings.healthcheck_interval_seconds.unwrap_or(15),
            timeout_seconds: settings.healthcheck_timeout_seconds.unwrap_or(5),
            healthy_threshold: settings.healthy_threshold.unwrap_or(2),
            unhealthy_threshold: settings.unhealthy_threshold.unwrap_or(2),
            success_codes: settings.success_codes.clone().unwrap_or_else(|| {
                // gRPC health checks answer with gRPC status codes.
                if settings.protocol_version == Some(ProtocolVersion::Grpc) {
                    "12".into()
                } else {
                    "200".into()
                }
            }),
        };
        // ingress-nginx's service-upstream: the ClusterIP as the only target (a headless
        // Service has none, and keeps its endpoints). Proxy only: ALB cannot reach it.
        let cluster_ip = (settings.service_upstream
            && opts.provider == super::ProviderKind::Proxy
            && target_type == TargetType::Ip)
            .then(|| spec.and_then(|s| s.cluster_ip.as_deref()))
            .flatten()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let mut attributes = settings.target_group_attributes.clone();
        // ingress-nginx proxy-ssl-*: only TLS targets, only the proxy (ALB does not verify
        // targets; the registry says so). A group of its own, named by its settings.
        let upstream_tls = settings.upstream_tls.clone().filter(|_| {
            protocol == BackendProtocol::Https && opts.provider == super::ProviderKind::Proxy
        });
        if let Some(t) = &upstream_tls {
            attributes.insert(
                "tollgate.io/upstream-tls".into(),
                super::tls_secrets::hex16(&Sha256::digest(t.profile().as_bytes())),
            );
        }
        if cluster_ip.is_some() {
            // A group of its own: the same Service's endpoint group may serve other routes.
            attributes.insert("tollgate.io/service-upstream".into(), "true".into());
        }
        let mut tg = TargetGroup {
            id: String::new(),
            service: ObjectRef::new(namespace, sb.name.clone()),
            service_port,
            protocol,
            protocol_version: settings.protocol_version.unwrap_or_default(),
            target_type,
            health_check,
            attributes,
            upstream_tls,
            targets: Vec::new(),
        };
        tg.id = target_group_id(&tg, opts.default_target_type);
        Ok(TargetGroupSpec {
            group: tg,
            node_port,
            port: port.clone(),
            cluster_ip,
        })
    }
}

impl TargetGroupSet<'_, '_> {
    /// A not-ready endpoint's state: `GatePending` when it is a pod only Tollgate's
    /// readiness gate holds back (registered with the ALB), else `NotReady`.
    fn not_ready_state(
        &self,
        namespace: &str,
        target: &Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) -> TargetState {
        let gated = target.as_ref().is_some_and(|r| {
            r.kind.as_deref() == Some("Pod")
                && self.index.gate_pending.contains(&(
                    r.namespace.as_deref().unwrap_or(namespace),
                    r.name.as_deref().unwrap_or_default(),
                ))
        });
        if gated {
            TargetState::GatePending
        } else {
            TargetState::NotReady
        }
    }

    fn pod_targets(&self, namespace: &str, service: &str, port: &ServicePort) -> Vec<Target> {
        let port_name = port.name.as_deref().unwrap_or("");
        let mut best: BTreeMap<(IpAddr, u16), (TargetState, Option<String>)> = BTreeMap::new();
        let mut add = |ip: IpAddr, p: u16, state: TargetState, node: Option<String>| {
            let e = best.entry((ip, p)).or_insert((state, node.clone()));
            // A pod listed twice (slices overlap during updates): the readiest listing wins.
            if state < e.0 {
                *e = (state, node);
            }
        };
        match self.index.slices.get(&(namespace, service)) {
            Some(slices) => {
                for slice in slices {
                    if slice.address_type == "FQDN" {
                        continue;
                    }
                    let Some(p) = slice
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                    else {
                        continue;
                    };
                    let Some(num) = p.port.and_then(|n| u16::try_from(n).ok()) else {
                        continue;
                    };
                    for ep in &slice.endpoints {
                        let c = ep.conditions.as_ref();
                        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                        // A nil `ready` means ready (EndpointSlice API contract).
                        let ready = c.and_then(|c| c.ready).unwrap_or(true);
                        let state = if terminating {
                            TargetState::Terminating
                        } else if ready {
                            TargetState::Ready
                        } else {
                            self.not_ready_state(namespace, &ep.target_ref)
                        };
                        for a in &ep.addresses {
                            if let Ok(ip) = a.parse::<IpAddr>() {
                                add(ip, num, state, ep.node_name.clone());
                            }
                        }
                    }
                }
            }
            None => {
                if let Some(eps) = self.index.endpoints.get(&(namespace, service)) {
                    for subset in eps.subsets.iter().flatten() {
                        let Some(p) = subset
                            .ports
                            .iter()
                            .flatten()
                            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                        else {
                            continue;
                        };
                        let Ok(num) = u16::try_from(p.port) else {
                            continue;
                        };
                        let listed =
                            subset
                                .addresses
                                .iter()
                                .flatten()
                                .map(|a| (a, TargetState::Ready))
                                .chain(
                                    subset.not_ready_addresses.iter().flatten().map(|a| {
                                        (a, self.not_ready_state(namespace, &a.target_ref))
                                    }),
                                );
                        for (a, state) in listed {
                            if let Ok(ip) = a.ip.parse::<IpAddr>() {
                                add(ip, num, state, a.node_name.clone());
                            }
                        }
                    }
                }
            }
        }
        best.into_iter()
            .map(|((ip, port), (state, node))| Target {
                address: TargetAddress::Ip(ip),
                port,
                instance: node
                    .as_deref()
                    .and_then(|n| self.index.instances.get(n))
                    .map(|i| i.to_string()),
                node,
                state,
            })
            .collect()
    }

    fn node_targets(&self, node_port: u16) -> Vec<Target> {
        let mut out: Vec<Target> = self
            .index
            .nodes
            .iter()
            .filter(|n| {
                !n.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(EXCLUDE_NODE_LABEL))
            })
            .filter_map(|n| {
                let instance = instance_of(n)?;
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "True");
                Some(Target {
                    address: TargetAddress::Instance(instance.to_string()),
                    port: node_port,
                    node: n.metadata.name.clone(),
                    instance: Some(instance.to_string()),
                    state: if ready {
                        TargetState::Ready
                    } else {
                        TargetState::NotReady
                    },
                })
            })
            .collect();
        out.sort();
        out
    }
}

/// The EC2 instance ID of a Node: `aws:///us-east-1a/i-0abc…` ends with it.
fn instance_of(n: &Node) -> Option<&str> {
    let provider_id = n.spec.as_ref()?.provider_id.as_deref()?;
    provider_id.rsplit('/').next().filter(|s| !s.is_empty())
}

/// `<namespace>/<service>:<port>`, plus a digest of the settings when they differ from the
/// defaults, so two target groups for one port with different settings stay distinct.
fn target_group_id(tg: &TargetGroup, default_target_type: TargetType) -> String {
    let base = format!(
        "{}/{}:{}",
        tg.service.namespace, tg.service.name, tg.service_port
    );
    let is_default = tg.protocol == BackendProtocol::Http
        && tg.protocol_version == ProtocolVersion::Http1
        && tg.target_type == default_target_type
        && tg.health_check == HealthCheck::default()
        && tg.attributes.is_empty();
    if is_default {
        return base;
    }
    let mut h = Sha256::new();
    h.update(format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        tg.protocol, tg.protocol_version, tg.target_type, tg.health_check, tg.attributes
    ));
    let digest = h.finalize();
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{base}-{hex}")
}

/// The health-check port of a target group: `traffic-port` (the default) or a number as
/// given; a name is the Service port of that name — its NodePort for `instance` targets,
/// its numeric `targetPort` for `ip` targets (a named `targetPort` cannot be resolved
/// without the pods), as the AWS Load Balancer Controller resolves it
/// (`buildTargetGroupHealthCheckPort`).
fn health_check_port(
    given: Option<&str>,
    ports: &[ServicePort],
    target_type: TargetType,
) -> Result<String, String> {
    let Some(given) = given else {
        return Ok("traffic-port".into());
    };
    if given == "traffic-port" || given.parse::<u16>().is_ok() {
        return Ok(given.to_string());
    }
    let Some(port) = ports.iter().find(|p| p.name.as_deref() == Some(given)) else {
        return Err(format!("the Service has no port named {given:?}"));
    };
    match target_type {
        TargetType::Instance => port
            .node_port
            .map(|p| p.to_string())
            .ok_or_else(|| format!("Service port {given:?} has no nodePort")),
        TargetType::Ip => match &port.target_port {
            Some(IntOrString::Int(p)) => Ok(p.to_string()),
            None => Ok(port.port.to_string()),
            Some(IntOrString::String(name)) => Err(format!(
                "Service port {given:?} targets the named container port {name:?}, which ip targets cannot resolve; name a port with a numeric targetPort, or give the number"
            )),
        },
    }
}
