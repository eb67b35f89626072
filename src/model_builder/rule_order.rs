//! Turning a set of host/path routes into an ordered, first-match-wins rule list that means
//! exactly what the Ingress specification says.
//!
//! The specification selects by host first (an exact host before a wildcard, a wildcard
//! before host-less rules) and then, within the selected host, by the longest matching path,
//! `Exact` before `Prefix` of the same length. A request whose selected host has no matching
//! path goes to the default backend; it does not fall through to a less specific host. The
//! ordered list reproduces that with "fence" rules: a host-only rule that sends the rest of an
//! exact (or wildcard) host to the default action, added only where a later rule could
//! otherwise capture the request.

use std::cmp::Reverse;

use tollgate_contract::{Action, Conditions, HostMatch, ObjectRef, PathKind, PathMatch, Rule};

/// A route that survived conflict resolution, with the action it leads to.
#[derive(Debug, Clone)]
pub struct Route {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Header, query, method and source-IP conditions (`conditions.<name>`); host and path
    /// are always empty here.
    pub extra: Conditions,
    pub action: Action,
    /// Authentication before the action (HTTPS listeners only).
    pub authenticate: Option<std::sync::Arc<tollgate_contract::IdpAuthentication>>,
    pub ingress: ObjectRef,
}

/// What a listener answers when no rule matches, with the authentication before it (an
/// Ingress's `defaultBackend` under `auth-type`, as the AWS Load Balancer Controller puts
/// its authenticate action in the listener's default actions too). A host's fence rule
/// answers the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerDefault {
    pub action: Action,
    pub authenticate: Option<std::sync::Arc<tollgate_contract::IdpAuthentication>>,
}

/// Host, path kind, normalized path and extra conditions (as JSON) of a route.
pub type ConflictKey = (Option<HostMatch>, PathKind, String, String);

/// Two routes with the same key match exactly the same requests; only one can be served.
pub fn conflict_key(host: &Option<HostMatch>, path: &PathMatch, extra: &Conditions) -> ConflictKey {
    let extra = if *extra == Conditions::default() {
        String::new()
    } else {
        serde_json::to_string(extra).unwrap_or_default()
    };
    (
        host.clone(),
        path.kind,
        normalized_path(path).to_string(),
        extra,
    )
}

/// How many extra conditions narrow a route: at the same path, the narrower goes first.
fn narrowness(extra: &Conditions) -> usize {
    extra.headers.len()
        + usize::from(!extra.host_regexes.is_empty())
        + extra.query.len()
        + usize::from(!extra.methods.is_empty())
        + usize::from(!extra.source_ips.is_empty())
}

fn normalized_path(path: &PathMatch) -> &str {
    match path.kind {
        PathKind::Prefix => path.path.trim_end_matches('/'),
        PathKind::Exact | PathKind::Regex | PathKind::Glob | PathKind::AlbRegex => &path.path,
    }
}

fn covers_everything(path: &PathMatch) -> bool {
    path.kind == PathKind::Prefix && normalized_path(path).is_empty()
}

/// Whether the rest of exact host `host` needs a fence: a host-less route, or a wildcard
/// route matching it (`wildcard` says whether a suffix has one), would otherwise capture its
/// unmatched paths. [`HostMatch::matches`] in one set lookup.
pub fn exact_host_fenced(host: &str, wildcard: impl Fn(&str) -> bool, any_hostless: bool) -> bool {
    any_hostless
        || host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && wildcard(rest))
}

/// Within one host: longest path first, `Exact`, then `Prefix`, then ingress-nginx regular
/// expressions at equal length, then the path text; after all of them the ALB path patterns
/// and ALB regular expressions (`ImplementationSpecific` as the AWS Load Balancer Controller
/// reads it) in the order they arrive — precedence, then as listed — as that controller
/// orders them since v2.4.3 (docs/guide/ingress/spec.md, `sortIngressPaths`). That order is
/// what the legacy `actions.ssl-redirect` pattern relies on: its `/*` redirect listed first
/// takes every plain-HTTP request, `/users/*` listed after it included. At one path of the
/// other kinds, the route with more extra conditions goes first. The sort is stable.
fn sort_key(r: &Route) -> (bool, Reverse<usize>, PathKind, &str, Reverse<usize>) {
    match r.path.kind {
        PathKind::Glob | PathKind::AlbRegex => (true, Reverse(0), PathKind::Glob, "", Reverse(0)),
        kind => (
            false,
            Reverse(normalized_path(&r.path).len()),
            kind,
            &r.path.path,
            Reverse(narrowness(&r.extra)),
        ),
    }
}

/// The rules of one host (`None`: the host-less routes), in order, with the fence that sends
/// the rest of the host to `default_action` when `fence_needed` and no route already covers
/// every path. A listener's rules are these, host by host: exact hosts in name order, then
/// wildcards by suffix, then the host-less routes (`listener_rules`).
pub fn host_rules(
    host: Option<HostMatch>,
    mut group: Vec<Route>,
    fence_needed: bool,
    default: &ListenerDefault,
) -> Vec<Rule> {
    group.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    let fence = fence_needed
        && !group
            .iter()
            .any(|r| covers_everything(&r.path) && narrowness(&r.extra) == 0);
    let fence_owner = group.first().map(|r| r.ingress.clone());
    let mut rules = Vec::with_capacity(group.len() + usize::from(fence));
    for r in group {
        rules.push(Rule {
            ingress: r.ingress,
            conditions: Conditions {
                host: r.host,
                path: Some(r.path),
                ..r.extra
            },
            authenticate: r.authenticate,
            action: r.action,
        });
    }
    if let (true, Some(owner), Some(h)) = (fence, fence_owner, host) {
        rules.push(Rule {
            ingress: owner,
            conditions: Conditions {
                host: Some(h),
                ..Default::default()
            },
            authenticate: default.authenticate.clone(),
            action: default.action.clone(),
        });
    }
    rules
}
