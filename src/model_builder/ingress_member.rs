//! Reading one Ingress into a validated group member: its settings, its routes, its default
//! backend and TLS sections. Anything invalid here rejects the whole Ingress, so a half-read
//! Ingress is never deployed.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressTLS};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tollgate_contract::{
    Diagnostic, HostMatch, ObjectKind, ObjectRef, PathKind, PathMatch, Reason, Severity,
};

use super::annotation_registry::{self, OnObject, ProviderKind};
use super::annotations::{ingress_settings, IngressSettings};

/// A claimed, validated Ingress.
///
/// It owns what it read (the Ingress shared, not copied), so a run loop's [`BuildCache`]
/// (super::BuildCache) can keep it between builds for an Ingress that did not change.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub ingress: Arc<Ingress>,
    pub obj: ObjectRef,
    pub settings: IngressSettings,
    pub routes: Vec<MemberRoute>,
    pub default_backend: Option<IngressBackend>,
    pub tls: Vec<IngressTLS>,
    /// The canary of each route (`canary::attach`), empty when it has none.
    pub canaries: Vec<Option<Arc<super::canary::RouteCanary>>>,
}

/// One host/path pair of an Ingress.
#[derive(Debug, Clone)]
pub(crate) struct MemberRoute {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    pub backend: IngressBackend,
}

impl Member {
    pub(crate) fn namespace(&self) -> &str {
        &self.obj.namespace
    }

    /// The hosts its rules name, as written (`*.example.com` for a wildcard), deduplicated.
    pub(crate) fn rule_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .routes
            .iter()
            .filter_map(|r| match &r.host {
                Some(HostMatch::Exact(h)) => Some(h.clone()),
                Some(HostMatch::Wildcard(suffix)) => Some(format!("*.{suffix}")),
                None => None,
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Ordering among the members of one group: `group.order`, then oldest, then name.
    pub(crate) fn precedence_key(&self) -> (i32, Option<&Time>, &ObjectRef) {
        let ts = self.ingress.metadata.creation_timestamp.as_ref();
        (self.settings.group_order, ts, &self.obj)
    }
}

/// Sorts members by precedence. A missing creation timestamp (common in manifests) sorts as
/// the oldest, which leaves namespace/name to decide among manifest objects.
pub(crate) fn sort_by_precedence(members: &mut [&Arc<Member>]) {
    members.sort_by(|a, b| a.precedence_key().cmp(&b.precedence_key()));
}

fn error(obj: &ObjectRef, reason: Reason, message: String) -> Diagnostic {
    Diagnostic::new(
        Severity::Error,
        ObjectKind::Ingress,
        obj.namespace.clone(),
        obj.name.clone(),
        reason,
        message,
    )
}

/// Validates and reads an Ingress for one provider. Returns every problem found, not just
/// the first; what the annotation registry only warns about goes to `warnings`.
pub(crate) fn read_member(
    ing: &Arc<Ingress>,
    provider: ProviderKind,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Member, Vec<Diagnostic>> {
    let obj = ObjectRef::new(
        ing.metadata.namespace.as_deref().unwrap_or("default"),
        ing.metadata.name.as_deref().unwrap_or_default(),
    );
    let mut errors = Vec::new();
    if obj.name.is_empty() {
        errors.push(error(
            &obj,
            Reason::ObjectInvalid,
            "metadata.name is empty".into(),
        ));
    }
    let empty = Default::default();
    let annotations = ing.metadata.annotations.as_ref().unwrap_or(&empty);
    for f in annotation_registry::check(annotations, OnObject::Ingress, provider) {
        let d = Diagnostic::new(
            f.severity,
            ObjectKind::Ingress,
            obj.namespace.clone(),
            obj.name.clone(),
            f.reason,
            f.message,
        );
        if f.severity == Severity::Error {
            errors.push(d);
        } else {
            warnings.push(d);
        }
    }
    let mut settings = match ingress_settings(annotations) {
        Ok(s) => {
            for (name, why) in &s.unused {
                warnings.push(Diagnostic::new(
                    Severity::Warning,
                    ObjectKind::Ingress,
                    obj.namespace.clone(),
                    obj.name.clone(),
                    Reason::AnnotationIgnored,
                    format!("{name} {why}"),
                ));
            }
            Some(s)
        }
        Err(es) => {
            errors.extend(
                es.into_iter()
                    .map(|e| error(&obj, Reason::AnnotationInvalid, e.to_string())),
            );
            None
        }
    };
    // The proxy has no security group: `inbound-cidrs` becomes its allow-list, enforced per
    // path like ingress-nginx's (a refused client gets 403 rather than no connection).
    if let Some(s) = settings
        .as_mut()
        .filter(|_| provider == ProviderKind::Proxy)
    {
        let open = |c: &String| c == "0.0.0.0/0" || c == "::/0";
        if let Some(cidrs) = s.inbound_cidrs.clone().filter(|c| !c.iter().all(open)) {
            if s.allow_source_ranges.is_some() {
                errors.push(error(
                    &obj,
                    Reason::AnnotationUnsupported,
                    "alb.ingress.kubernetes.io/inbound-cidrs and an ingress-nginx allow-list on one Ingress: the proxy enforces one allow-list; keep one".into(),
                ));
            } else {
                s.allow_source_ranges = Some(cidrs);
            }
        }
    }
    // Every route of the Ingress shares its rate-limit zone, named after it.
    if let Some(rl) = settings.as_mut().and_then(|s| s.rate_limit.as_mut()) {
        std::sync::Arc::make_mut(rl).zone = obj.to_string();
    }
    let use_regex = settings.as_ref().is_some_and(|s| s.use_regex);
    let alb_regex = settings.as_ref().is_some_and(|s| s.use_regex_path_match);

    let spec = ing.spec.as_ref();
    let mut routes = Vec::new();
    for (ri, rule) in spec
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
            None => None,
            Some(h) => match parse_host(h) {
                Ok(hm) => Some(hm),
                Err(problem) => {
                    // Keep going: the paths of this rule may have problems of their own.
                    errors.push(error(
                        &obj,
                        Reason::HostInvalid,
                        format!("spec.rules[{ri}].host {h:?}: {problem}"),
                    ));
                    None
                }
            },
        };
        let Some(http) = rule.http.as_ref() else {
            continue;
        };
        for (pi, p) in http.paths.iter().enumerate() {
            let at = format!("spec.rules[{ri}].http.paths[{pi}]");
            let parsed = if alb_regex && p.path_type == "ImplementationSpecific" {
                parse_alb_regex(p.path.as_deref())
            } else {
                parse_path(p.path.as_deref(), &p.path_type, use_regex)
            };
            match parsed {
                Ok(path) => routes.push(MemberRoute {
                    host: host.clone(),
                    path,
                    backend: p.backend.clone(),
                }),
                Err(problem) => {
                    errors.push(error(&obj, Reason::PathInvalid, format!("{at}: {problem}")))
                }
            }
        }
    }
    let default_backend = spec.and_then(|s| s.default_backend.as_ref());
    let source_ranged = settings
        .as_ref()
        .is_some_and(|s| s.allow_source_ranges.is_some() || s.deny_source_ranges.is_some());
    if source_ranged && default_backend.is_some() {
        // The default backend answers whatever no rule matches, for every client: it cannot
        // be limited to a source range, so the Ingress is not served open.
        errors.push(error(
            &obj,
            Reason::AnnotationUnsupported,
            "spec.defaultBackend cannot be limited by allowlist-source-range/denylist-source-range; move it into a rule".into(),
        ));
    }
    let has_rules = spec
        .and_then(|s| s.rules.as_ref())
        .is_some_and(|r| !r.is_empty());
    if !has_rules && default_backend.is_none() {
        errors.push(error(
            &obj,
            Reason::NoRules,
            "the Ingress has neither spec.rules nor spec.defaultBackend".into(),
        ));
    }
    let tls = spec.and_then(|s| s.tls.as_deref()).unwrap_or(&[]);
    for (ti, t) in tls.iter().enumerate() {
        for h in t.hosts.iter().flatten() {
            if let Err(problem) = parse_host(h) {
                errors.push(error(
                    &obj,
                    Reason::HostInvalid,
                    format!("spec.tls[{ti}].hosts {h:?}: {problem}"),
                ));
            }
        }
    }

    if let Some(s) = &settings {
        routes = widen_by_annotated_conditions(routes, s, &obj, &mut errors);
        // ingress-nginx's server-alias: the Ingress's hosts' paths, served on each alias too.
        let mut aliased = Vec::new();
        for alias in &s.server_aliases {
            let Ok(host) = parse_host(alias) else {
                continue;
            };
            for r in routes.iter().filter(|r| r.host.is_some()) {
                let copy = MemberRoute {
                    host: Some(host.clone()),
                    ..r.clone()
                };
                if !routes
                    .iter()
                    .chain(&aliased)
                    .any(|x: &MemberRoute| x.host == copy.host && x.path == copy.path)
                {
                    aliased.push(copy);
                }
            }
        }
        routes.extend(aliased);
    }

    match settings {
        Some(settings) if errors.is_empty() => Ok(Member {
            ingress: ing.clone(),
            obj,
            settings,
            routes,
            default_backend: default_backend.cloned(),
            tls: tls.to_vec(),
            canaries: Vec::new(),
        }),
        _ => Err(errors),
    }
}

/// Applies the `host-header` and `path-pattern` values of `conditions.<backend>` as the AWS
/// Load Balancer Controller does: they are added to the rule's own host and path (one ALB
/// condition each, its values ORed). Here that is one route per (host, path) pair, which
/// both providers understand: hosts are the rule's host (if any) plus the annotation's;
/// paths the rule's path plus the annotation's exact paths.
fn widen_by_annotated_conditions(
    routes: Vec<MemberRoute>,
    settings: &IngressSettings,
    obj: &ObjectRef,
    errors: &mut Vec<Diagnostic>,
) -> Vec<MemberRoute> {
    let mut out = Vec::with_capacity(routes.len());
    for r in routes {
        // A host is matched by values or by expressions, not both (the AWS Load Balancer
        // Controller refuses the mix too, buildRuleConditions).
        if let Some((name, c)) = r.backend.service.as_ref().and_then(|s| {
            settings
                .conditions
                .get(&s.name)
                .map(|c| (s.name.as_str(), c))
        }) {
            if !c.extra.host_regexes.is_empty() && (r.host.is_some() || !c.hosts.is_empty()) {
                errors.push(error(
                    obj,
                    Reason::AnnotationInvalid,
                    format!("conditions.{name}: host-header regexValues on a rule that also names a host: a host is matched by values or by expressions, not both"),
                ));
                continue;
            }
        }
        let Some(cond) = r
            .backend
            .service
            .as_ref()
            .and_then(|s| settings.conditions.get(&s.name))
            .filter(|c| !c.hosts.is_empty() || !c.paths.is_empty() || !c.path_regexes.is_empty())
        else {
            out.push(r);
            continue;
        };
        let name = r
            .backend
            .service
            .as_ref()
            .map(|s| s.name.as_str())
            .unwrap_or_default();
        // A rule without a host matched every host; host-header values narrow it to theirs.
        let mut hosts: Vec<Option<HostMatch>> = if r.host.is_none() && !cond.hosts.is_empty() {
            Vec::new()
        } else {
            vec![r.host.clone()]
        };
        for h in &cond.hosts {
            match parse_host(h) {
                Ok(hm) if !hosts.contains(&Some(hm.clone())) => hosts.push(Some(hm)),
                Ok(_) => {}
                Err(problem) => errors.push(error(
                    obj,
                    Reason::AnnotationInvalid,
                    format!("conditions.{name}: host-header {h:?}: {problem}"),
                )),
            }
        }
        let mut paths = vec![r.path.clone()];
        for p in &cond.paths {
            let extra = PathMatch {
                kind: if p.contains(['*', '?']) {
                    PathKind::Glob
                } else {
                    PathKind::Exact
                },
                path: p.clone(),
            };
            if !paths.contains(&extra) {
                paths.push(extra);
            }
        }
        for p in &cond.path_regexes {
            let extra = PathMatch {
                kind: PathKind::AlbRegex,
                path: p.clone(),
            };
            if !paths.contains(&extra) {
                paths.push(extra);
            }
        }
        for h in &hosts {
            for p in &paths {
                out.push(MemberRoute {
                    host: h.clone(),
                    path: p.clone(),
                    backend: r.backend.clone(),
                });
            }
        }
    }
    out
}

/// A host as the Ingress API accepts it: a lower-case DNS-1123 subdomain, optionally
/// prefixed by `*.` (a wildcard covers exactly one label). IP addresses are not hosts.
pub fn parse_host(h: &str) -> Result<HostMatch, String> {
    let (wild, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h),
    };
    if name.is_empty() || name.len() > 253 {
        return Err("must be a DNS name of 1 to 253 characters".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "label {label:?} is not 1 to 63 lower-case letters, digits or '-' (a wildcard is allowed only as the whole first label)"
            ));
        }
    }
    if name
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("an IP address is not allowed as a host".into());
    }
    Ok(if wild {
        HostMatch::Wildcard(name.to_string())
    } else {
        HostMatch::Exact(name.to_string())
    })
}

/// A path with its type. `ImplementationSpecific` is `Prefix`, a regular expression when
/// the Ingress sets ingress-nginx's `use-regex` (or `rewrite-target`), or an ALB path
/// pattern when it holds `*` or `?` (the AWS Load Balancer Controller passes such paths to
/// ALB as they are; its documentation writes `path: /*`).
pub fn parse_path(
    path: Option<&str>,
    path_type: &str,
    use_regex: bool,
) -> Result<PathMatch, String> {
    let path = path.unwrap_or("/");
    let kind = match path_type {
        "Exact" => PathKind::Exact,
        "Prefix" if !use_regex => PathKind::Prefix,
        // ingress-nginx applies use-regex to Prefix paths too.
        "Prefix" | "ImplementationSpecific" if use_regex => PathKind::Regex,
        "ImplementationSpecific" if path.contains(['*', '?']) => PathKind::Glob,
        "ImplementationSpecific" => PathKind::Prefix,
        "" => return Err("pathType is required (Exact, Prefix or ImplementationSpecific)".into()),
        other => {
            return Err(format!(
                "pathType {other:?} is not Exact, Prefix or ImplementationSpecific"
            ))
        }
    };
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    match kind {
        // parse_path never yields it: parse_alb_regex does.
        PathKind::AlbRegex => {}
        PathKind::Regex => {
            if path
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == ';' || c == '\'' || c == '"')
            {
                return Err(format!(
                    "path {path:?} contains whitespace, a control character, ';' or a quote"
                ));
            }
            regex::Regex::new(&format!("^(?:{path})"))
                .map_err(|e| format!("path {path:?} is not a valid regular expression: {e}"))?;
        }
        PathKind::Glob => {
            // ALB's path-pattern characters (its documented set, minus the quotes), and its
            // 128-character limit.
            let ok = only_letters_digits_and(path, "/-._~$@:+&*?");
            if !ok {
                return Err(format!(
                    "path {path:?}: an ALB path pattern may hold only letters, digits and - . _ ~ $ @ : + & / * ?"
                ));
            }
            if path.len() > 128 {
                return Err(format!(
                    "path {path:?} is longer than an ALB path pattern's 128 characters"
                ));
            }
        }
        PathKind::Exact | PathKind::Prefix => {
            // RFC 3986 path characters, minus the glob characters ALB path patterns give
            // meaning to and the quoting characters configuration injection relies on.
            let ok = only_letters_digits_and(path, "/-._~%!$&()+,=:@");
            if !ok {
                return Err(format!(
                    "path {path:?} may hold only letters, digits and - . _ ~ % ! $ & ( ) + , = : @ /"
                ));
            }
            if path.contains("//") {
                return Err(format!("path {path:?} contains an empty segment '//'"));
            }
        }
    }
    Ok(PathMatch {
        kind,
        path: path.to_string(),
    })
}

/// An `ImplementationSpecific` path under `alb.ingress.kubernetes.io/use-regex-path-match`:
/// the AWS Load Balancer Controller drops the first character (the `/` a path must start
/// with) and passes the rest as the expression (`/^/api/(.+)$` → `^/api/(.+)$`;
/// model_build_listener_rules.go).
pub fn parse_alb_regex(path: Option<&str>) -> Result<PathMatch, String> {
    let path = path.unwrap_or("/");
    let Some(expr) = path.strip_prefix('/') else {
        return Err(format!("path {path:?} must start with '/'"));
    };
    if expr.is_empty() || expr.len() > 128 {
        return Err(format!(
            "path {path:?}: the expression after the leading '/' must hold 1 to 128 characters"
        ));
    }
    regex::Regex::new(expr).map_err(|e| {
        format!("path {path:?}: {expr:?} is not a regular expression Tollgate can evaluate (look-around and back-references are not supported): {e}")
    })?;
    Ok(PathMatch {
        kind: PathKind::AlbRegex,
        path: expr.to_string(),
    })
}

/// Whether `path` holds only ASCII letters, digits and the characters of `extra`.
fn only_letters_digits_and(path: &str, extra: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("foo.bar.com"),
            Ok(HostMatch::Exact("foo.bar.com".into()))
        );
        assert_eq!(
            parse_host("*.bar.com"),
            Ok(HostMatch::Wildcard("bar.com".into()))
        );
        assert!(parse_host("foo.*.com").is_err());
        assert!(parse_host("Foo.com").is_err());
        assert!(parse_host("10.0.0.1").is_err());
        assert!(parse_host("-a.com").is_err());
        assert!(parse_host("*").is_err());
    }

    #[test]
    fn alb_path_patterns() {
        for p in ["/*", "/api/*", "/img/*.png", "/v?/x"] {
            let m = parse_path(Some(p), "ImplementationSpecific", false).expect(p);
            assert_eq!(m.kind, PathKind::Glob, "{p}");
        }
        // With use-regex the same text is a regular expression, as ingress-nginx reads it.
        assert_eq!(
            parse_path(Some("/api/.*"), "ImplementationSpecific", true)
                .unwrap()
                .kind,
            PathKind::Regex
        );
        assert!(parse_path(Some("/a/*"), "Prefix", false).is_err());
        assert!(parse_path(Some("/a/*'x"), "ImplementationSpecific", false).is_err());
        let long = format!("/{}*", "a".repeat(128));
        assert!(parse_path(Some(&long), "ImplementationSpecific", false).is_err());
    }

    #[test]
    fn alb_regular_expressions() {
        let m = parse_alb_regex(Some("/^/api/(.+)$")).unwrap();
        assert_eq!(
            (m.kind, m.path.as_str()),
            (PathKind::AlbRegex, "^/api/(.+)$")
        );
        // Look-around is not what Rust's regex evaluates: refused, not matched otherwise.
        assert!(parse_alb_regex(Some("/^/(?!admin)")).is_err());
        assert!(parse_alb_regex(Some("api")).is_err());
        assert!(parse_alb_regex(Some("/")).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path(Some("/a"), "ImplementationSpecific", false)
                .unwrap()
                .kind,
            PathKind::Prefix
        );
        assert_eq!(
            parse_path(Some("/a(/|$)(.*)"), "ImplementationSpecific", true)
                .unwrap()
                .kind,
            PathKind::Regex
        );
        assert!(parse_path(Some("a"), "Prefix", false).is_err());
        assert!(parse_path(Some("/a b"), "Prefix", false).is_err());
        assert!(parse_path(Some("/a*"), "Prefix", false).is_err());
        assert!(parse_path(Some("/a"), "", false).is_err());
        assert!(parse_path(Some("/a("), "Prefix", true).is_err());
        assert!(parse_path(Some("/a;{}"), "Prefix", true).is_err());
    }
}
