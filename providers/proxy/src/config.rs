//! One generation of the proxy's configuration, compiled from the desired state. Built off
//! the request path, then swapped in whole; requests already running keep the generation
//! they started with.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tollgate_contract::{Action, DesiredState, Listener, LoadBalancer, Redirect};

use crate::metrics::{ProxyMetrics, StatusCounters};
use crate::route_table::{rewrite_path, ListenerRoutes, RuleIndex};
use crate::upstream::{TargetRegistry, UpstreamGroup};

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
    },
    Redirect(Redirect),
    Fixed {
        status: u16,
        content_type: String,
        body: Bytes,
    },
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
    pub rules: Vec<CompiledRule>,
    pub default: CompiledRule,
}

impl CompiledListener {
    /// The rule for a lookup result (`None` = the default action).
    pub fn rule(&self, index: Option<RuleIndex>) -> &CompiledRule {
        index
            .and_then(|i| self.rules.get(i))
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
}

impl ProxyConfig {
    /// A configuration that answers every request with the default 404.
    pub fn empty(metrics: &ProxyMetrics) -> Self {
        ProxyConfig {
            generation: 0,
            http: Some(not_found_listener(metrics)),
            https: Some(not_found_listener(metrics)),
            groups: HashMap::new(),
        }
    }

    /// Compiles the desired state. The proxy serves one load balancer; when the model has
    /// several (grouping by Ingress group), their listeners are served in id order and the
    /// first one with a given port wins: the builder's single-load-balancer mode avoids that.
    pub fn compile(
        desired: &DesiredState,
        generation: u64,
        previous: &TargetRegistry,
        epoch: Instant,
        metrics: &ProxyMetrics,
    ) -> Self {
        let mut groups = HashMap::new();
        for lb in &desired.load_balancers {
            for tg in &lb.target_groups {
                groups
                    .entry(tg.id.clone())
                    .or_insert_with(|| Arc::new(UpstreamGroup::from_model(tg, previous, epoch)));
            }
        }
        let listener = |port: u16| -> Option<CompiledListener> {
            let (_, l) = desired
                .load_balancers
                .iter()
                .find_map(|lb: &LoadBalancer| lb.listener(port).map(|l| (lb, l)))?;
            Some(compile_listener(l, &groups, metrics))
        };
        ProxyConfig {
            generation,
            http: Some(listener(HTTP_PORT).unwrap_or_else(|| not_found_listener(metrics))),
            https: Some(listener(HTTPS_PORT).unwrap_or_else(|| not_found_listener(metrics))),
            groups,
        }
    }
}

/// A listener with no rules: everything gets the built-in 404.
fn not_found_listener(metrics: &ProxyMetrics) -> CompiledListener {
    CompiledListener {
        routes: ListenerRoutes::default(),
        rules: Vec::new(),
        default: compile_action(&not_found(), "", &HashMap::new(), metrics),
    }
}

fn not_found() -> Action {
    Action::FixedResponse(tollgate_contract::FixedResponse::not_found())
}

fn compile_listener(
    l: &Listener,
    groups: &HashMap<String, Arc<UpstreamGroup>>,
    metrics: &ProxyMetrics,
) -> CompiledListener {
    // An Ingress's rules are next to each other: its label is formatted once per run.
    let mut label: Option<(&tollgate_contract::ObjectRef, String)> = None;
    CompiledListener {
        routes: ListenerRoutes::compile(l),
        rules: l
            .rules
            .iter()
            .map(|r| {
                let ingress = match &label {
                    Some((o, s)) if *o == &r.ingress => s.as_str(),
                    _ => label.insert((&r.ingress, r.ingress.to_string())).1.as_str(),
                };
                compile_action(&r.action, ingress, groups, metrics)
            })
            .collect(),
        default: compile_action(&l.default_action, "", groups, metrics),
    }
}

fn compile_action(
    action: &Action,
    ingress: &str,
    groups: &HashMap<String, Arc<UpstreamGroup>>,
    metrics: &ProxyMetrics,
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
                .map(|(g, _)| g.service.clone())
                .unwrap_or_default();
            CompiledRule {
                action: CompiledAction::Forward {
                    groups: chosen,
                    rewrite_target: f.rewrite_target.clone(),
                    max_body: f.max_body_bytes,
                },
                counters: metrics.status_counters(ingress, &service),
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
