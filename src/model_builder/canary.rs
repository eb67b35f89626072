//! ingress-nginx canaries: an Ingress with `canary: "true"` serves nothing of its own; each
//! of its paths takes a share of the same host and path of another Ingress (the main), by
//! header, cookie and weight, in that order (ingress-nginx's controller merges the canary's
//! backend into the main's as an alternative; rootfs/etc/nginx/lua/balancer.lua decides per
//! request; test/e2e/annotations/canary.go pins the behaviour followed here).
//!
//! In the model a canary is nothing new: rules with header conditions on the main's host and
//! path that forward to the canary (or pin to the main), ahead of the main's rule, whose
//! forward is weighted between the two. Both providers and the rule-order property test see
//! it that way. The main route's own settings (authentication, limits, rewrites...) apply
//! to its canary's share, as nginx's location is the main's.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::IngressBackend;
use tollgate_contract::{
    Action, Conditions, Diagnostic, HeaderMatch, HostMatch, ObjectRef, PathMatch, Reason, Severity,
    WeightedTargetGroup,
};

use super::annotations::CanarySpec;
use super::ingress_member::Member;
use super::{ingress_diag, FastMap};

/// The canary of one route of a main Ingress.
#[derive(Debug)]
pub(crate) struct RouteCanary {
    /// The canary Ingress.
    pub from: ObjectRef,
    pub backend: IngressBackend,
    pub spec: Arc<CanarySpec>,
}

/// Mains with their canaries attached, kept while neither changes.
#[derive(Debug, Default)]
pub(crate) struct CanaryCache(FastMap<usize, Attached>);

#[derive(Debug)]
struct Attached {
    main: Arc<Member>,
    canaries: Vec<Arc<Member>>,
    derived: Arc<Member>,
    round: u64,
}

/// Separates canary Ingresses from the rest and attaches each canary path to the main
/// Ingress serving the same host and path (the first by precedence). Returns the members to
/// build: the non-canary ones, those with canaries replaced by a copy that carries them.
pub(crate) fn attach(
    members: Vec<Arc<Member>>,
    cache: &mut CanaryCache,
    round: u64,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Arc<Member>> {
    let (canaries, mut mains): (Vec<_>, Vec<_>) = members
        .into_iter()
        .partition(|m| m.settings.canary.is_some());
    if canaries.is_empty() {
        cache.0.clear();
        return mains;
    }
    let mut order: Vec<usize> = (0..mains.len()).collect();
    order.sort_by(|a, b| mains[*a].precedence_key().cmp(&mains[*b].precedence_key()));
    let mut by_route: FastMap<(&Option<HostMatch>, &PathMatch), (usize, usize)> =
        FastMap::default();
    for &mi in &order {
        for (ri, r) in mains[mi].routes.iter().enumerate() {
            by_route.entry((&r.host, &r.path)).or_insert((mi, ri));
        }
    }
    let mut sorted_canaries: Vec<&Arc<Member>> = canaries.iter().collect();
    super::ingress_member::sort_by_precedence(&mut sorted_canaries);
    // Per main: the canary of each of its routes.
    let mut wanted: FastMap<usize, Vec<Option<Arc<RouteCanary>>>> = FastMap::default();
    let mut sources: FastMap<usize, Vec<Arc<Member>>> = FastMap::default();
    for c in sorted_canaries {
        let Some(spec) = c.settings.canary.clone() else {
            continue;
        };
        // ingress-nginx serves a canary's share from the main's location: the canary
        // Ingress's other annotations do nothing (its docs' Canary note), so say which.
        let ignored: Vec<&str> = c
            .ingress
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .filter(|k| {
                let nginx = k.strip_prefix(super::annotations::NGINX);
                let alb = k.starts_with(super::annotations::ALB);
                alb || nginx.is_some_and(|n| !n.starts_with("canary"))
            })
            .collect();
        if !ignored.is_empty() {
            diags.push(ingress_diag(
                c,
                Severity::Warning,
                Reason::AnnotationIgnored,
                format!(
                    "{} ignored on a canary Ingress: its share is served with the main Ingress's settings, as ingress-nginx does",
                    ignored.join(", ")
                ),
            ));
        }
        for r in &c.routes {
            let Some(&(mi, ri)) = by_route.get(&(&r.host, &r.path)) else {
                diags.push(ingress_diag(
                    c,
                    Severity::Warning,
                    Reason::RouteConflict,
                    format!(
                        "canary path {} on host {} is not served: no other Ingress serves that host and path (ingress-nginx serves a canary only beside its main Ingress)",
                        r.path.path,
                        r.host.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "(any)".into())
                    ),
                ));
                continue;
            };
            let slots = wanted
                .entry(mi)
                .or_insert_with(|| vec![None; mains[mi].routes.len()]);
            if slots[ri].is_some() {
                diags.push(ingress_diag(
                    c,
                    Severity::Warning,
                    Reason::RouteConflict,
                    format!(
                        "canary path {} is not served: another canary already takes that path of {} (ingress-nginx uses one canary per path)",
                        r.path.path, mains[mi].obj
                    ),
                ));
                continue;
            }
            slots[ri] = Some(Arc::new(RouteCanary {
                from: c.obj.clone(),
                backend: r.backend.clone(),
                spec: spec.clone(),
            }));
            let s = sources.entry(mi).or_default();
            if !s.iter().any(|x| Arc::ptr_eq(x, c)) {
                s.push(c.clone());
            }
        }
    }
    for (mi, routes) in wanted {
        let main = &mains[mi];
        let from = sources.remove(&mi).unwrap_or_default();
        let key = Arc::as_ptr(main) as usize;
        let derived = match cache.0.get_mut(&key) {
            Some(a)
                if Arc::ptr_eq(&a.main, main)
                    && a.canaries.len() == from.len()
                    && a.canaries.iter().zip(&from).all(|(x, y)| Arc::ptr_eq(x, y)) =>
            {
                a.round = round;
                a.derived.clone()
            }
            _ => {
                let mut m = (**main).clone();
                m.canaries = routes;
                let derived = Arc::new(m);
                cache.0.insert(
                    key,
                    Attached {
                        main: main.clone(),
                        canaries: from,
                        derived: derived.clone(),
                        round,
                    },
                );
                derived
            }
        };
        mains[mi] = derived;
    }
    cache.0.retain(|_, a| a.round == round);
    mains
}

/// The (conditions, action) variants of a route with a canary, narrowest first: header and
/// cookie rules that send to the canary or pin to the main, then the weighted forward.
/// `raw` is the main's action; a canary changes only where a forward goes.
pub(crate) fn variants(
    canary: &RouteCanary,
    canary_group: &str,
    raw: &Action,
    extra: &Conditions,
    proxy: bool,
) -> Option<Vec<(Conditions, Action)>> {
    let Action::Forward(main) = raw else {
        return None;
    };
    let to = |groups: Vec<WeightedTargetGroup>| {
        let mut f = main.clone();
        f.target_groups = groups;
        Action::Forward(f)
    };
    let canary_only = || {
        to(vec![WeightedTargetGroup {
            target_group: canary_group.to_string(),
            weight: 1,
        }])
    };
    let main_only = || Action::Forward(main.clone());
    let when = |name: &str, values: Vec<String>, regex: bool| {
        let mut c = extra.clone();
        c.headers.push(HeaderMatch {
            name: name.to_string(),
            values,
            regex,
        });
        c
    };
    // ingress-nginx compares the header's value exactly (balancer.lua); the proxy does too,
    // with an anchored expression. ALB can only compare without regard to case, with
    // wildcards (the registry says so).
    let exactly = |v: &str| {
        if proxy {
            (vec![format!("^{}$", regex::escape(v))], true)
        } else {
            (vec![v.to_string()], false)
        }
    };
    let s = &canary.spec;
    let mut out = Vec::new();
    if let Some(h) = &s.header {
        // In ingress-nginx's order: a value, else a pattern, else always/never. Every other
        // value falls through to the cookie and the weight.
        match (&s.header_value, &s.header_pattern) {
            (Some(v), _) => {
                let (values, regex) = exactly(v);
                out.push((when(h, values, regex), canary_only()));
            }
            (None, Some(p)) => {
                // ALB has no expression condition: not honoured there (the registry warns).
                if proxy {
                    out.push((when(h, vec![p.clone()], true), canary_only()));
                }
            }
            (None, None) => {
                let (values, regex) = exactly("always");
                out.push((when(h, values, regex), canary_only()));
                let (values, regex) = exactly("never");
                out.push((when(h, values, regex), main_only()));
            }
        }
    }
    if let (Some(c), true) = (&s.cookie, proxy) {
        let cookie_is = |v: &str| {
            vec![
                format!("{c}={v}"),
                format!("{c}={v};*"),
                format!("*; {c}={v}"),
                format!("*; {c}={v};*"),
            ]
        };
        out.push((when("cookie", cookie_is("always"), false), canary_only()));
        out.push((when("cookie", cookie_is("never"), false), main_only()));
    }
    // The weight: ingress-nginx picks the canary when random(total) <= weight.
    let (w, total) = (s.weight.min(s.weight_total), s.weight_total);
    let base = match (w, total - w) {
        (0, _) => main_only(),
        (_, 0) => canary_only(),
        (w, rest) => {
            let (w, rest) = fit_alb_weights(w, rest);
            let mut groups: Vec<WeightedTargetGroup> = main
                .target_groups
                .iter()
                .map(|g| WeightedTargetGroup {
                    target_group: g.target_group.clone(),
                    weight: g.weight * rest,
                })
                .collect();
            groups.push(WeightedTargetGroup {
                target_group: canary_group.to_string(),
                weight: w * main
                    .target_groups
                    .iter()
                    .map(|g| g.weight)
                    .sum::<u32>()
                    .max(1),
            });
            to(groups)
        }
    };
    out.push((extra.clone(), base));
    Some(out)
}

/// ALB weights go up to 999: larger ones are scaled down, keeping the split.
fn fit_alb_weights(a: u32, b: u32) -> (u32, u32) {
    let g = gcd(a, b);
    let (a, b) = (a / g, b / g);
    let max = a.max(b);
    if max <= 999 {
        return (a, b);
    }
    let scale = |x: u32| ((u64::from(x) * 999).div_ceil(u64::from(max)) as u32).max(1);
    (scale(a), scale(b))
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_keep_their_split() {
        assert_eq!(fit_alb_weights(10, 90), (1, 9));
        assert_eq!(fit_alb_weights(1, 999), (1, 999));
        assert_eq!(fit_alb_weights(1, 9999), (1, 999));
        assert_eq!(fit_alb_weights(5000, 5000), (1, 1));
    }
}
