//! The Ingress → model translation: one pure function, [`build`], from a [`ClusterSnapshot`]
//! to the provider-neutral [`DesiredState`] plus a diagnostic for everything it rejected or
//! degraded. No I/O happens here.
//!
//! Failure containment is the point of the structure: an Ingress is validated on its own
//! ([`ingress_member`]) before it joins a group, so a broken member is left out with an
//! Error diagnostic and the rest of its group is still built; an unresolvable backend turns
//! only its own route into a 503; a bad Secret drops only its own certificate.

pub mod alb_actions;
pub mod alb_protection;
pub mod annotation_registry;
pub mod annotations;
mod auth_secrets;
mod canary;
pub(crate) mod class_selection;
mod ingress_member;
pub mod last_known_good;
mod listener_rules;
mod passthrough;
pub mod rule_order;
mod target_groups;
pub mod tls_secrets;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::IngressBackend;
use tollgate_contract::{
    Action, Certificate, Conditions, DesiredState, Diagnostic, FixedResponse, HostMatch,
    IpAddressType, Listener, ListenerProtocol, LoadBalancer, Network, ObjectKind, PathKind, Reason,
    Scheme, Severity, TargetType,
};

pub use ingress_member::{parse_host, parse_path};

pub use annotation_registry::ProviderKind;
use class_selection::ClassSelector;
use ingress_member::{read_member, sort_by_precedence, Member};
use listener_rules::{ResolvedMember, RulesCache};
use target_groups::{BackendIndex, TargetGroupSet};
use tls_secrets::SecretIndex;

use crate::class_params::TollgateClassParamsSpec;
use crate::ClusterSnapshot;
use smallvec::SmallVec;

/// The builder's caches and indexes are keyed by allocations and object names and looked up
/// for every object on every build: a fast hash (still randomly keyed) is most of their cost.
pub(crate) type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, ahash::RandomState>;

/// The controller name Tollgate's IngressClasses carry in `spec.controller`.
pub const CONTROLLER_NAME: &str = "tollgate.io/ingress-controller";

/// How Ingresses are gathered into load balancers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// One load balancer per `alb.ingress.kubernetes.io/group.name`; an Ingress without one
    /// is its own group (the AWS Load Balancer Controller's behaviour).
    ByIngressGroup,
    /// Every claimed Ingress in one load balancer with this id (an in-cluster proxy serves
    /// them all on the same ports, as ingress-nginx does).
    Single(String),
}

/// What the builder needs besides the cluster objects.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// IngressClasses whose `spec.controller` equals this are ours.
    pub controller_name: String,
    /// Claim Ingresses of this class name even when no IngressClass object exists.
    pub ingress_class: Option<String>,
    /// Claim Ingresses that name no class even without a default IngressClass.
    pub watch_ingress_without_class: bool,
    pub grouping: Grouping,
    /// Target type when no annotation sets one.
    pub default_target_type: TargetType,
    /// The provider the model is for: what it honours decides which annotations are
    /// refused or warned about (`annotation_registry`).
    pub provider: ProviderKind,
    /// ingress-nginx's defaults where they differ from ALB's (`--ingress-nginx-defaults`;
    /// a class's `TollgateClassParams.defaults` decides for its Ingresses).
    pub ingress_nginx_defaults: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            controller_name: CONTROLLER_NAME.into(),
            ingress_class: Some("tollgate".into()),
            watch_ingress_without_class: false,
            grouping: Grouping::ByIngressGroup,
            default_target_type: TargetType::Ip,
            provider: ProviderKind::Aws,
            ingress_nginx_defaults: false,
        }
    }
}

/// The model and what was said about the objects it came from.
#[derive(Debug, Clone, Default)]
pub struct BuildOutput {
    pub model: DesiredState,
    /// Sorted and de-duplicated.
    pub diagnostics: Vec<Diagnostic>,
    /// Load balancers a provider must leave as they are: a member turned invalid and no
    /// valid version of it is known (see `last_known_good`). Empty from the pure [`build`].
    pub held_load_balancers: BTreeSet<String>,
}

impl BuildOutput {
    /// Whether any object, or part of one, was rejected.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// The id of the load balancer an Ingress belongs to by its own settings (annotations and
/// class parameters), whether or not it is valid: used to find the load balancer a deleted
/// Ingress was part of.
pub fn load_balancer_id(
    snapshot: &ClusterSnapshot,
    opts: &BuildOptions,
    ing: &Arc<k8s_openapi::api::networking::v1::Ingress>,
) -> String {
    let classes = ClassSelector::new(&snapshot.ingress_classes, opts);
    let group = match read_member(ing, opts.provider, &mut Vec::new()) {
        Ok(mut m) => {
            if let Some(params) = classes.params_for(ing, &snapshot.class_params) {
                params.apply_to(&mut m.settings);
            }
            m.settings.group_name
        }
        Err(_) => {
            let name = format!("{}group.name", annotations::ALB);
            annotations::note_read(&name);
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(&name))
                .map(|g| g.trim().to_string())
        }
    };
    match (&opts.grouping, group) {
        (Grouping::Single(id), _) => id.clone(),
        (Grouping::ByIngressGroup, Some(g)) => format!("group/{g}"),
        (Grouping::ByIngressGroup, None) => format!(
            "ingress/{}/{}",
            ing.metadata.namespace.as_deref().unwrap_or("default"),
            ing.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// What a run loop keeps between builds so that a build redoes only what changed: results of
/// pure functions, keyed by the objects they read (by allocation, which sources share for
/// unchanged objects). [`build_with`] gives exactly what [`build`] gives.
#[derive(Debug, Default)]
pub struct BuildCache {
    secrets: tls_secrets::SecretVerdicts,
    /// Main Ingresses with their canaries attached.
    canaries: canary::CanaryCache,
    /// Each claimed Ingress as read, by its allocation (the entry holds the `Arc`, so the
    /// address cannot be reused while it is kept).
    members: FastMap<usize, ReadMember>,
    /// Each load balancer's resolved members and host rules (`listener_rules`).
    rules: FastMap<String, RulesCache>,
    /// What the cached results were computed for; other options start afresh.
    made_for: Option<(ProviderKind, TargetType, Grouping)>,
    /// Counts builds; an entry not used by the latest is dropped.
    round: u64,
    /// The Services of the last build (held, so that comparing allocations is sound): when
    /// they are the very same, every cached resolution still holds without checking it.
    services: Vec<Arc<k8s_openapi::api::core::v1::Service>>,
}

/// A Secret an Ingress's read used: its namespace and name, and the object (if it existed).
type SecretUsed = (
    (String, String),
    Option<Arc<k8s_openapi::api::core::v1::Secret>>,
);

/// One Ingress as `read_member` read it, with what it was read for.
#[derive(Debug)]
struct ReadMember {
    /// Held so that the allocation the entry is keyed by stays this Ingress's.
    _ingress: Arc<k8s_openapi::api::networking::v1::Ingress>,
    provider: ProviderKind,
    nginx_defaults: bool,
    params: Option<TollgateClassParamsSpec>,
    read: Result<Arc<Member>, Vec<Diagnostic>>,
    warnings: Vec<Diagnostic>,
    /// The Secret the read used (`auth-secret`) and the object it was, or `None` if it was
    /// missing: the read holds only while the snapshot has that very object.
    secret_used: Vec<SecretUsed>,
    round: u64,
}

impl ReadMember {
    fn secret_unchanged(&self, secrets: &SecretIndex<'_>) -> bool {
        self.secret_used
            .iter()
            .all(|((ns, name), held)| match (secrets.get(ns, name), held) {
                (Some(now), Some(then)) => Arc::ptr_eq(now, then),
                (None, None) => true,
                _ => false,
            })
    }
}

/// Namespaces' labels, for class parameters' `namespaceSelector`.
pub(crate) struct NamespaceLabels<'a>(HashMap<&'a str, &'a BTreeMap<String, String>>);

impl<'a> NamespaceLabels<'a> {
    pub(crate) fn new(namespaces: &'a [Arc<k8s_openapi::api::core::v1::Namespace>]) -> Self {
        NamespaceLabels(
            namespaces
                .iter()
                .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref()?)))
                .collect(),
        )
    }

    /// Whether `params` (an Ingress's class parameters, if any) let an Ingress of namespace
    /// `ns` use the class: no `namespaceSelector`, or one that selects `ns`.
    pub(crate) fn admit(&self, ns: &str, params: Option<&TollgateClassParamsSpec>) -> bool {
        params
            .and_then(|p| p.namespace_selector.as_ref())
            .is_none_or(|sel| self.selects(ns, sel))
    }

    /// Whether namespace `ns` is selected. A namespace not in the snapshot (manifests without
    /// it) has the one label the API server gives every namespace.
    fn selects(
        &self,
        ns: &str,
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> bool {
        match self.0.get(ns) {
            Some(labels) => crate::class_params::selects(selector, labels),
            None => {
                let labels =
                    BTreeMap::from([("kubernetes.io/metadata.name".to_string(), ns.to_string())]);
                crate::class_params::selects(selector, &labels)
            }
        }
    }
}

/// Another controller's class parameters: a Warning for each field not honoured; an Error
/// (the Ingress is not served) for a protective one.
fn foreign_params_diagnostics(
    f: &crate::class_params::ForeignParams,
    ing: &tollgate_contract::ObjectRef,
    warnings: &mut Vec<Diagnostic>,
) -> Result<(), Vec<Diagnostic>> {
    let diag = |severity, reason, message: String| {
        Diagnostic::new(
            severity,
            ObjectKind::Ingress,
            ing.namespace.clone(),
            ing.name.clone(),
            reason,
            message,
        )
    };
    if !f.refused.is_empty() {
        return Err(vec![diag(
            Severity::Error,
            Reason::AnnotationUnsupported,
            format!(
                "its class's {} sets {}, which Tollgate does not honour; the Ingress is not served rather than served without that protection",
                f.what,
                f.refused.join(", ")
            ),
        )]);
    }
    for field in &f.not_honoured {
        warnings.push(diag(
            Severity::Warning,
            Reason::AnnotationIgnored,
            format!("its class's {}: {field} is not honoured", f.what),
        ));
    }
    Ok(())
}

/// Builds the desired state from a snapshot of cluster objects.
pub fn build(snapshot: &ClusterSnapshot, opts: &BuildOptions) -> BuildOutput {
    build_with(snapshot, opts, &mut BuildCache::default())
}

/// [`build`], reusing what `cache` holds from earlier builds.
pub fn build_with(
    snapshot: &ClusterSnapshot,
    opts: &BuildOptions,
    cache: &mut BuildCache,
) -> BuildOutput {
    let mut diags = Vec::new();
    let classes = ClassSelector::new(&snapshot.ingress_classes, opts);
    let mut backends = BackendIndex::new(snapshot, opts.provider, &mut diags);
    // Every resolution kept in the cache was checked against (or made from) the last
    // build's Services: if those are the same allocations, none needs checking again.
    let same_services = cache.services.len() == snapshot.services.len()
        && cache
            .services
            .iter()
            .zip(&snapshot.services)
            .all(|(a, b)| Arc::ptr_eq(a, b));
    if same_services {
        backends.services_unchanged_since_last_build();
    } else {
        cache.services = snapshot.services.clone();
    }
    let mut secrets = SecretIndex::new(&snapshot.secrets, &mut cache.secrets);
    let namespaces = NamespaceLabels::new(&snapshot.namespaces);

    // Each claimed Ingress read (with its class parameters applied) or taken from the cache:
    // reading depends on nothing but the Ingress, its parameters and the provider.
    cache.round += 1;
    let round = cache.round;
    let mut claimed: Vec<usize> = Vec::new();
    for ing in &snapshot.ingresses {
        if ing.metadata.deletion_timestamp.is_some() || !classes.claims(ing, &mut diags) {
            continue;
        }
        let params = classes.params_for(ing, &snapshot.class_params);
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let key = Arc::as_ptr(ing) as usize;
        if !namespaces.admit(ns, params) {
            // An error of the Ingress, not "not ours": one that was served keeps being
            // served as it last was (last-known-good), as the AWS Load Balancer
            // Controller keeps the load balancer of a member it can no longer load.
            let diag = Diagnostic::new(
                Severity::Error,
                ObjectKind::Ingress,
                ns,
                ing.metadata.name.clone().unwrap_or_default(),
                Reason::IngressClassAmbiguous,
                format!(
                    "namespace {ns} is not selected by the namespaceSelector of its class's {}; the Ingress is not served",
                    params
                        .and_then(|p| p.foreign.as_ref())
                        .map_or("TollgateClassParams".to_string(), |f| f.what.clone())
                ),
            );
            cache.members.insert(
                key,
                ReadMember {
                    _ingress: ing.clone(),
                    provider: opts.provider,
                    nginx_defaults: opts.ingress_nginx_defaults,
                    // Read afresh once the namespace is selected again.
                    params: None,
                    read: Err(vec![diag]),
                    warnings: Vec::new(),
                    secret_used: Vec::new(),
                    round,
                },
            );
            claimed.push(key);
            continue;
        }
        let fresh = match cache.members.get_mut(&key) {
            Some(e)
                if e.provider == opts.provider
                    && e.nginx_defaults == opts.ingress_nginx_defaults
                    && e.params.as_ref() == params
                    && e.secret_unchanged(&secrets) =>
            {
                e.round = round;
                false
            }
            _ => true,
        };
        if fresh {
            let mut warnings = Vec::new();
            let mut secret_used = Vec::new();
            let read = read_member(ing, opts.provider, &mut warnings).and_then(|mut m| {
                if let Some(p) = params {
                    let mut problems = p.problems();
                    let asks_waf = [&p.wafv2_acl_arn, &p.wafv2_acl_name]
                        .iter()
                        .any(|v| v.as_deref().is_some_and(|v| v != "none"));
                    if asks_waf && opts.provider == ProviderKind::Proxy {
                        problems.push(
                            "a WAFv2 web ACL, which the proxy provider does not implement".into(),
                        );
                    }
                    if !problems.is_empty() {
                        return Err(vec![ingress_diag(
                            &m,
                            Severity::Error,
                            Reason::AnnotationInvalid,
                            format!(
                                "its IngressClass's parameters cannot be applied: {}; the Ingress is not served without them",
                                problems.join("; ")
                            ),
                        )]);
                    }
                    p.apply_to(&mut m.settings);
                    if let Some(f) = &p.foreign {
                        foreign_params_diagnostics(f, &m.obj, &mut warnings)?;
                    }
                }
                let nginx_defaults = params
                    .and_then(|p| p.defaults)
                    .map(|d| d == crate::class_params::ClassDefaults::IngressNginx)
                    .unwrap_or(opts.ingress_nginx_defaults);
                if nginx_defaults {
                    let has_tls = !m.tls.is_empty();
                    annotations::apply_ingress_nginx_defaults(
                        &mut m.settings,
                        ing.metadata.annotations.as_ref(),
                        has_tls,
                    );
                }
                // Secrets named by annotations are read here, not with the Ingress, and
                // recorded: a change to one reads the Ingress again.
                let mut read_secret = |ns: &str, name: &str| {
                    let secret = secrets.get(ns, name);
                    secret_used.push(((ns.to_string(), name.to_string()), secret.cloned()));
                    secret.map(|s| s.as_ref())
                };
                let ingress = (m.obj.namespace.as_str(), m.obj.name.as_str());
                if let Some(r) = &m.settings.basic_auth_ref {
                    let (ns, name) = auth_secrets::secret_key(r, ingress.0);
                    let secret = read_secret(ns, name);
                    let users = auth_secrets::basic_auth(r, ingress, secret, &mut warnings)
                        .map_err(|e| vec![e])?;
                    m.settings.basic_auth = Some(users);
                }
                if let Some(r) = &m.settings.idp_auth_ref {
                    let secret = alb_protection::secret_key(r, ingress.0)
                        .and_then(|(ns, name)| read_secret(ns, name));
                    m.settings.idp_auth =
                        Some(alb_protection::resolve(r, ingress, secret).map_err(|e| vec![e])?);
                    let ports = member_ports(&m, &opts.grouping);
                    alb_protection::check_listeners(
                        &ports,
                        m.settings.ssl_redirect_port.is_some(),
                        ingress,
                    )
                    .map_err(|e| vec![e])?;
                }
                if !m.settings.mutual_authentication.is_empty() {
                    let ports = member_ports(&m, &opts.grouping);
                    alb_protection::check_mutual_authentication(
                        &m.settings.mutual_authentication,
                        &ports,
                        ingress,
                        &mut warnings,
                    )
                    .map_err(|e| vec![e])?;
                }
                if let Some(r) = &m.settings.client_cert_ref {
                    let secret = read_secret(r.namespace.as_deref().unwrap_or(ingress.0), &r.name);
                    let ca = auth_secrets::client_cert(r, ingress, secret).map_err(|e| vec![e])?;
                    m.settings.client_cert = Some(ca);
                }
                // Backend TLS is the proxy's alone (the registry speaks for aws).
                if let (Some(r), ProviderKind::Proxy) = (&m.settings.proxy_ssl_ref, opts.provider) {
                    let secret = read_secret(r.namespace.as_deref().unwrap_or(ingress.0), &r.name);
                    let tls = auth_secrets::upstream_tls(r, ingress, secret, &mut warnings)
                        .map_err(|e| vec![e])?;
                    m.settings.backend.upstream_tls = tls;
                }
                Ok(Arc::new(m))
            });
            cache.members.insert(
                key,
                ReadMember {
                    _ingress: ing.clone(),
                    provider: opts.provider,
                    nginx_defaults: opts.ingress_nginx_defaults,
                    params: params.cloned(),
                    read,
                    warnings,
                    secret_used,
                    round,
                },
            );
        }
        claimed.push(key);
    }
    cache.members.retain(|_, e| e.round == round);

    let mut valid: Vec<Arc<Member>> = Vec::with_capacity(claimed.len());
    for key in &claimed {
        let Some(e) = cache.members.get(key) else {
            continue;
        };
        diags.extend(e.warnings.iter().cloned());
        match &e.read {
            Ok(m) => valid.push(m.clone()),
            Err(errors) => diags.extend(errors.iter().cloned()),
        }
    }
    let valid = canary::attach(valid, &mut cache.canaries, round, &mut diags);
    let mut groups: BTreeMap<String, Vec<&Arc<Member>>> = BTreeMap::new();
    for m in &valid {
        let id = match (&opts.grouping, &m.settings.group_name) {
            (Grouping::Single(id), _) => id.clone(),
            (Grouping::ByIngressGroup, Some(g)) => format!("group/{g}"),
            (Grouping::ByIngressGroup, None) => {
                format!("ingress/{}/{}", m.obj.namespace, m.obj.name)
            }
        };
        groups.entry(id).or_default().push(m);
    }

    let made_for = (
        opts.provider,
        opts.default_target_type,
        opts.grouping.clone(),
    );
    if cache.made_for.as_ref() != Some(&made_for) {
        cache.rules.clear();
        cache.made_for = Some(made_for);
    }
    let mut load_balancers = Vec::with_capacity(groups.len());
    for (id, mut members) in groups {
        sort_by_precedence(&mut members);
        let (protection, mutual_authentication) =
            alb_protection::settle_group(&mut members, &id, &mut diags);
        let rules = cache.rules.entry(id.clone()).or_default();
        rules.round = round;
        load_balancers.push(build_load_balancer(
            id,
            &members,
            &backends,
            &mut secrets,
            opts,
            rules,
            &mut diags,
        ));
        if let Some(lb) = load_balancers.last_mut() {
            lb.protection = protection;
            for l in lb
                .listeners
                .iter_mut()
                .filter(|l| l.protocol == ListenerProtocol::Https)
            {
                l.mutual_authentication = mutual_authentication.get(&l.port).cloned();
            }
        }
        rules.prune();
    }
    cache.rules.retain(|_, r| r.round == round);
    diags.sort();
    diags.dedup();
    BuildOutput {
        model: DesiredState { load_balancers },
        diagnostics: diags,
        held_load_balancers: BTreeSet::new(),
    }
}

fn ingress_diag(m: &Member, severity: Severity, reason: Reason, message: String) -> Diagnostic {
    Diagnostic::new(
        severity,
        ObjectKind::Ingress,
        m.obj.namespace.clone(),
        m.obj.name.clone(),
        reason,
        message,
    )
}

/// A listener being assembled: which members attach to it.
struct ListenerDraft {
    protocol: ListenerProtocol,
    members: Vec<usize>,
}

/// The (protocol, port) listeners one Ingress asks for: one or two, kept inline.
pub(crate) type MemberPorts = SmallVec<[(ListenerProtocol, u16); 2]>;

/// The ports an Ingress listens on: `listen-ports`, else HTTP:80 and, when it has TLS (or
/// always, for the in-cluster proxy, which like ingress-nginx serves every host on both
/// ports), HTTPS:443.
fn member_ports(m: &Member, grouping: &Grouping) -> MemberPorts {
    match &m.settings.listen_ports {
        Some(p) => p.iter().copied().collect(),
        None => {
            let mut p = smallvec::smallvec![(ListenerProtocol::Http, 80)];
            let every_host_on_https = matches!(grouping, Grouping::Single(_));
            if every_host_on_https || !m.tls.is_empty() || !m.settings.certificate_arns.is_empty() {
                p.push((ListenerProtocol::Https, 443));
            }
            p
        }
    }
}

fn build_load_balancer(
    id: String,
    members: &[&Arc<Member>],
    backends: &BackendIndex<'_>,
    secrets: &mut SecretIndex<'_>,
    opts: &BuildOptions,
    cache: &mut RulesCache,
    diags: &mut Vec<Diagnostic>,
) -> LoadBalancer {
    // Group-wide settings: the member with precedence decides; a disagreeing member is told.
    let mut scheme: Option<(Scheme, usize)> = None;
    let mut subnets: Option<(Vec<String>, usize)> = None;
    let mut security_groups: Option<(Vec<String>, usize)> = None;
    let mut inbound_cidrs: Option<(Vec<String>, usize)> = None;
    let mut inbound_prefix_lists: Option<(Vec<String>, usize)> = None;
    let mut manage_backend_rules: Option<(bool, usize)> = None;
    let mut ip_address_type: Option<(IpAddressType, usize)> = None;
    let mut ssl_policy: Option<(String, usize)> = None;
    let mut name: Option<(String, usize)> = None;
    let mut attributes = BTreeMap::new();
    let mut tags = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        settle(&mut scheme, m.settings.scheme, i, members, "scheme", diags);
        settle(
            &mut subnets,
            m.settings.subnets.clone(),
            i,
            members,
            "subnets",
            diags,
        );
        settle(
            &mut security_groups,
            m.settings.security_groups.clone(),
            i,
            members,
            "security-groups",
            diags,
        );
        settle(
            &mut inbound_cidrs,
            m.settings.inbound_cidrs.clone(),
            i,
            members,
            "inbound-cidrs",
            diags,
        );
        settle(
            &mut inbound_prefix_lists,
            m.settings.inbound_prefix_lists.clone(),
            i,
            members,
            "security-group-prefix-lists",
            diags,
        );
        settle(
            &mut manage_backend_rules,
            m.settings.manage_backend_rules,
            i,
            members,
            "manage-backend-security-group-rules",
            diags,
        );
        settle(
            &mut ip_address_type,
            m.settings.ip_address_type,
            i,
            members,
            "ip-address-type",
            diags,
        );
        settle(
            &mut ssl_policy,
            m.settings.ssl_policy.clone(),
            i,
            members,
            "ssl-policy",
            diags,
        );
        settle(
            &mut name,
            m.settings.load_balancer_name.clone(),
            i,
            members,
            "load-balancer-name",
            diags,
        );
        for (k, v) in &m.settings.load_balancer_attributes {
            settle_entry(
                &mut attributes,
                k,
                v,
                i,
                members,
                "load-balancer-attributes",
                diags,
            );
        }
        for (k, v) in &m.settings.tags {
            settle_entry(&mut tags, k, v, i, members, "tags", diags);
        }
    }
    let attributes: BTreeMap<String, String> =
        attributes.into_iter().map(|(k, (v, _))| (k, v)).collect();
    // Listener attributes: per listener and key, the member with precedence decides.
    type Owned = BTreeMap<String, (String, usize)>;
    let mut owned: BTreeMap<(ListenerProtocol, u16), Owned> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for (listener, attrs) in &m.settings.listener_attributes {
            let taken = owned.entry(*listener).or_default();
            for (k, v) in attrs {
                let what = format!("listener-attributes.{}-{}", listener.0, listener.1);
                settle_entry(taken, k, v, i, members, &what, diags);
            }
        }
    }
    let mut listener_attributes: BTreeMap<(ListenerProtocol, u16), BTreeMap<String, String>> =
        owned
            .into_iter()
            .map(|(l, a)| (l, a.into_iter().map(|(k, (v, _))| (k, v)).collect()))
            .collect();
    let tags: BTreeMap<String, String> = tags.into_iter().map(|(k, (v, _))| (k, v)).collect();

    // Listeners: one per port; a member asking for another protocol on a taken port is told.
    let mut drafts: BTreeMap<u16, ListenerDraft> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for (proto, port) in member_ports(m, &opts.grouping) {
            let d = drafts.entry(port).or_insert(ListenerDraft {
                protocol: proto,
                members: Vec::new(),
            });
            if d.protocol == proto {
                d.members.push(i);
            } else {
                diags.push(ingress_diag(
                    m,
                    Severity::Warning,
                    Reason::GroupSettingConflict,
                    format!(
                        "port {port} is already {} in load balancer {id}; this Ingress's routes are not served on it",
                        d.protocol
                    ),
                ));
            }
        }
    }

    // Every member's backends resolved (reused while the member and its Services are the
    // same objects); target groups filled with today's targets.
    let resolved: Vec<Arc<ResolvedMember>> = members
        .iter()
        .map(|m| cache.resolved(m, || member_ports(m, &opts.grouping), backends, opts))
        .collect();
    let mut tgs = TargetGroupSet::new(backends);
    for rm in &resolved {
        diags.extend(rm.diags.iter().cloned());
        for spec in &rm.target_groups {
            tgs.add(spec);
        }
    }

    let mut listeners = Vec::with_capacity(drafts.len());
    for (port, draft) in drafts {
        let mut default_owner: Option<usize> = None;
        for &mi in &draft.members {
            if resolved[mi].default_action.is_none() {
                continue;
            }
            match default_owner {
                None => default_owner = Some(mi),
                Some(owner) if owner != mi => diags.push(ingress_diag(
                    members[mi],
                    Severity::Warning,
                    Reason::DefaultBackendConflict,
                    format!(
                        "spec.defaultBackend is ignored: Ingress {} has precedence in load balancer {id}",
                        members[owner].obj
                    ),
                )),
                Some(_) => {}
            }
        }
        let default = match default_owner.and_then(|mi| {
            resolved[mi]
                .default_action
                .as_ref()
                .map(|a| rule_order::ListenerDefault {
                    action: listener_rules::on_listener(members[mi], draft.protocol, a),
                    authenticate: listener_rules::authenticate_on(members[mi], draft.protocol),
                })
        }) {
            Some(d) => d,
            None => rule_order::ListenerDefault {
                action: Action::FixedResponse(FixedResponse::not_found()),
                authenticate: None,
            },
        };
        let attached: Vec<&Arc<ResolvedMember>> =
            draft.members.iter().map(|&mi| &resolved[mi]).collect();
        let rules = listener_rules::listener_rules(
            cache,
            port,
            draft.protocol,
            &attached,
            &default,
            opts.provider == ProviderKind::Proxy,
            diags,
        );

        let certificates = if draft.protocol == ListenerProtocol::Https {
            let discover_rule_hosts = !matches!(opts.grouping, Grouping::Single(_));
            listener_certificates(&draft.members, members, secrets, discover_rule_hosts, diags)
        } else {
            Vec::new()
        };
        listeners.push(Listener {
            port,
            protocol: draft.protocol,
            certificates,
            ssl_policy: if draft.protocol == ListenerProtocol::Https {
                ssl_policy.as_ref().map(|(p, _)| p.clone())
            } else {
                None
            },
            rules,
            default_authenticate: default.authenticate,
            default_action: default.action,
            attributes: listener_attributes
                .remove(&(draft.protocol, port))
                .unwrap_or_default(),
            // Settled per group once its members are chosen (`alb_protection::settle_group`).
            mutual_authentication: None,
        });
    }

    // Attributes for a listener the load balancer does not have: said, not dropped.
    for ((protocol, port), _) in listener_attributes {
        for m in members.iter().filter(|m| {
            m.settings
                .listener_attributes
                .contains_key(&(protocol, port))
        }) {
            diags.push(ingress_diag(
                m,
                Severity::Warning,
                Reason::AnnotationIgnored,
                format!("alb.ingress.kubernetes.io/listener-attributes.{protocol}-{port}: load balancer {id} has no {protocol} listener on port {port}; the attributes do nothing"),
            ));
        }
    }
    let ingresses = cache.ingresses(members);
    let scheme = scheme.map(|(s, _)| s).unwrap_or_default();
    if let Some((IpAddressType::DualstackWithoutPublicIpv4, i)) = ip_address_type {
        if scheme == Scheme::Internal {
            // ALB accepts it only for internet-facing load balancers; an internal one has
            // no public IPv4 anyway, so dualstack is what was asked for.
            diags.push(ingress_diag(
                members[i],
                Severity::Warning,
                Reason::AnnotationInvalid,
                format!("ip-address-type dualstack-without-public-ipv4 is only for internet-facing load balancers; {id} is internal and gets dualstack"),
            ));
            ip_address_type = Some((IpAddressType::Dualstack, i));
        }
    }
    let tls_passthrough = passthrough::tls_passthrough(members, &listeners, opts, diags);
    LoadBalancer {
        id,
        ingresses,
        scheme,
        network: Network {
            subnets: subnets.map(|(v, _)| v).unwrap_or_default(),
            security_groups: security_groups.map(|(v, _)| v).unwrap_or_default(),
            inbound_cidrs: inbound_cidrs.map(|(v, _)| v).unwrap_or_default(),
            inbound_prefix_lists: inbound_prefix_lists.map(|(v, _)| v).unwrap_or_default(),
            manage_backend_security_group_rules: manage_backend_rules.map(|(v, _)| v),
            ip_address_type: ip_address_type.map(|(v, _)| v).unwrap_or_default(),
        },
        name: name.map(|(n, _)| n),
        protection: Default::default(),
        attributes,
        tags,
        listeners,
        target_groups: tgs.into_sorted(),
        tls_passthrough,
    }
}

/// Whether `action` on this listener redirects a request of `route` to the same URL: every
/// part the redirect sets equals what the request already has (host and path as far as the
/// route fixes them). Such a rule would loop; the AWS Load Balancer Controller's rule
/// optimizer drops it (`pkg/ingress/rule_optimizer.go`), which is what makes the legacy
/// `actions.ssl-redirect` rule on both listeners work.
fn redirects_to_itself(
    action: &Action,
    port: u16,
    protocol: ListenerProtocol,
    route: &ingress_member::MemberRoute,
) -> bool {
    let Action::Redirect(r) = action else {
        return false;
    };
    let same_host = match (&r.host, &route.host) {
        (None, _) => true,
        (Some(h), Some(HostMatch::Exact(rh))) => h.eq_ignore_ascii_case(rh),
        (Some(_), _) => false,
    };
    let same_path = match &r.path {
        None => true,
        Some(p) => route.path.kind == PathKind::Exact && *p == route.path.path,
    };
    let same_port = r.port.is_none_or(|p| p == port);
    let listener_protocol = match protocol {
        ListenerProtocol::Http => "HTTP",
        ListenerProtocol::Https => "HTTPS",
    };
    let same_protocol = r
        .protocol
        .as_deref()
        .is_none_or(|p| p.eq_ignore_ascii_case(listener_protocol));
    same_host && same_path && same_port && same_protocol && r.query.is_none()
}

/// The certificates of an HTTPS listener: `certificate-arn` ARNs; Secrets named in `tls`;
/// and, for a member with no `certificate-arn`, a `Discover` per TLS host that names no
/// Secret (ingress-nginx serves those with its default certificate, the AWS Load Balancer
/// Controller looks them up in ACM) — or per rule host when the member has no `tls` at all
/// and `discover_rule_hosts` (a cloud load balancer, as the AWS controller does).
/// One route as its Ingress's source ranges make it (ingress-nginx's
/// `allowlist-source-range`/`whitelist-source-range` and `denylist-source-range`, 403 for
/// the clients refused): the deny-list's sources get 403, then the allow-list's reach the
/// route, then everyone else gets 403 if there is an allow-list — ingress-nginx's
/// `deny …; allow …; deny all;` (its e2e test `test/e2e/annotations/ipdenylist.go`, "when
/// whitelist is set"). At one host and path a rule with conditions is matched before the one
/// without, and rules with as many conditions keep this order (`rule_order` sorts stably),
/// so both providers, which already match `source_ips`, enforce it as written.
fn source_ranged(
    settings: &annotations::IngressSettings,
    extra: Conditions,
    action: &Action,
) -> Vec<(Conditions, Action)> {
    let limited = |cidrs: &[String]| Conditions {
        source_ips: cidrs.to_vec(),
        ..extra.clone()
    };
    let forbidden = || Action::FixedResponse(FixedResponse::forbidden());
    let mut out = Vec::new();
    if let Some(deny) = &settings.deny_source_ranges {
        out.push((limited(deny), forbidden()));
    }
    match &settings.allow_source_ranges {
        Some(allow) => {
            out.push((limited(allow), action.clone()));
            out.push((extra, forbidden()));
        }
        None => out.push((extra, action.clone())),
    }
    out
}

/// The `conditions.<name>` a path's backend name picks up (empty when there are none).
fn extra_conditions(m: &Member, backend: &IngressBackend) -> Conditions {
    backend
        .service
        .as_ref()
        .and_then(|s| m.settings.conditions.get(&s.name))
        .map(|c| c.extra.clone())
        .unwrap_or_default()
}

fn listener_certificates(
    attached: &[usize],
    members: &[&Arc<Member>],
    secrets: &mut SecretIndex<'_>,
    discover_rule_hosts: bool,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Certificate> {
    let mut certs = BTreeSet::new();
    for &mi in attached {
        let m = &members[mi];
        for arn in &m.settings.certificate_arns {
            certs.insert(Certificate::Arn { arn: arn.clone() });
        }
        let discover = m.settings.certificate_arns.is_empty();
        if discover && discover_rule_hosts && m.tls.is_empty() {
            for host in m.rule_hosts() {
                certs.insert(Certificate::Discover { host });
            }
        }
        for (ti, t) in m.tls.iter().enumerate() {
            let Some(name) = t.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                if discover {
                    for host in t.hosts.iter().flatten().filter(|h| !h.is_empty()) {
                        certs.insert(Certificate::Discover { host: host.clone() });
                    }
                }
                continue;
            };
            match secrets.material(m.namespace(), name) {
                Ok(material) => {
                    let mut hosts: Vec<String> = t.hosts.clone().unwrap_or_default();
                    hosts.sort();
                    certs.insert(Certificate::Secret {
                        secret: tollgate_contract::ObjectRef::new(m.namespace(), name),
                        hosts,
                        material,
                    });
                }
                Err(None) => diags.push(ingress_diag(
                    m,
                    Severity::Warning,
                    Reason::SecretNotFound,
                    format!("spec.tls[{ti}]: Secret {}/{name} not found; its hosts get the default certificate", m.namespace()),
                )),
                Err(Some(why)) => diags.push(ingress_diag(
                    m,
                    Severity::Warning,
                    Reason::SecretInvalid,
                    format!("spec.tls[{ti}]: Secret {}/{name} is not usable: {why}; its hosts get the default certificate", m.namespace()),
                )),
            }
        }
    }
    certs.into_iter().collect()
}

/// Keeps the first value set for a group-wide setting; reports members that disagree.
fn settle<T: PartialEq + std::fmt::Debug>(
    slot: &mut Option<(T, usize)>,
    value: Option<T>,
    i: usize,
    members: &[&Arc<Member>],
    what: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(v) = value else { return };
    match slot {
        None => *slot = Some((v, i)),
        Some((cur, owner)) if *cur != v => diags.push(ingress_diag(
            members[i],
            Severity::Warning,
            Reason::GroupSettingConflict,
            format!(
                "{what} {v:?} is ignored: Ingress {} set {cur:?} first",
                members[*owner].obj
            ),
        )),
        Some(_) => {}
    }
}

fn settle_entry(
    map: &mut BTreeMap<String, (String, usize)>,
    k: &str,
    v: &str,
    i: usize,
    members: &[&Arc<Member>],
    what: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let mut slot = map.remove(k);
    settle(
        &mut slot,
        Some(v.to_string()),
        i,
        members,
        &format!("{what} {k}"),
        diags,
    );
    if let Some(s) = slot {
        map.insert(k.to_string(), s);
    }
}
