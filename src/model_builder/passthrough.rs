//! ingress-nginx `ssl-passthrough`: which hosts' TLS the proxy passes through untouched, and
//! to which target group.
//!
//! As ingress-nginx's controller builds its passthrough list (internal/ingress/controller/
//! controller.go, `getConfiguration`): a host is passed through when an Ingress naming it
//! has the annotation, and the connection goes to the backend of the host's `/` path —
//! whichever Ingress won that path; other paths cannot be told apart in a TLS stream and are
//! named in a warning. The server name is matched exactly (its TCP proxy has no wildcards).
//! ingress-nginx dials the Service's cluster IP; Tollgate dials the `/` path's endpoints,
//! as it does for every route unless `service-upstream` says otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;

use tollgate_contract::{
    Action, Diagnostic, HostMatch, Listener, PathKind, Reason, Severity, TlsPassthrough,
};

use super::ingress_member::Member;
use super::{ingress_diag, BuildOptions, ProviderKind};

/// The passthrough hosts of a load balancer built from `members` with `listeners`.
pub(crate) fn tls_passthrough(
    members: &[&Arc<Member>],
    listeners: &[Listener],
    opts: &BuildOptions,
    diags: &mut Vec<Diagnostic>,
) -> Vec<TlsPassthrough> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for m in members.iter().filter(|m| m.settings.ssl_passthrough) {
        if opts.provider != ProviderKind::Proxy {
            continue; // the registry's fail-safe rules speak for the AWS provider
        }
        for r in &m.routes {
            let host = match &r.host {
                Some(HostMatch::Exact(h)) => h.to_ascii_lowercase(),
                Some(HostMatch::Wildcard(_)) | None => {
                    diags.push(ingress_diag(
                        m,
                        Severity::Warning,
                        Reason::AnnotationUnsupported,
                        "ssl-passthrough needs an exact host: a rule without one, or with a wildcard, is served with TLS terminated".into(),
                    ));
                    continue;
                }
            };
            if r.path.path != "/" || r.path.kind == PathKind::Regex {
                diags.push(ingress_diag(
                    m,
                    Severity::Warning,
                    Reason::AnnotationUnsupported,
                    format!("ssl-passthrough passes {host} to its '/' path's backend; path {} cannot be told apart inside TLS and is not reached over HTTPS", r.path.path),
                ));
                continue;
            }
            match slash_group(listeners, &host) {
                Some(g) => {
                    out.entry(host).or_insert(g);
                }
                None => diags.push(ingress_diag(
                    m,
                    Severity::Warning,
                    Reason::AnnotationUnsupported,
                    format!("ssl-passthrough: {host}'s '/' path does not forward to one Service, so its TLS is terminated"),
                )),
            }
        }
    }
    out.into_iter()
        .map(|(host, target_group)| TlsPassthrough { host, target_group })
        .collect()
}

/// The one target group the host's `/` rule forwards to, looked up in the HTTPS listener
/// first (its plain-HTTP rule may redirect).
fn slash_group(listeners: &[Listener], host: &str) -> Option<String> {
    let mut ordered: Vec<&Listener> = listeners.iter().collect();
    ordered.sort_by_key(|l| l.port != 443);
    for l in ordered {
        for rule in l.rules.iter() {
            let c = &rule.conditions;
            let host_ok =
                matches!(&c.host, Some(HostMatch::Exact(h)) if h.eq_ignore_ascii_case(host));
            let path_ok = c
                .path
                .as_ref()
                .is_some_and(|p| p.path == "/" && p.kind != PathKind::Regex);
            let plain = c.headers.is_empty()
                && c.query.is_empty()
                && c.methods.is_empty()
                && c.source_ips.is_empty();
            if !(host_ok && path_ok && plain) {
                continue;
            }
            if let Action::Forward(f) = &rule.action {
                if let [only] = f.target_groups.as_slice() {
                    return Some(only.target_group.clone());
                }
                return None;
            }
        }
    }
    None
}
