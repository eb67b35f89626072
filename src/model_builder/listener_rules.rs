//! A load balancer's rules, recomputed only where a change lands (issue 16).
//!
//! Three layers, each a pure function of its inputs, each kept between builds in
//! [`RulesCache`] and reused while its inputs are the same objects:
//! 1. [`ResolvedMember`]: an Ingress's backends resolved to actions and target groups (without
//!    targets). Inputs: the Ingress as read (by allocation) and the Services it looked up.
//! 2. [`Claims`]: what that Ingress asks to serve on one listener, host by host, each path
//!    with its conflict key and the routes it becomes. Inputs: the resolved member and the
//!    listener's port and protocol.
//! 3. A host's rules: the claims of every Ingress on that host, conflicts settled by
//!    precedence, ordered, fenced (`rule_order::host_rules`). Inputs: the resolved members
//!    claiming the host, in precedence order, whether it needs a fence, the listener's
//!    default action.
//!
//! The listener's rule list is the hosts' chunks in order (exact hosts, wildcards, host-less),
//! so a change to one Ingress re-orders only its hosts, and the proxy recompiles only those
//! chunks. Target groups are filled with targets on every build, from the specs the resolved
//! members hold: endpoints change without any Ingress changing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::networking::v1::IngressBackend;
use smallvec::SmallVec;
use tollgate_contract::{
    Action, Conditions, Diagnostic, FixedResponse, Forward, HostMatch, ListenerProtocol, ObjectRef,
    PathKind, PathMatch, Reason, Redirect, Rule, Severity, WeightedTargetGroup,
};

use super::alb_actions::{self, AnnotatedAction};
use super::ingress_member::Member;
use super::rule_order::{
    conflict_key, exact_host_fenced, host_rules, ConflictKey, ListenerDefault, Route,
};
use super::target_groups::{BackendIndex, ServiceDep, TargetGroupSpec, Unresolved};
use super::{annotations, extra_conditions, ingress_diag, redirects_to_itself, source_ranged};
use super::{BuildOptions, FastMap};

/// An Ingress's backends resolved against the cluster's Services.
#[derive(Debug)]
pub(crate) struct ResolvedMember {
    pub member: Arc<Member>,
    /// The action of each of `member.routes`, in order.
    pub route_actions: Vec<Action>,
    pub default_action: Option<Action>,
    /// The target groups those actions forward to (each once; shared between the members
    /// that resolve to the same one).
    pub target_groups: Vec<Arc<TargetGroupSpec>>,
    /// For each route with a canary, its (conditions, action) variants (`canary::variants`).
    canary_variants: Vec<Option<Vec<(Conditions, Action)>>>,
    /// What resolution said (a missing Service, a refused one, ...).
    pub diags: Vec<Diagnostic>,
    deps: Vec<ServiceDep>,
    /// Claims per listener (protocol, port), made when first asked for.
    claims: Vec<((ListenerProtocol, u16), OnceLock<Claims>)>,
}

/// One path an Ingress asks to serve on a listener: the index of its route in
/// `Member::routes`, or for app-root's `/` redirect (which quietly yields to a path the
/// Ingress lists) the index of a route on the host. Kept this small because every Ingress
/// has one per path and listener; the route itself is made when its host is recomputed.
#[derive(Debug, Clone, Copy)]
struct Claim {
    route: usize,
    app_root: bool,
}

/// What one Ingress asks to serve on one listener.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// By host (the index of the first route naming it), in the order the Ingress first
    /// names them.
    hosts: Vec<(usize, Vec<Claim>)>,
    diags: Vec<Diagnostic>,
}

/// Resolves a member's backends.
pub(crate) fn resolve_member(
    member: &Arc<Member>,
    ports: &[(ListenerProtocol, u16)],
    index: &BackendIndex<'_>,
    opts: &BuildOptions,
    shared: &mut FastMap<String, Arc<TargetGroupSpec>>,
) -> ResolvedMember {
    let m = member.as_ref();
    let mut r = Resolver {
        index,
        opts,
        shared,
        specs: Vec::new(),
        deps: Vec::new(),
        diags: Vec::new(),
    };
    let route_actions: Vec<Action> = m
        .routes
        .iter()
        .map(|rt| r.action(m, &rt.backend, &rt.path.path))
        .collect();
    let default_action = m.default_backend.as_ref().map(|b| r.action(m, b, "/"));
    let canary_variants = m
        .canaries
        .iter()
        .zip(&m.routes)
        .zip(&route_actions)
        .map(|((c, rt), raw)| {
            let c = c.as_ref()?;
            let group = r.canary_group(m, c)?;
            // ALB cannot match a cookie by name: the AWS provider gets the header and the
            // weight (the registry says so).
            let proxy = opts.provider == super::ProviderKind::Proxy;
            super::canary::variants(c, &group, raw, &extra_conditions(m, &rt.backend), proxy)
        })
        .collect();
    ResolvedMember {
        member: member.clone(),
        canary_variants,
        route_actions,
        default_action,
        target_groups: r.specs,
        diags: r.diags,
        deps: r.deps,
        claims: ports.iter().map(|p| (*p, OnceLock::new())).collect(),
    }
}

impl ResolvedMember {
    /// Whether this resolution still holds for `member` against `index`.
    pub(crate) fn still_valid(&self, member: &Arc<Member>, index: &BackendIndex<'_>) -> bool {
        Arc::ptr_eq(&self.member, member) && index.unchanged(&self.deps)
    }

    /// The member's claims on the listener at `port` with `protocol`.
    pub(crate) fn claims(&self, protocol: ListenerProtocol, port: u16) -> Option<&Claims> {
        let (_, cell) = self.claims.iter().find(|(p, _)| *p == (protocol, port))?;
        Some(cell.get_or_init(|| make_claims(self, protocol, port)))
    }
}

struct Resolver<'r, 'a> {
    index: &'r BackendIndex<'a>,
    opts: &'r BuildOptions,
    shared: &'r mut FastMap<String, Arc<TargetGroupSpec>>,
    specs: Vec<Arc<TargetGroupSpec>>,
    deps: Vec<ServiceDep>,
    diags: Vec<Diagnostic>,
}

impl Resolver<'_, '_> {
    fn target_group(&mut self, m: &Member, backend: &IngressBackend) -> Result<String, Unresolved> {
        self.target_group_in(m.namespace(), backend, &m.settings.backend)
    }

    /// The target group of a route's canary: the canary Ingress's Service (in its namespace),
    /// with the main's backend settings, as nginx proxies the canary from the main's
    /// location. An unresolvable one is reported on the canary, and the route is served
    /// without it.
    fn canary_group(&mut self, m: &Member, c: &super::canary::RouteCanary) -> Option<String> {
        match self.target_group_in(&c.from.namespace, &c.backend, &m.settings.backend) {
            Ok(g) => Some(g),
            Err(u) => {
                self.diags.push(Diagnostic::new(
                    u.severity(),
                    tollgate_contract::ObjectKind::Ingress,
                    c.from.namespace.clone(),
                    c.from.name.clone(),
                    u.reason,
                    format!("{}; the canary takes no share of {}", u.message, m.obj),
                ));
                None
            }
        }
    }

    /// A forward to `target_groups` with the member's per-route settings (the ingress-nginx
    /// policies the proxy applies); `backend` is the route's own, for its default backend.
    fn forward(
        &mut self,
        m: &Member,
        target_groups: Vec<WeightedTargetGroup>,
        stickiness_seconds: Option<u32>,
        path: &str,
        backend: Option<&IngressBackend>,
    ) -> Forward {
        let s = &m.settings;
        Forward {
            target_groups,
            stickiness_seconds,
            rewrite_target: s.rewrite_target.clone(),
            max_body_bytes: s.max_body_bytes,
            upstream: s.upstream.clone(),
            cors: s.cors.clone(),
            basic_auth: s.basic_auth.clone(),
            external_auth: s.external_auth.clone(),
            rate_limit: s.rate_limit.clone(),
            affinity: affinity_for(m, path),
            hsts: None,
            client_cert: s.client_cert.clone(),
            error_backend: backend.and_then(|b| self.error_backend(m, b)),
        }
    }

    /// ingress-nginx's per-Ingress default backend for a route forwarding to `backend`:
    /// the Service (its only port) resolved to a target group of the model.
    fn error_backend(
        &mut self,
        m: &Member,
        backend: &IngressBackend,
    ) -> Option<Arc<tollgate_contract::ErrorBackend>> {
        let name = m.settings.default_backend_service.as_ref()?;
        let fallback = IngressBackend {
            service: Some(k8s_openapi::api::networking::v1::IngressServiceBackend {
                name: name.clone(),
                port: None,
            }),
            resource: None,
        };
        match self.target_group(m, &fallback) {
            Ok(tg) => {
                let (service, service_port) = backend
                    .service
                    .as_ref()
                    .map(|s| {
                        let port = s
                            .port
                            .as_ref()
                            .and_then(|p| p.name.clone().or(p.number.map(|n| n.to_string())))
                            .unwrap_or_default();
                        (s.name.clone(), port)
                    })
                    .unwrap_or_default();
                Some(Arc::new(tollgate_contract::ErrorBackend {
                    target_group: tg,
                    codes: m.settings.custom_http_errors.clone(),
                    ingress: m.obj.clone(),
                    service,
                    service_port,
                }))
            }
            Err(u) => {
                self.diags.push(ingress_diag(
                    m,
                    u.severity(),
                    u.reason,
                    format!(
                        "{}default-backend: {} (a default backend Service needs exactly one port); the Ingress's routes are served without it",
                        annotations::NGINX,
                        u.message
                    ),
                ));
                None
            }
        }
    }

    fn target_group_in(
        &mut self,
        namespace: &str,
        backend: &IngressBackend,
        settings: &annotations::BackendSettings,
    ) -> Result<String, Unresolved> {
        let spec = self.index.target_group_spec(
            namespace,
            backend,
            settings,
            self.opts,
            &mut self.deps,
        )?;
        let id = spec.group.id.clone();
        if !self.specs.iter().any(|s| s.group.id == id) {
            let shared = match self.shared.get(&id) {
                Some(s) if **s == spec => s.clone(),
                _ => {
                    let s = Arc::new(spec);
                    self.shared.insert(id.clone(), s.clone());
                    s
                }
            };
            self.specs.push(shared);
        }
        Ok(id)
    }

    /// A backend's action for the route at `path`; an unresolvable one answers 503.
    fn action(&mut self, m: &Member, backend: &IngressBackend, path: &str) -> Action {
        if let Some(r) = &m.settings.redirect {
            return Action::Redirect(r.clone());
        }
        if let Some(name) = alb_actions::annotated_action_name(backend) {
            return self.annotated_action(m, name, path);
        }
        match self.target_group(m, backend) {
            Ok(tg) => {
                let groups = vec![WeightedTargetGroup {
                    target_group: tg,
                    weight: 1,
                }];
                Action::Forward(self.forward(m, groups, None, path, Some(backend)))
            }
            Err(u) => {
                self.diags.push(ingress_diag(
                    m,
                    u.severity(),
                    u.reason,
                    format!("{}; requests for it answer 503", u.message),
                ));
                Action::FixedResponse(FixedResponse::service_unavailable(&u.message))
            }
        }
    }

    /// The action of a `use-annotation` backend: `actions.<name>` of the same Ingress. A
    /// Service of a weighted forward that cannot be resolved is left out (and reported);
    /// with none left, or no such annotation, the path answers 503.
    fn annotated_action(&mut self, m: &Member, name: &str, path: &str) -> Action {
        let Some(action) = m.settings.actions.get(name) else {
            let message = format!(
                "backend {name} uses annotation {}actions.{name}, which is not set",
                annotations::ALB
            );
            self.diags.push(ingress_diag(
                m,
                Severity::Warning,
                Reason::AnnotationInvalid,
                format!("{message}; requests for it answer 503"),
            ));
            return Action::FixedResponse(FixedResponse::service_unavailable(&message));
        };
        match action {
            AnnotatedAction::FixedResponse(f) => Action::FixedResponse(f.clone()),
            AnnotatedAction::Redirect(r) => Action::Redirect(r.clone()),
            AnnotatedAction::Forward {
                services,
                arns,
                stickiness_seconds,
            } => {
                let mut groups: Vec<WeightedTargetGroup> = Vec::new();
                for a in arns {
                    if self.opts.provider == super::ProviderKind::Proxy {
                        self.diags.push(ingress_diag(
                            m,
                            Severity::Warning,
                            Reason::AnnotationIgnored,
                            format!("action {name}: target group {} is an AWS target group, which the proxy cannot forward to; it gets no share of the traffic", a.arn),
                        ));
                        continue;
                    }
                    groups.push(WeightedTargetGroup {
                        target_group: a.arn.clone(),
                        weight: a.weight,
                    });
                }
                for s in services {
                    let backend = alb_actions::service_backend(s);
                    match self.target_group(m, &backend) {
                        Ok(tg) => match groups.iter_mut().find(|g| g.target_group == tg) {
                            Some(g) => g.weight += s.weight,
                            None => groups.push(WeightedTargetGroup {
                                target_group: tg,
                                weight: s.weight,
                            }),
                        },
                        Err(u) => self.diags.push(ingress_diag(
                            m,
                            u.severity(),
                            u.reason,
                            format!(
                                "action {name}: {}; it gets no share of the traffic",
                                u.message
                            ),
                        )),
                    }
                }
                if groups.is_empty() {
                    let message = format!("action {name} forwards to no usable Service");
                    return Action::FixedResponse(FixedResponse::service_unavailable(&message));
                }
                Action::Forward(self.forward(m, groups, *stickiness_seconds, path, None))
            }
        }
    }
}

/// The route's affinity: ingress-nginx's cookie path is the location's path as written
/// unless `session-cookie-path` says otherwise.
fn affinity_for(m: &Member, path: &str) -> Option<Arc<tollgate_contract::Affinity>> {
    let a = m.settings.affinity.as_ref()?;
    Some(Arc::new(match a {
        tollgate_contract::Affinity::Cookie(c) if c.path.is_empty() => {
            tollgate_contract::Affinity::Cookie(tollgate_contract::CookieAffinity {
                path: path.to_string(),
                ..c.clone()
            })
        }
        other => other.clone(),
    }))
}

/// A member's action as a listener serves it: on plain HTTP, ssl-redirect replaces it with a
/// redirect to the HTTPS port.
pub(crate) fn on_listener(m: &Member, protocol: ListenerProtocol, action: &Action) -> Action {
    match (protocol, m.settings.ssl_redirect_port) {
        (ListenerProtocol::Http, Some(https_port)) => Action::Redirect(Redirect {
            protocol: Some("HTTPS".into()),
            host: None,
            port: Some(https_port),
            path: None,
            query: None,
            status_code: 308,
            // ingress-nginx's redirect drops a `/` ending the URI unless
            // preserve-trailing-slash (rootfs/etc/nginx/lua/lua_ingress.lua); ALB's keeps it.
            strip_trailing_slash: m.settings.ssl_redirect_nginx
                && !m.settings.preserve_trailing_slash,
        }),
        // ingress-nginx sets HSTS on its HTTPS responses of TLS hosts (under its defaults).
        (ListenerProtocol::Https, _) => match (action, &m.settings.hsts) {
            (Action::Forward(f), Some(h)) => Action::Forward(Forward {
                hsts: Some(h.clone()),
                ..f.clone()
            }),
            _ => action.clone(),
        },
        _ => action.clone(),
    }
}

/// The member's identity-provider authentication where ALB performs it: before every
/// action of its routes on HTTPS listeners (`buildActions` in the AWS Load Balancer
/// Controller). On HTTP the member only redirects, or was refused (`alb_protection`).
pub(crate) fn authenticate_on(
    m: &Member,
    protocol: ListenerProtocol,
) -> Option<Arc<tollgate_contract::IdpAuthentication>> {
    match protocol {
        ListenerProtocol::Https => m.settings.idp_auth.clone(),
        ListenerProtocol::Http => None,
    }
}

fn make_claims(rm: &ResolvedMember, protocol: ListenerProtocol, port: u16) -> Claims {
    let m = rm.member.as_ref();
    let mut out = Claims::default();
    let slot = |out: &mut Claims, ri: usize| -> usize {
        let host = &m.routes[ri].host;
        match out
            .hosts
            .iter()
            .position(|(h, _)| m.routes[*h].host == *host)
        {
            Some(i) => i,
            None => {
                out.hosts.push((ri, Vec::new()));
                out.hosts.len() - 1
            }
        }
    };
    // ingress-nginx's app-root is checked before any location of the server: `/` on each of
    // the Ingress's hosts redirects (302) to it, scheme and host kept.
    if m.settings.app_root.is_some() {
        for ri in 0..m.routes.len() {
            let i = slot(&mut out, ri);
            if out.hosts[i].1.iter().any(|c| c.app_root) {
                continue;
            }
            out.hosts[i].1.push(Claim {
                route: ri,
                app_root: true,
            });
        }
    }
    for (ri, r) in m.routes.iter().enumerate() {
        let Some(raw) = rm.route_actions.get(ri) else {
            continue;
        };
        // Only a redirect can loop; the listener's own form of it (ssl-redirect may replace
        // it) is what would answer.
        if matches!(raw, Action::Redirect(_))
            && redirects_to_itself(&on_listener(m, protocol, raw), port, protocol, r)
        {
            out.diags.push(ingress_diag(
                m,
                Severity::Info,
                Reason::RouteConflict,
                format!(
                    "the redirect for path {} is left off listener {port} ({protocol:?}): it would redirect to itself (the AWS Load Balancer Controller omits it too, for the actions.ssl-redirect pattern); the next route for the path serves it there",
                    r.path.path
                ),
            ));
            continue;
        }
        let i = slot(&mut out, ri);
        out.hosts[i].1.push(Claim {
            route: ri,
            app_root: false,
        });
    }
    out
}

/// The conflict key of a claim and the routes it becomes if it wins the key.
fn claim_routes(
    rm: &ResolvedMember,
    c: Claim,
    protocol: ListenerProtocol,
) -> Option<(ConflictKey, Vec<Route>)> {
    let m = rm.member.as_ref();
    let r = m.routes.get(c.route)?;
    if c.app_root {
        let root = m.settings.app_root.as_ref()?;
        let path = PathMatch {
            kind: PathKind::Exact,
            path: "/".into(),
        };
        let redirect = Action::Redirect(Redirect {
            protocol: None,
            host: None,
            port: None,
            path: Some(root.clone()),
            query: Some(String::new()),
            status_code: 302,
            strip_trailing_slash: false,
        });
        let key = conflict_key(&r.host, &path, &Conditions::default());
        return Some((
            key,
            vec![Route {
                host: r.host.clone(),
                path,
                extra: Conditions::default(),
                action: on_listener(m, protocol, &redirect),
                authenticate: authenticate_on(m, protocol),
                ingress: m.obj.clone(),
            }],
        ));
    }
    let raw = rm.route_actions.get(c.route)?;
    let extra = extra_conditions(m, &r.backend);
    let key = conflict_key(&r.host, &r.path, &extra);
    let variants = match rm.canary_variants.get(c.route) {
        Some(Some(v)) => v.clone(),
        _ => vec![(extra, raw.clone())],
    };
    let routes = variants
        .into_iter()
        .flat_map(|(extra, action)| source_ranged(&m.settings, extra, &action))
        .map(|(extra, action)| Route {
            host: r.host.clone(),
            path: r.path.clone(),
            extra,
            action: on_listener(m, protocol, &action),
            authenticate: authenticate_on(m, protocol),
            ingress: m.obj.clone(),
        })
        .collect();
    Some((key, routes))
}

/// One host's rules as last computed, with what they were computed from.
#[derive(Debug)]
struct HostEntry {
    /// The resolved members claiming the host, in precedence order (held, so that the
    /// allocations compared stay theirs).
    claimants: Vec<Arc<ResolvedMember>>,
    protocol: ListenerProtocol,
    fence: bool,
    default_action: ListenerDefault,
    rules: Arc<[Rule]>,
    diags: Vec<Diagnostic>,
    round: u64,
}

/// The members claiming one host: almost always one, so kept inline.
type Claimants = SmallVec<[(usize, usize); 1]>;

/// Host entries of one listener.
#[derive(Debug, Default)]
struct ListenerEntries {
    exact: FastMap<String, HostEntry>,
    wildcard: FastMap<String, HostEntry>,
    hostless: Option<HostEntry>,
    /// The hosts of the last build, sorted: the listener's chunks in order.
    exact_order: Vec<String>,
    /// from-to-www redirect chunks by the host they answer, kept while they read the same.
    www: FastMap<String, Arc<[Rule]>>,
    wildcard_order: Vec<String>,
}

/// Makes `order` the sorted hosts of `now`, re-sorting only when the set of hosts changed
/// (a change that adds or drops a host), so an ordinary build compares no host names.
fn keep_order(order: &mut Vec<String>, now: &FastMap<&str, Claimants>) {
    if order.len() == now.len() && order.iter().all(|h| now.contains_key(h.as_str())) {
        return;
    }
    let mut hosts: Vec<&str> = now.keys().copied().collect();
    hosts.sort_unstable();
    *order = hosts.into_iter().map(str::to_string).collect();
}

type MemberList = Vec<Arc<Member>>;

/// What one load balancer keeps between builds.
#[derive(Debug, Default)]
pub(crate) struct RulesCache {
    /// Resolved members by the allocation of the member they resolve.
    resolved: FastMap<usize, (Arc<ResolvedMember>, u64)>,
    listeners: BTreeMap<u16, ListenerEntries>,
    /// Target group specs by id, so that members resolving to the same one share it.
    specs: FastMap<String, Arc<TargetGroupSpec>>,
    /// The members' identities as last built (with the members they came from), handed on
    /// while they read the same.
    ingresses: Option<(MemberList, Arc<[ObjectRef]>)>,
    pub round: u64,
}

impl RulesCache {
    /// The member resolved, reused while its Services are the same objects.
    pub(crate) fn resolved(
        &mut self,
        member: &Arc<Member>,
        ports: impl FnOnce() -> super::MemberPorts,
        index: &BackendIndex<'_>,
        opts: &BuildOptions,
    ) -> Arc<ResolvedMember> {
        let key = Arc::as_ptr(member) as usize;
        let round = self.round;
        if let Some((rm, used)) = self.resolved.get_mut(&key) {
            if rm.still_valid(member, index) {
                *used = round;
                return rm.clone();
            }
        }
        let rm = Arc::new(resolve_member(
            member,
            &ports(),
            index,
            opts,
            &mut self.specs,
        ));
        self.resolved.insert(key, (rm.clone(), round));
        rm
    }

    /// The members' identities in precedence order: the last build's list when it reads the
    /// same (compared, not rebuilt: 10,000 names are 20,000 allocations).
    pub(crate) fn ingresses(&mut self, members: &[&Arc<Member>]) -> Arc<[ObjectRef]> {
        if let Some((from, was)) = &mut self.ingresses {
            if from.len() == members.len()
                && from
                    .iter()
                    .zip(members)
                    .all(|(f, m)| Arc::ptr_eq(f, m) || f.obj == m.obj)
            {
                for (f, m) in from.iter_mut().zip(members) {
                    if !Arc::ptr_eq(f, m) {
                        *f = Arc::clone(m);
                    }
                }
                return was.clone();
            }
        }
        let now: Arc<[ObjectRef]> = members.iter().map(|m| m.obj.clone()).collect();
        let from = members.iter().map(|m| Arc::clone(m)).collect();
        self.ingresses = Some((from, now.clone()));
        now
    }

    /// Drops what the build just finished did not use.
    pub(crate) fn prune(&mut self) {
        let round = self.round;
        self.resolved.retain(|_, (_, used)| *used == round);
        self.specs.retain(|_, s| Arc::strong_count(s) > 1);
        self.listeners.retain(|_, l| {
            l.exact.retain(|_, e| e.round == round);
            l.wildcard.retain(|_, e| e.round == round);
            if l.hostless.as_ref().is_some_and(|e| e.round != round) {
                l.hostless = None;
            }
            !(l.exact.is_empty() && l.wildcard.is_empty() && l.hostless.is_none())
        });
    }
}

/// The ordered rules of one listener from its members (in precedence order) and their
/// resolutions, reusing every host whose inputs are unchanged.
pub(crate) fn listener_rules(
    cache: &mut RulesCache,
    port: u16,
    protocol: ListenerProtocol,
    attached: &[&Arc<ResolvedMember>],
    default_action: &ListenerDefault,
    www_redirects: bool,
    diags: &mut Vec<Diagnostic>,
) -> tollgate_contract::RuleList {
    // Which attached members claim each host (index into `attached`, with the position of
    // the host in their claims), in precedence order. Hashed, not sorted: the order of hosts
    // is kept between builds and re-sorted only when the set of hosts changes.
    let mut exact: FastMap<&str, Claimants> = FastMap::default();
    let mut wildcard: FastMap<&str, Claimants> = FastMap::default();
    let mut hostless: Claimants = Claimants::new();
    for (ai, rm) in attached.iter().enumerate() {
        let Some(claims) = rm.claims(protocol, port) else {
            continue;
        };
        diags.extend(claims.diags.iter().cloned());
        for (hi, (first, list)) in claims.hosts.iter().enumerate() {
            let Some(route) = rm.member.routes.get(*first) else {
                continue;
            };
            if list.is_empty() {
                continue;
            }
            match &route.host {
                Some(HostMatch::Exact(h)) => exact.entry(h.as_str()).or_default().push((ai, hi)),
                Some(HostMatch::Wildcard(s)) => {
                    wildcard.entry(s.as_str()).or_default().push((ai, hi))
                }
                None => hostless.push((ai, hi)),
            }
        }
    }
    let any_hostless = !hostless.is_empty();

    let round = cache.round;
    // This listener's entries taken out, so that the other listeners' can be looked at: a
    // host whose rules read the same on another listener (HTTP and HTTPS, usually) shares
    // that listener's allocation, which the proxy compiles once.
    let mut taken = cache.listeners.remove(&port).unwrap_or_default();
    let entries = &mut taken;
    let others = &cache.listeners;
    keep_order(&mut entries.exact_order, &exact);
    keep_order(&mut entries.wildcard_order, &wildcard);
    let mut chunks: Vec<Arc<[Rule]>> = Vec::with_capacity(exact.len() + wildcard.len() + 1);
    let inputs = HostInputs {
        attached,
        protocol,
        port,
        default_action,
        round,
    };
    for h in entries.exact_order.iter() {
        let Some(claimants) = exact.get(h.as_str()) else {
            continue;
        };
        let fence = exact_host_fenced(h, |s| wildcard.contains_key(s), any_hostless);
        let e = match inputs.settle(
            entries.exact.get_mut(h.as_str()),
            || Some(HostMatch::Exact(h.clone())),
            claimants,
            fence,
            others.values().filter_map(|o| o.exact.get(h.as_str())),
        ) {
            Ok(e) => e,
            Err(new) => entries.exact.entry(h.clone()).or_insert(*new),
        };
        chunks.push(e.rules.clone());
        diags.extend(e.diags.iter().cloned());
    }
    if www_redirects {
        from_to_www(attached, &exact, entries, port, &mut chunks, diags);
    }
    for s in entries.wildcard_order.iter() {
        let Some(claimants) = wildcard.get(s.as_str()) else {
            continue;
        };
        let e = match inputs.settle(
            entries.wildcard.get_mut(s.as_str()),
            || Some(HostMatch::Wildcard(s.clone())),
            claimants,
            any_hostless,
            others.values().filter_map(|o| o.wildcard.get(s.as_str())),
        ) {
            Ok(e) => e,
            Err(new) => entries.wildcard.entry(s.clone()).or_insert(*new),
        };
        chunks.push(e.rules.clone());
        diags.extend(e.diags.iter().cloned());
    }
    if !hostless.is_empty() {
        let e = match inputs.settle(
            entries.hostless.as_mut(),
            || None,
            &hostless,
            false,
            others.values().filter_map(|o| o.hostless.as_ref()),
        ) {
            Ok(e) => e,
            Err(new) => entries.hostless.insert(*new),
        };
        chunks.push(e.rules.clone());
        diags.extend(e.diags.iter().cloned());
    }
    cache.listeners.insert(port, taken);
    tollgate_contract::RuleList::from_chunks(chunks)
}

/// ingress-nginx's from-to-www-redirect (BuildRedirects in its controller): for each exact
/// host an Ingress with the annotation serves, the other form (`www.` added or removed)
/// answers every request with a 308 to the host, scheme, path and query kept — unless an
/// Ingress lists that other form itself, which is then left alone (with a note).
fn from_to_www(
    attached: &[&Arc<ResolvedMember>],
    exact: &FastMap<&str, Claimants>,
    entries: &mut ListenerEntries,
    port: u16,
    chunks: &mut Vec<Arc<[Rule]>>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut wanted: BTreeMap<String, (&str, &Member)> = BTreeMap::new();
    for rm in attached.iter().filter(|rm| rm.member.settings.from_to_www) {
        for r in &rm.member.routes {
            let Some(HostMatch::Exact(to)) = &r.host else {
                continue;
            };
            let from = match to.strip_prefix("www.") {
                Some(bare) => bare.to_string(),
                None => format!("www.{to}"),
            };
            if exact.contains_key(from.as_str()) {
                diags.push(ingress_diag(
                    &rm.member,
                    Severity::Info,
                    Reason::RouteConflict,
                    format!("from-to-www-redirect: no redirect from {from} to {to} on listener {port}: an Ingress serves {from} itself (as ingress-nginx, which skips it)"),
                ));
                continue;
            }
            wanted.entry(from).or_insert((to.as_str(), &rm.member));
        }
    }
    entries.www.retain(|from, _| wanted.contains_key(from));
    for (from, (to, m)) in wanted {
        let rule = Rule {
            ingress: m.obj.clone(),
            conditions: Conditions {
                host: Some(HostMatch::Exact(from.clone())),
                path: Some(PathMatch {
                    kind: PathKind::Prefix,
                    path: "/".into(),
                }),
                ..Conditions::default()
            },
            authenticate: None,
            // `$scheme://to$request_uri` in ingress-nginx: the scheme's own port, not the one
            // the proxy happens to listen on.
            action: Action::Redirect(Redirect {
                protocol: None,
                host: Some(to.to_string()),
                port: Some(port),
                path: None,
                query: None,
                status_code: 308,
                strip_trailing_slash: false,
            }),
        };
        let kept = entries
            .www
            .get(&from)
            .filter(|c| c.len() == 1 && c[0] == rule)
            .cloned();
        let chunk = kept.unwrap_or_else(|| Arc::from(vec![rule]));
        entries.www.insert(from, chunk.clone());
        chunks.push(chunk);
    }
}

/// Makes a freshly computed host entry share the rules of the same host on another listener
/// when they read the same (compared only when computed, so rarely).
fn share<'e>(e: &mut HostEntry, on_other_listeners: impl Iterator<Item = &'e HostEntry>) {
    for o in on_other_listeners {
        if !Arc::ptr_eq(&o.rules, &e.rules) && *o.rules == *e.rules {
            e.rules = o.rules.clone();
            return;
        }
    }
}

/// What every host of one listener is computed with.
struct HostInputs<'x> {
    attached: &'x [&'x Arc<ResolvedMember>],
    protocol: ListenerProtocol,
    port: u16,
    default_action: &'x ListenerDefault,
    round: u64,
}

impl HostInputs<'_> {
    /// A host's entry brought up to date: `existing` recomputed only when its inputs changed,
    /// or a new entry to keep (`Err`, boxed: entries are large and new ones rare). One that
    /// is (re)computed shares the rules of the same host on another listener (`elsewhere`)
    /// when they read the same.
    fn settle<'e, 'o>(
        &self,
        existing: Option<&'e mut HostEntry>,
        host: impl FnOnce() -> Option<HostMatch>,
        claimants: &[(usize, usize)],
        fence: bool,
        elsewhere: impl Iterator<Item = &'o HostEntry>,
    ) -> Result<&'e mut HostEntry, Box<HostEntry>> {
        match existing {
            Some(e) => {
                if self.refresh(e, host, claimants, fence) {
                    share(e, elsewhere);
                }
                Ok(e)
            }
            None => {
                let mut e = self.compute(&host(), claimants, fence);
                share(&mut e, elsewhere);
                Err(Box::new(e))
            }
        }
    }

    /// Recomputes `e` unless it was computed from these very inputs; marks it used.
    fn refresh(
        &self,
        e: &mut HostEntry,
        host: impl FnOnce() -> Option<HostMatch>,
        claimants: &[(usize, usize)],
        fence: bool,
    ) -> bool {
        let same = e.round == self.round
            || (e.protocol == self.protocol
                && e.fence == fence
                && e.claimants.len() == claimants.len()
                && e.claimants
                    .iter()
                    .zip(claimants)
                    .all(|(was, (ai, _))| Arc::ptr_eq(was, self.attached[*ai]))
                && e.default_action == *self.default_action);
        if !same {
            *e = self.compute(&host(), claimants, fence);
        }
        e.round = self.round;
        !same
    }

    /// One host's rules: each claim served by the first claimant (in precedence order) to
    /// make it; the others told.
    fn compute(
        &self,
        host: &Option<HostMatch>,
        claimants: &[(usize, usize)],
        fence: bool,
    ) -> HostEntry {
        let mut diags = Vec::new();
        let mut seen: HashMap<ConflictKey, usize> = HashMap::new();
        let mut routes = Vec::new();
        for &(ai, hi) in claimants {
            let rm = &self.attached[ai];
            let m = rm.member.as_ref();
            let Some(claims) = rm.claims(self.protocol, self.port) else {
                continue;
            };
            let Some((_, list)) = claims.hosts.get(hi) else {
                continue;
            };
            for &c in list {
                let Some((key, made)) = claim_routes(rm, c, self.protocol) else {
                    continue;
                };
                if let Some(&winner) = seen.get(&key) {
                    if c.app_root {
                        continue;
                    }
                    let Some(r) = m.routes.get(c.route) else {
                        continue;
                    };
                    diags.push(conflict_diag(
                        m,
                        &self.attached[winner].member,
                        winner == ai,
                        host,
                        &r.path,
                        self.port,
                    ));
                    continue;
                }
                seen.insert(key, ai);
                routes.extend(made);
            }
        }
        HostEntry {
            claimants: claimants
                .iter()
                .map(|(ai, _)| Arc::clone(self.attached[*ai]))
                .collect(),
            protocol: self.protocol,
            fence,
            default_action: self.default_action.clone(),
            rules: Arc::from(host_rules(host.clone(), routes, fence, self.default_action)),
            diags,
            round: self.round,
        }
    }
}

fn conflict_diag(
    m: &Member,
    winner: &Member,
    itself: bool,
    host: &Option<HostMatch>,
    path: &PathMatch,
    port: u16,
) -> Diagnostic {
    let host = host
        .as_ref()
        .map(|h| h.to_string())
        .unwrap_or_else(|| "*".into());
    if itself {
        ingress_diag(
            m,
            Severity::Info,
            Reason::RouteConflict,
            format!(
                "host {host} path {} is listed more than once on listener {port}; the first one serves it",
                path.path,
            ),
        )
    } else {
        ingress_diag(
            m,
            Severity::Warning,
            Reason::RouteConflict,
            format!(
                "host {host} path {} ({:?}) is already served by Ingress {}, which has precedence (group.order, then oldest, then namespace/name)",
                path.path, path.kind, winner.obj
            ),
        )
    }
}
