//! One generation of the proxy's configuration, compiled from the desired state. Built off
//! the request path, then swapped in whole; requests already running keep the generation
//! they started with.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tollgate_contract::{Action, DesiredState, LoadBalancer, Redirect, Rule, TargetGroup};

use crate::policy::cors::CompiledCors;
use crate::policy::external_auth::CompiledExternalAuth;
use crate::route::route_table::{rewrite_path, ChunkRoutes, ListenerRoutes, RuleIndex};
use crate::shared::metrics::{ProxyMetrics, StatusCounters};
use crate::upstream::{TargetRegistry, UpstreamGroup};

/// Keyed by allocations and ids, looked up for every chunk and group of every compile.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// The model's plain-HTTP listener port.
pub const HTTP_PORT: u16 = 80;
/// The model's HTTPS listener port.
pub const HTTPS_PORT: u16 = 443;

/// What a matched rule does, ready to run.
#[derive(Debug)]
pub enum CompiledAction {
    Forward {
        groups: Vec<(Arc<UpstreamGroup>, u32)>,
        rewrite_target: Option<String>,
        /// ingress-nginx `proxy-body-size`: larger request bodies get 413.
        max_body: Option<u64>,
        /// Per-route upstream settings; `None` (most routes) keeps the fast paths.
        upstream: Option<Arc<CompiledUpstream>>,
        /// ingress-nginx CORS; `None` on most routes. Shared with the responses it adds
        /// headers to.
        cors: Option<Arc<CompiledCors>>,
        /// ingress-nginx basic authentication; `None` on most routes.
        basic_auth: Option<Arc<crate::policy::basic_auth::CompiledBasicAuth>>,
        /// ingress-nginx external authentication (`auth-url`); `None` on most routes.
        external_auth: Option<Arc<crate::policy::external_auth::CompiledExternalAuth>>,
        /// ingress-nginx rate limits; `None` on most routes.
        rate_limit: Option<Arc<crate::policy::rate_limit::CompiledRateLimit>>,
        /// ingress-nginx session affinity or consistent hashing; `None` on most routes.
        affinity: Option<Arc<crate::upstream::affinity::CompiledAffinity>>,
        /// `Strict-Transport-Security` set on responses (ingress-nginx's defaults).
        hsts: Option<http::HeaderValue>,
        /// ingress-nginx client-certificate authentication; `None` on most routes.
        client_cert: Option<Arc<crate::policy::client_cert::CompiledClientCert>>,
        /// ingress-nginx per-Ingress default backend; `None` on most routes.
        error_backend: Option<Arc<CompiledErrorBackend>>,
    },
    Redirect(Redirect),
    Fixed {
        status: u16,
        content_type: String,
        body: Bytes,
    },
}

/// ingress-nginx's default backend of a route: its group, the codes it answers, and the
/// headers its requests carry (`X-Namespace`... as ingress-nginx's custom error pages get).
#[derive(Debug)]
pub struct CompiledErrorBackend {
    pub group: Arc<UpstreamGroup>,
    pub codes: Vec<u16>,
    /// `x-namespace: ...\r\n` and the other fixed header lines.
    pub fixed_headers: String,
}

/// ingress-nginx's `proxy-next-upstream`, ready to apply.
#[derive(Debug)]
pub struct NextUpstream {
    pub off: bool,
    pub error: bool,
    pub timeout: bool,
    pub non_idempotent: bool,
    pub statuses: Vec<u16>,
    pub tries: usize,
    pub timeout_limit: Option<std::time::Duration>,
}

/// ingress-nginx's per-route upstream settings, ready to apply.
#[derive(Debug, Default)]
pub struct CompiledUpstream {
    /// `upstream-vhost`: the `Host` sent to the target.
    pub host: Option<http::HeaderValue>,
    /// `x-forwarded-prefix`.
    pub forwarded_prefix: Option<http::HeaderValue>,
    pub connect_timeout: Option<std::time::Duration>,
    /// How long the target may take to send its response headers.
    pub read_timeout: Option<std::time::Duration>,
    /// `proxy-send-timeout`: how long the target may stop taking the request body.
    pub send_timeout: Option<std::time::Duration>,
    /// `proxy-next-upstream`; `None`: the default (another target after a connect failure).
    pub next: Option<Arc<NextUpstream>>,
}

impl CompiledUpstream {
    fn compile(o: &tollgate_contract::UpstreamOptions) -> Option<Arc<CompiledUpstream>> {
        if o.is_default() {
            return None;
        }
        let header = |v: &Option<String>| {
            v.as_deref()
                .and_then(|v| http::HeaderValue::from_str(v).ok())
        };
        let secs = |s: Option<u32>| s.map(|s| std::time::Duration::from_secs(u64::from(s)));
        Some(Arc::new(CompiledUpstream {
            host: header(&o.host),
            forwarded_prefix: header(&o.forwarded_prefix),
            connect_timeout: secs(o.connect_timeout_seconds),
            read_timeout: secs(o.read_timeout_seconds),
            send_timeout: secs(o.send_timeout_seconds),
            next: o.next_upstream.as_ref().map(|n| {
                let has = |c: &str| n.conditions.iter().any(|x| x == c);
                Arc::new(NextUpstream {
                    off: has("off"),
                    error: has("error") || has("invalid_header"),
                    timeout: has("timeout"),
                    non_idempotent: has("non_idempotent"),
                    statuses: n
                        .conditions
                        .iter()
                        .filter_map(|c| c.strip_prefix("http_")?.parse().ok())
                        .collect(),
                    tries: if n.tries == 0 {
                        usize::MAX
                    } else {
                        n.tries as usize
                    },
                    timeout_limit: (n.timeout_seconds > 0)
                        .then(|| std::time::Duration::from_secs(u64::from(n.timeout_seconds))),
                })
            }),
        }))
    }
}

/// A rule's action with its metric handles.
#[derive(Debug)]
pub struct CompiledRule {
    pub action: CompiledAction,
    pub counters: StatusCounters,
}

/// One listener, compiled.
#[derive(Debug)]
pub struct CompiledListener {
    pub routes: ListenerRoutes,
    /// The compiled rules of each of `routes`' chunks, in the same order.
    rules: Vec<Arc<[CompiledRule]>>,
    pub default: CompiledRule,
}

impl CompiledListener {
    /// The rule for a lookup result (`None` = the default action).
    pub fn rule(&self, index: Option<RuleIndex>) -> &CompiledRule {
        index
            .and_then(|i| self.routes.locate(i))
            .and_then(|(ci, local)| self.rules.get(ci)?.get(local))
            .unwrap_or(&self.default)
    }

    /// The path a request routed to `index` goes upstream with: rewritten by the rule's
    /// `rewrite-target` (which needs the rule's regex), else `path` as routing saw it.
    pub fn forwarded_path<'p>(
        &self,
        index: Option<RuleIndex>,
        rewrite_target: Option<&str>,
        path: &'p str,
    ) -> Cow<'p, str> {
        match (rewrite_target, index.and_then(|i| self.routes.regex(i))) {
            (Some(target), Some(re)) => Cow::Owned(rewrite_path(re, path, target)),
            _ => Cow::Borrowed(path),
        }
    }
}

/// A whole configuration generation.
#[derive(Debug)]
pub struct ProxyConfig {
    pub generation: u64,
    pub http: Option<CompiledListener>,
    pub https: Option<CompiledListener>,
    pub groups: HashMap<String, Arc<UpstreamGroup>>,
    /// The HTTPS routes that want client certificates, by host: their handshakes ask for
    /// one (`tls::ClientAuthHosts`).
    pub client_auth: Vec<ClientAuthRoute>,
    /// ingress-nginx `ssl-passthrough`: TLS connections naming these hosts (lower-case) go,
    /// untouched, to a target of the group. Empty for nearly every configuration, and then
    /// the TLS listener reads nothing ahead of its handshake.
    pub passthrough: HashMap<String, Arc<UpstreamGroup>>,
}

/// A host (or none) whose route checks client certificates, with the policy.
pub type ClientAuthRoute = (
    Option<tollgate_contract::HostMatch>,
    Arc<crate::policy::client_cert::CompiledClientCert>,
);

/// What one compile keeps for the next, so that a change recompiles only the rule chunks it
/// touched (issue 16): compiled chunks by the allocation of the model chunk, and upstream
/// groups with the target group they were made from.
#[derive(Debug, Default)]
pub struct CompileCache {
    chunks: HashMap<usize, CachedChunk>,
    /// Rate-limit zones by Ingress: a recompiled route keeps its clients' buckets.
    zones: crate::policy::rate_limit::Zones,
    groups: HashMap<String, (TargetGroup, Arc<UpstreamGroup>)>,
    round: u64,
}

#[derive(Debug)]
struct CachedChunk {
    /// Held so that the allocation the entry is keyed by stays this chunk's.
    _rules: Arc<[Rule]>,
    routes: Arc<ChunkRoutes>,
    compiled: Arc<[CompiledRule]>,
    /// The upstream groups its rules forward to, by id.
    groups: Vec<String>,
    /// The request counters its rules count into, one per (Ingress, Service) pair.
    counters: Vec<StatusCounters>,
    /// Its routes that check client certificates.
    client_auth: Vec<ClientAuthRoute>,
    round: u64,
}

impl ProxyConfig {
    /// A configuration that answers every request with the default 404.
    pub fn empty(metrics: &ProxyMetrics) -> Self {
        ProxyConfig {
            generation: 0,
            http: Some(not_found_listener(metrics)),
            https: Some(not_found_listener(metrics)),
            groups: HashMap::default(),
            client_auth: Vec::new(),
            passthrough: HashMap::default(),
        }
    }

    /// Compiles the desired state. The proxy serves one load balancer; when the model has
    /// several (grouping by Ingress group), their listeners are served in id order and the
    /// first one with a given port wins: the builder's single-load-balancer mode avoids that.
    ///
    /// A rule chunk `cache` compiled before, whose upstream groups are unchanged, is reused
    /// as is; an upstream group whose target group is unchanged is reused as is.
    pub fn compile(
        desired: &DesiredState,
        generation: u64,
        previous: &TargetRegistry,
        epoch: Instant,
        metrics: &ProxyMetrics,
        cache: &mut CompileCache,
    ) -> Self {
        cache.round += 1;
        let round = cache.round;
        let mut groups = HashMap::default();
        let mut replaced: HashSet<&str> = HashSet::new();
        for lb in &desired.load_balancers {
            for tg in &lb.target_groups {
                if groups.contains_key(&tg.id) {
                    continue;
                }
                let group = match cache.groups.get(&tg.id) {
                    Some((was, g)) if was == tg => g.clone(),
                    _ => {
                        replaced.insert(&tg.id);
                        Arc::new(UpstreamGroup::from_model(tg, previous, epoch))
                    }
                };
                groups.insert(tg.id.clone(), group);
            }
        }
        let mut kept = HashMap::with_capacity_and_hasher(groups.len(), Default::default());
        for lb in &desired.load_balancers {
            for tg in &lb.target_groups {
                if let Some(g) = groups.get(&tg.id) {
                    kept.entry(tg.id.clone())
                        .or_insert_with(|| (tg.clone(), g.clone()));
                }
            }
        }
        // A group that went away counts as replaced: chunks forwarding to it recompile.
        let gone: Vec<String> = cache
            .groups
            .keys()
            .filter(|id| !groups.contains_key(*id))
            .cloned()
            .collect();
        cache.groups = kept;
        let stale = |ids: &[String]| {
            ids.iter()
                .any(|id| replaced.contains(id.as_str()) || gone.contains(id))
        };

        let mut client_auth: Vec<ClientAuthRoute> = Vec::new();
        let mut listener = |port: u16| -> Option<CompiledListener> {
            let l = desired
                .load_balancers
                .iter()
                .find_map(|lb: &LoadBalancer| lb.listener(port))?;
            let mut routes = Vec::with_capacity(l.rules.chunks().len());
            let mut rules = Vec::with_capacity(l.rules.chunks().len());
            for chunk in l.rules.chunks() {
                let key = Arc::as_ptr(chunk) as *const Rule as usize;
                let reuse = cache
                    .chunks
                    .get_mut(&key)
                    .filter(|c| Arc::ptr_eq(&c._rules, chunk) && !stale(&c.groups));
                let c = match reuse {
                    Some(c) => {
                        // Its counters stay: asked for again in this round.
                        for counters in &c.counters {
                            metrics.keep_counters(counters);
                        }
                        c.round = round;
                        c
                    }
                    None => {
                        let fresh = compile_chunk(chunk, &groups, metrics, round, &mut cache.zones);
                        cache.chunks.insert(key, fresh);
                        match cache.chunks.get_mut(&key) {
                            Some(c) => c,
                            None => continue,
                        }
                    }
                };
                routes.push(c.routes.clone());
                rules.push(c.compiled.clone());
                if port == HTTPS_PORT {
                    client_auth.extend(c.client_auth.iter().cloned());
                }
            }
            Some(CompiledListener {
                routes: ListenerRoutes::assemble(routes),
                rules,
                default: compile_action(
                    &closed_if_authenticated(&l.default_action, l.default_authenticate.is_some()),
                    "",
                    &groups,
                    metrics,
                    &mut cache.zones,
                ),
            })
        };
        let http = listener(HTTP_PORT);
        let https = listener(HTTPS_PORT);
        cache.chunks.retain(|_, c| c.round == round);
        cache.zones.prune();
        let passthrough = desired
            .load_balancers
            .iter()
            .flat_map(|lb| &lb.tls_passthrough)
            .filter_map(|p| {
                let g = groups.get(&p.target_group)?;
                Some((p.host.to_ascii_lowercase(), g.clone()))
            })
            .collect();
        ProxyConfig {
            generation,
            http: Some(http.unwrap_or_else(|| not_found_listener(metrics))),
            https: Some(https.unwrap_or_else(|| not_found_listener(metrics))),
            groups,
            client_auth,
            passthrough,
        }
    }
}

/// A listener with no rules: everything gets the built-in 404.
fn not_found_listener(metrics: &ProxyMetrics) -> CompiledListener {
    CompiledListener {
        routes: ListenerRoutes::default(),
        rules: Vec::new(),
        default: compile_action(
            &not_found(),
            "",
            &HashMap::default(),
            metrics,
            &mut crate::policy::rate_limit::Zones::default(),
        ),
    }
}

/// The proxy has no identity-provider login; the builder refuses such Ingresses for it, and
/// an action that still asks for one is closed (503), never served open.
fn closed_if_authenticated(action: &Action, authenticated: bool) -> std::borrow::Cow<'_, Action> {
    if authenticated {
        std::borrow::Cow::Owned(Action::FixedResponse(
            tollgate_contract::FixedResponse::service_unavailable(
                "authentication this proxy cannot perform",
            ),
        ))
    } else {
        std::borrow::Cow::Borrowed(action)
    }
}

fn not_found() -> Action {
    Action::FixedResponse(tollgate_contract::FixedResponse::not_found())
}

fn compile_chunk(
    chunk: &Arc<[Rule]>,
    groups: &HashMap<String, Arc<UpstreamGroup>>,
    metrics: &ProxyMetrics,
    round: u64,
    zones: &mut crate::policy::rate_limit::Zones,
) -> CachedChunk {
    // An Ingress's rules are next to each other: its label is formatted once per run.
    let mut label: Option<(&tollgate_contract::ObjectRef, String)> = None;
    let mut counters: Vec<StatusCounters> = Vec::new();
    let mut used: Vec<String> = Vec::new();
    let mut client_auth: Vec<ClientAuthRoute> = Vec::new();
    let compiled: Vec<CompiledRule> = chunk
        .iter()
        .map(|r| {
            let ingress = match &label {
                Some((o, s)) if *o == &r.ingress => s.as_str(),
                _ => label.insert((&r.ingress, r.ingress.to_string())).1.as_str(),
            };
            if let Action::Forward(f) = &r.action {
                for w in &f.target_groups {
                    if !used.contains(&w.target_group) {
                        used.push(w.target_group.clone());
                    }
                }
            }
            let rule = compile_action(
                &closed_if_authenticated(&r.action, r.authenticate.is_some()),
                ingress,
                groups,
                metrics,
                zones,
            );
            if let CompiledAction::Forward {
                client_cert: Some(c),
                ..
            } = &rule.action
            {
                client_auth.push((r.conditions.host.clone(), c.clone()));
            }
            if !counters.iter().any(|c| c.same(&rule.counters)) {
                counters.push(rule.counters.clone());
            }
            rule
        })
        .collect();
    CachedChunk {
        _rules: chunk.clone(),
        routes: Arc::new(ChunkRoutes::compile(chunk)),
        compiled: Arc::from(compiled),
        groups: used,
        counters,
        client_auth,
        round,
    }
}

/// A rule's action compiled, counting into the (Ingress, Service) pair it serves.
fn compile_action(
    action: &Action,
    ingress: &str,
    groups: &HashMap<String, Arc<UpstreamGroup>>,
    metrics: &ProxyMetrics,
    zones: &mut crate::policy::rate_limit::Zones,
) -> CompiledRule {
    match action {
        Action::Forward(f) => {
            let chosen: Vec<(Arc<UpstreamGroup>, u32)> = f
                .target_groups
                .iter()
                .filter_map(|w| groups.get(&w.target_group).map(|g| (g.clone(), w.weight)))
                .collect();
            let service = chosen
                .first()
                .map(|(g, _)| g.service.as_str())
                .unwrap_or("");
            let counters = metrics.status_counters(ingress, service);
            let affinity = f
                .affinity
                .as_deref()
                .map(crate::upstream::affinity::CompiledAffinity::compile)
                .transpose();
            let external_auth = f
                .external_auth
                .as_deref()
                .map(CompiledExternalAuth::compile)
                .transpose();
            let client_cert = f
                .client_cert
                .as_deref()
                .map(crate::policy::client_cert::CompiledClientCert::compile)
                .transpose();
            let (external_auth, affinity, client_cert) =
                match (external_auth, affinity, client_cert) {
                    (Ok(e), Ok(a), Ok(c)) => (e, a, c),
                    (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => {
                        // Never forwarded unchecked: the route answers 503, as ingress-nginx's
                        // denied location does.
                        tracing::error!(%ingress, %why, "a route policy cannot run");
                        return CompiledRule {
                            action: CompiledAction::Fixed {
                                status: 503,
                                content_type: "text/plain; charset=utf-8".into(),
                                body: Bytes::from_static(b"route policy is misconfigured\n"),
                            },
                            counters,
                        };
                    }
                };
            CompiledRule {
                action: CompiledAction::Forward {
                    groups: chosen,
                    rewrite_target: f.rewrite_target.clone(),
                    max_body: f.max_body_bytes,
                    upstream: CompiledUpstream::compile(&f.upstream),
                    cors: f.cors.as_deref().map(CompiledCors::compile),
                    basic_auth: f
                        .basic_auth
                        .as_deref()
                        .map(crate::policy::basic_auth::CompiledBasicAuth::compile),
                    external_auth,
                    rate_limit: f
                        .rate_limit
                        .as_deref()
                        .map(|l| crate::policy::rate_limit::CompiledRateLimit::compile(l, zones)),
                    affinity,
                    hsts: f
                        .hsts
                        .as_deref()
                        .and_then(|h| http::HeaderValue::from_str(h).ok()),
                    client_cert,
                    error_backend: f.error_backend.as_deref().and_then(|e| {
                        let group = groups.get(&e.target_group)?.clone();
                        let clean = |v: &str| v.replace(['\r', '\n'], "");
                        Some(Arc::new(CompiledErrorBackend {
                            group,
                            codes: e.codes.clone(),
                            fixed_headers: format!(
                                "x-namespace: {}\r\nx-ingress-name: {}\r\nx-service-name: {}\r\nx-service-port: {}\r\n",
                                clean(&e.ingress.namespace),
                                clean(&e.ingress.name),
                                clean(&e.service),
                                clean(&e.service_port)
                            ),
                        }))
                    }),
                },
                counters,
            }
        }
        Action::Redirect(r) => CompiledRule {
            action: CompiledAction::Redirect(r.clone()),
            counters: metrics.status_counters(ingress, ""),
        },
        Action::FixedResponse(f) => CompiledRule {
            action: CompiledAction::Fixed {
                status: f.status_code,
                content_type: f.content_type.clone(),
                body: Bytes::from(f.body.clone()),
            },
            counters: metrics.status_counters(ingress, ""),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_contract::{
        Conditions, Forward, HealthCheck, HostMatch, Listener, ListenerProtocol, ObjectRef,
        PathKind, PathMatch, RuleList, Target, TargetAddress, TargetState, TargetType,
        WeightedTargetGroup,
    };

    fn forward_rule(host: &str, tg: &str) -> Rule {
        Rule {
            ingress: ObjectRef::new("ns", host),
            conditions: Conditions {
                host: Some(HostMatch::Exact(host.into())),
                path: Some(PathMatch {
                    kind: PathKind::Prefix,
                    path: "/".into(),
                }),
                ..Conditions::default()
            },
            authenticate: None,
            action: Action::Forward(Forward {
                target_groups: vec![WeightedTargetGroup {
                    target_group: tg.into(),
                    weight: 1,
                }],
                stickiness_seconds: None,
                rewrite_target: None,
                max_body_bytes: None,
                upstream: Default::default(),
                cors: None,
                basic_auth: None,
                external_auth: None,
                rate_limit: None,
                affinity: None,
                hsts: None,
                client_cert: None,
                error_backend: None,
            }),
        }
    }

    fn group(id: &str, last_octet: u8) -> TargetGroup {
        TargetGroup {
            id: id.into(),
            service: ObjectRef::new("ns", id),
            service_port: 80,
            protocol: Default::default(),
            protocol_version: Default::default(),
            target_type: TargetType::Ip,
            health_check: HealthCheck::default(),
            attributes: Default::default(),
            upstream_tls: None,
            targets: vec![Target {
                address: TargetAddress::Ip([10, 0, 0, last_octet].into()),
                port: 8080,
                node: None,
                instance: None,
                state: TargetState::Ready,
            }],
        }
    }

    fn state(chunks: &[Arc<[Rule]>], groups: Vec<TargetGroup>) -> DesiredState {
        DesiredState {
            load_balancers: vec![LoadBalancer {
                id: "proxy".into(),
                ingresses: Arc::from([]),
                scheme: Default::default(),
                network: Default::default(),
                name: None,
                protection: Default::default(),
                attributes: Default::default(),
                tags: Default::default(),
                listeners: vec![Listener {
                    port: HTTP_PORT,
                    protocol: ListenerProtocol::Http,
                    certificates: vec![],
                    ssl_policy: None,
                    rules: RuleList::from_chunks(chunks.iter().cloned()),
                    default_action: not_found(),
                    default_authenticate: None,
                    attributes: Default::default(),
                    mutual_authentication: None,
                }],
                target_groups: groups,
                tls_passthrough: vec![],
            }],
        }
    }

    fn target_of(cfg: &ProxyConfig, host: &str) -> Option<std::net::SocketAddr> {
        let l = cfg.http.as_ref()?;
        let facts = tollgate_contract::matching::RequestFacts {
            host,
            path: "/x",
            method: "GET",
            ..Default::default()
        };
        match &l.rule(l.routes.lookup(&facts)).action {
            CompiledAction::Forward { groups, .. } => groups
                .first()
                .and_then(|(g, _)| g.targets.first().map(|t| t.addr)),
            _ => None,
        }
    }

    /// A chunk the model carries over is reused only while the upstream groups it forwards
    /// to are: when a group's targets change, the chunk's rules must reach the new targets.
    #[test]
    fn a_kept_chunk_follows_its_groups_targets() {
        let metrics = ProxyMetrics::default();
        let registry = TargetRegistry::default();
        let epoch = Instant::now();
        let mut cache = CompileCache::default();
        let a: Arc<[Rule]> = Arc::from(vec![forward_rule("a.test", "tg-a")]);
        let b: Arc<[Rule]> = Arc::from(vec![forward_rule("b.test", "tg-b")]);
        let chunks = [a.clone(), b.clone()];

        let first = ProxyConfig::compile(
            &state(&chunks, vec![group("tg-a", 1), group("tg-b", 2)]),
            1,
            &registry,
            epoch,
            &metrics,
            &mut cache,
        );
        assert_eq!(
            target_of(&first, "b.test"),
            Some(([10, 0, 0, 2], 8080).into())
        );

        // Same chunks, tg-b's endpoint moved; tg-a untouched.
        let second = ProxyConfig::compile(
            &state(&chunks, vec![group("tg-a", 1), group("tg-b", 3)]),
            2,
            &registry,
            epoch,
            &metrics,
            &mut cache,
        );
        assert_eq!(
            target_of(&second, "b.test"),
            Some(([10, 0, 0, 3], 8080).into())
        );
        assert_eq!(
            target_of(&second, "a.test"),
            Some(([10, 0, 0, 1], 8080).into())
        );
        // The unchanged group is the same run-time group (its balancing state carries over).
        let (ga, gb) = (&first.groups["tg-a"], &second.groups["tg-a"]);
        assert!(Arc::ptr_eq(ga, gb));
        assert!(!Arc::ptr_eq(&first.groups["tg-b"], &second.groups["tg-b"]));

        // A new chunk for a (its content changed) is compiled; b's is reused.
        let a2: Arc<[Rule]> = Arc::from(vec![forward_rule("a.test", "tg-b")]);
        let third = ProxyConfig::compile(
            &state(&[a2, b.clone()], vec![group("tg-a", 1), group("tg-b", 3)]),
            3,
            &registry,
            epoch,
            &metrics,
            &mut cache,
        );
        assert_eq!(
            target_of(&third, "a.test"),
            Some(([10, 0, 0, 3], 8080).into())
        );
        assert_eq!(
            target_of(&third, "b.test"),
            Some(([10, 0, 0, 3], 8080).into())
        );
        assert_eq!(cache.chunks.len(), 2, "the replaced chunk is forgotten");
    }
}
