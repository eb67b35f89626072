//! The AWS diff: desired ALB stacks against the observed inventory → ordered changes.
//!
//! Pure and printable (`tollgate plan --provider aws`). Order: target groups, load balancers,
//! listeners, certificates, rules, targets; deletions after, in reverse (rules, listeners,
//! load balancers, then target groups no rule uses any more). Creating before deleting means
//! a route is never missing while it moves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;
use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity, WebAcl};

use crate::alb_stack::{
    AlbAction, AlbStack, BackendGroupUse, ListenerSpec, LoadBalancerSpec, RuleSpec,
    SecurityGroupSpec, TargetGroupSpec, DISCOVERED_CERTIFICATE, SECRET_CERTIFICATE, TAG_CLUSTER,
    TAG_MANAGED,
};
use crate::inventory::{
    AcmCertificate, BackendRule, Inventory, ObservedListener, ObservedLoadBalancer,
    ObservedTargetGroup,
};
use crate::priorities::{place_rules, Placement};

/// Refers to a resource that may not exist yet: by ARN when observed, by name when the plan
/// creates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "by", content = "value")]
pub enum Ref {
    Arn(String),
    Name(String),
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Arn(a) => f.write_str(a),
            Ref::Name(n) => write!(f, "(new) {n}"),
        }
    }
}

/// A listener, by its load balancer and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerRef {
    pub load_balancer: Ref,
    pub port: u16,
}

/// One mutating API call (or a small group of the same call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "change")]
pub enum Change {
    /// Imports a Secret's certificate into ACM; with `arn`, re-imports it under that ARN (a
    /// rotation: listeners keep pointing at the same certificate).
    ImportCertificate {
        secret: String,
        fingerprint: String,
        arn: Option<String>,
    },
    /// Creates the security group Tollgate manages for a load balancer.
    CreateSecurityGroup {
        stack: String,
        spec: SecurityGroupSpec,
    },
    /// Opens (port, CIDR) pairs; `group` is an ID once the group exists.
    AuthorizeSecurityGroupIngress {
        group: Ref,
        rules: Vec<(u16, String)>,
    },
    RevokeSecurityGroupIngress {
        id: String,
        rules: Vec<(u16, String)>,
    },
    CreateTargetGroup {
        spec: TargetGroupSpec,
    },
    ModifyTargetGroup {
        arn: String,
        spec: TargetGroupSpec,
    },
    CreateLoadBalancer {
        stack: String,
        name: String,
    },
    ModifyLoadBalancerAttributes {
        arn: String,
        attributes: BTreeMap<String, String>,
    },
    /// Puts the load balancer in the stack's security groups (resolved when applied: the
    /// managed group may be created by the same plan).
    SetSecurityGroups {
        arn: String,
        stack: String,
        groups: Vec<String>,
    },
    SetSubnets {
        arn: String,
        subnets: Vec<String>,
    },
    SetIpAddressType {
        arn: String,
        ip_address_type: String,
    },
    /// Tags of a load balancer or target group reconciled in place: `add` (new or changed
    /// values, never the cluster tag) then `remove` (keys Tollgate set before and no longer
    /// wants). Keys Tollgate never set are not touched.
    SetTags {
        arn: String,
        add: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    CreateListener {
        listener: ListenerRef,
        spec: ListenerSpec,
    },
    ModifyListener {
        arn: String,
        spec: ListenerSpec,
    },
    CreateRule {
        listener: ListenerRef,
        priority: u32,
        rule: RuleSpec,
    },
    ModifyRule {
        arn: String,
        rule: RuleSpec,
    },
    SetRulePriority {
        arn: String,
        from: u32,
        to: u32,
    },
    RegisterTargets {
        target_group: Ref,
        targets: Vec<(String, u16)>,
    },
    DeregisterTargets {
        arn: String,
        targets: Vec<(String, u16)>,
    },
    DeleteRule {
        arn: String,
    },
    DeleteListener {
        arn: String,
    },
    DeleteLoadBalancer {
        arn: String,
        name: String,
    },
    DeleteTargetGroup {
        arn: String,
        name: String,
    },
    DeleteSecurityGroup {
        id: String,
        name: String,
    },
    /// Deletes an imported certificate no listener uses any more.
    DeleteCertificate {
        arn: String,
        secret: String,
    },
    /// Creates the cluster's backend security group (before any stack: every load
    /// balancer of the cluster may carry it).
    CreateBackendSecurityGroup {
        spec: SecurityGroupSpec,
    },
    /// Admits the backend group on a target's security group (before any stack, so a
    /// target is reachable as soon as it is registered).
    AuthorizeBackendRule {
        rule: BackendRule,
    },
    /// Removes a rule no target needs (after every stack: deregistered first); `source` is
    /// the backend group it admits.
    RevokeBackendRule {
        rule: BackendRule,
        source: String,
    },
    /// Deletes the backend group once no load balancer carries it (after every stack).
    DeleteBackendSecurityGroup {
        id: String,
        name: String,
    },
    /// Associates the web ACL `acl` (an ARN) with the load balancer, replacing any other
    /// (WAFv2 `AssociateWebACL` replaces); `None` removes the association. Planned with the
    /// load balancer, before its listeners, so it never serves without the ACL.
    SetWebAcl {
        load_balancer: Ref,
        acl: Option<String>,
    },
    /// Sets listener attributes (only the ones asked for; others keep their values, as
    /// with the AWS Load Balancer Controller).
    ModifyListenerAttributes {
        listener: ListenerRef,
        attributes: BTreeMap<String, String>,
    },
    /// Protects the load balancer with Shield Advanced (before its listeners).
    CreateShieldProtection {
        load_balancer: Ref,
    },
    /// Removes the protection Tollgate made.
    DeleteShieldProtection {
        load_balancer: Ref,
        id: String,
    },
}

impl Change {
    /// `+` create, `~` change, `-` delete, as a terraform plan prints them.
    pub fn symbol(&self) -> char {
        match self {
            Change::ImportCertificate { arn: None, .. }
            | Change::CreateSecurityGroup { .. }
            | Change::AuthorizeSecurityGroupIngress { .. }
            | Change::CreateTargetGroup { .. }
            | Change::CreateLoadBalancer { .. }
            | Change::CreateListener { .. }
            | Change::CreateRule { .. }
            | Change::CreateBackendSecurityGroup { .. }
            | Change::AuthorizeBackendRule { .. }
            | Change::CreateShieldProtection { .. }
            | Change::RegisterTargets { .. } => '+',
            Change::DeleteRule { .. }
            | Change::DeleteListener { .. }
            | Change::DeleteLoadBalancer { .. }
            | Change::DeleteTargetGroup { .. }
            | Change::DeleteCertificate { .. }
            | Change::DeleteSecurityGroup { .. }
            | Change::RevokeSecurityGroupIngress { .. }
            | Change::RevokeBackendRule { .. }
            | Change::DeleteBackendSecurityGroup { .. }
            | Change::DeleteShieldProtection { .. }
            | Change::DeregisterTargets { .. } => '-',
            _ => '~',
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.symbol();
        match self {
            Change::ImportCertificate {
                secret,
                fingerprint,
                arn,
            } => match arn {
                None => write!(
                    f,
                    "{s} ACM certificate from Secret {secret} ({fingerprint:.12})"
                ),
                Some(a) => write!(
                    f,
                    "{s} ACM certificate {a}: re-import Secret {secret} ({fingerprint:.12})"
                ),
            },
            Change::DeleteCertificate { arn, secret } => {
                write!(f, "{s} ACM certificate {arn} (Secret {secret})")
            }
            Change::CreateSecurityGroup { stack, spec } => {
                write!(f, "{s} security group {} for {stack}", spec.name)
            }
            Change::AuthorizeSecurityGroupIngress { group, rules } => {
                write!(f, "{s} security group {group}: allow {}", rules_text(rules))
            }
            Change::RevokeSecurityGroupIngress { id, rules } => {
                write!(f, "{s} security group {id}: allow {}", rules_text(rules))
            }
            Change::DeleteSecurityGroup { id, name } => {
                write!(f, "{s} security group {name} ({id})")
            }
            Change::CreateBackendSecurityGroup { spec } => {
                write!(f, "{s} backend security group {}", spec.name)
            }
            Change::DeleteBackendSecurityGroup { id, name } => {
                write!(f, "{s} backend security group {name} ({id})")
            }
            Change::AuthorizeBackendRule { rule } | Change::RevokeBackendRule { rule, .. } => {
                write!(
                    f,
                    "{s} security group {}: allow tcp/{}-{} from the backend security group",
                    rule.group, rule.from, rule.to
                )
            }
            Change::SetSecurityGroups { arn, groups, .. } => {
                write!(
                    f,
                    "{s} load balancer {arn} security groups {}",
                    groups.join(",")
                )
            }
            Change::SetSubnets { arn, subnets } => {
                write!(f, "{s} load balancer {arn} subnets {}", subnets.join(","))
            }
            Change::SetIpAddressType {
                arn,
                ip_address_type,
            } => write!(
                f,
                "{s} load balancer {arn} IP address type {ip_address_type}"
            ),
            Change::SetTags { arn, add, remove } => {
                let add: Vec<String> = add.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "{s} tags of {arn}: add [{}] remove [{}]",
                    add.join(","),
                    remove.join(",")
                )
            }
            Change::CreateTargetGroup { spec } => write!(
                f,
                "{s} target group {} ({} {} {} port {})",
                spec.name, spec.target_type, spec.protocol, spec.protocol_version, spec.port
            ),
            Change::ModifyTargetGroup { arn, .. } => {
                write!(f, "{s} target group {arn}: health check / attributes")
            }
            Change::CreateLoadBalancer { stack, name } => {
                write!(f, "{s} load balancer {name} for {stack}")
            }
            Change::SetWebAcl { load_balancer, acl } => match acl {
                Some(a) => write!(f, "{s} load balancer {load_balancer} web ACL {a}"),
                None => write!(f, "{s} load balancer {load_balancer} web ACL removed"),
            },
            Change::CreateShieldProtection { load_balancer } => {
                write!(f, "{s} Shield Advanced protection of {load_balancer}")
            }
            Change::ModifyListenerAttributes {
                listener,
                attributes,
            } => write!(
                f,
                "{s} listener {}:{} attributes {attributes:?}",
                listener.load_balancer, listener.port
            ),
            Change::DeleteShieldProtection { load_balancer, id } => {
                write!(f, "{s} Shield Advanced protection {id} of {load_balancer}")
            }
            Change::ModifyLoadBalancerAttributes { arn, attributes } => {
                write!(f, "{s} load balancer {arn} attributes {attributes:?}")
            }
            Change::CreateListener { listener, spec } => write!(
                f,
                "{s} listener {} {}:{} ({} certificates)",
                spec.protocol,
                listener.load_balancer,
                listener.port,
                spec.certificates.len()
            ),
            Change::ModifyListener { arn, .. } => write!(
                f,
                "{s} listener {arn}: default action / certificates / policy"
            ),
            Change::CreateRule {
                listener,
                priority,
                rule,
            } => write!(
                f,
                "{s} rule {}:{} priority {priority}: {}",
                listener.load_balancer,
                listener.port,
                describe(rule)
            ),
            Change::ModifyRule { arn, rule } => write!(f, "{s} rule {arn}: {}", describe(rule)),
            Change::SetRulePriority { arn, from, to } => {
                write!(f, "{s} rule {arn} priority {from} → {to}")
            }
            Change::RegisterTargets {
                target_group,
                targets,
            } => write!(
                f,
                "{s} register {} targets in {target_group}",
                targets.len()
            ),
            Change::DeregisterTargets { arn, targets } => {
                write!(f, "{s} deregister {} targets from {arn}", targets.len())
            }
            Change::DeleteRule { arn } => write!(f, "{s} rule {arn}"),
            Change::DeleteListener { arn } => write!(f, "{s} listener {arn}"),
            Change::DeleteLoadBalancer { name, .. } => write!(f, "{s} load balancer {name}"),
            Change::DeleteTargetGroup { name, .. } => write!(f, "{s} target group {name}"),
        }
    }
}

fn rules_text(rules: &[(u16, String)]) -> String {
    rules
        .iter()
        .map(|(p, c)| format!("tcp/{p} from {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The security group IDs a load balancer of `spec` should have: the managed group's, or
/// the given IDs and `Name` tags (looked up in [`Inventory::ids_by_name`]). `Err` names what
/// is missing.
pub fn resolve_security_groups(
    spec: &LoadBalancerSpec,
    stack: &str,
    inv: &Inventory,
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = if spec.security_groups.is_empty() {
        let managed = inv
            .security_groups
            .iter()
            .find(|g| g.stack == stack)
            .ok_or_else(|| format!("the managed security group {NOT_CREATED}"))?;
        vec![managed.id.clone()]
    } else {
        spec.security_groups
            .iter()
            .map(|g| resolve_id(g, "sg-", "sg", inv))
            .collect::<Result<_, _>>()?
    };
    match &spec.backend_security_group {
        Some(BackendGroupUse::Managed(_)) => out.push(
            inv.backend_security_group
                .as_ref()
                .map(|g| g.id.clone())
                .ok_or_else(|| format!("the backend security group {NOT_CREATED}"))?,
        ),
        Some(BackendGroupUse::Given(id)) => out.push(id.clone()),
        None => {}
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Forwards to a target group by name (`targetGroupName`) get its ARN, as looked up into
/// [`Inventory::ids_by_name`]; one not found is reported and left named (its rule then fails
/// to apply, and is planned again).
fn resolve_target_group_names(
    l: &mut ListenerSpec,
    stack: &str,
    observed: &Inventory,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let actions = l
        .rules
        .iter_mut()
        .map(|r| &mut r.action)
        .chain(std::iter::once(&mut l.default_action));
    for a in actions {
        let AlbAction::Forward { target_groups, .. } = a else {
            continue;
        };
        let mut changed = false;
        for (tg, _) in target_groups.iter_mut() {
            let Some(name) = tg.strip_prefix(tollgate_contract::TARGET_GROUP_NAME) else {
                continue;
            };
            match observed.ids_by_name.get(&format!("tg:{name}")) {
                Some(arn) => {
                    *tg = arn.clone();
                    changed = true;
                }
                None => diagnostics.push(Diagnostic::new(
                    Severity::Error,
                    ObjectKind::LoadBalancer,
                    "",
                    stack.to_string(),
                    Reason::AnnotationInvalid,
                    format!("target group named {name:?} (targetGroupName) not found"),
                )),
            }
        }
        if changed {
            target_groups.sort();
        }
    }
}

/// Ends the reason a security group cannot be resolved when this plan creates it.
pub const NOT_CREATED: &str = "(not created yet)";

/// The subnet IDs asked for (`None`: discovered by tags when the load balancer is created).
pub fn resolve_subnets(
    spec: &LoadBalancerSpec,
    inv: &Inventory,
) -> Result<Option<Vec<String>>, String> {
    if spec.subnets.is_empty() {
        return Ok(None);
    }
    let mut out: Vec<String> = spec
        .subnets
        .iter()
        .map(|s| resolve_id(s, "subnet-", "subnet", inv))
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(Some(out))
}

fn resolve_id(v: &str, id_prefix: &str, kind: &str, inv: &Inventory) -> Result<String, String> {
    if v.starts_with(id_prefix) {
        return Ok(v.to_string());
    }
    inv.ids_by_name
        .get(&format!("{kind}:{v}"))
        .cloned()
        .ok_or_else(|| format!("{kind} named {v:?}"))
}

fn describe(rule: &RuleSpec) -> String {
    let conds: Vec<String> = rule
        .conditions
        .iter()
        .map(|c| match c {
            crate::alb_stack::AlbCondition::HostHeader(v) => format!("host {}", v.join("|")),
            crate::alb_stack::AlbCondition::PathPattern(v) => format!("path {}", v.join("|")),
            crate::alb_stack::AlbCondition::PathRegex(v) => format!("path ~ {}", v.join("|")),
            crate::alb_stack::AlbCondition::HostHeaderRegex(v) => format!("host ~ {}", v.join("|")),
            crate::alb_stack::AlbCondition::HttpHeaderRegex(name, v) => {
                format!("header {name} ~ {}", v.join("|"))
            }
            crate::alb_stack::AlbCondition::HttpRequestMethod(v) => {
                format!("method {}", v.join("|"))
            }
            crate::alb_stack::AlbCondition::SourceIp(v) => format!("source {}", v.join("|")),
            crate::alb_stack::AlbCondition::HttpHeader(name, v) => {
                format!("header {name}: {}", v.join("|"))
            }
            crate::alb_stack::AlbCondition::QueryString(pairs) => format!(
                "query {}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}={v}", k.as_deref().unwrap_or("*")))
                    .collect::<Vec<_>>()
                    .join("|")
            ),
        })
        .collect();
    let action = match &rule.action {
        AlbAction::Forward { target_groups, .. } => format!(
            "forward {}",
            target_groups
                .iter()
                .map(|(n, w)| format!("{n}×{w}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        AlbAction::Redirect {
            protocol,
            port,
            status_code,
            ..
        } => format!("redirect {protocol}:{port} {status_code}"),
        AlbAction::FixedResponse { status_code, .. } => format!("fixed {status_code}"),
    };
    format!("{} → {action}", conds.join(" & "))
}

/// The ordered changes, and what could not be planned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub diagnostics: Vec<Diagnostic>,
    /// Stacks this plan leaves alone although they differ from what is desired (held, or
    /// not deletable): not converged, so their deleted Ingresses keep the finalizer.
    pub blocked_stacks: BTreeSet<String>,
}

impl Plan {
    /// Whether applying the plan would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(f, "No changes. AWS matches the desired state.");
        }
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        let count = |sym| self.changes.iter().filter(|c| c.symbol() == sym).count();
        writeln!(
            f,
            "Plan: {} to add, {} to change, {} to destroy.",
            count('+'),
            count('~'),
            count('-')
        )
    }
}

#[derive(Default)]
struct Phases {
    certificates: Vec<Change>,
    security_groups: Vec<Change>,
    target_groups: Vec<Change>,
    load_balancers: Vec<Change>,
    listeners: Vec<Change>,
    rules: Vec<Change>,
    targets: Vec<Change>,
    delete_rules: Vec<Change>,
    delete_listeners: Vec<Change>,
    delete_load_balancers: Vec<Change>,
    delete_target_groups: Vec<Change>,
    delete_certificates: Vec<Change>,
    delete_security_groups: Vec<Change>,
}

fn is_subset(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// The certificate ARNs of a resolved listener certificate list: a Secret still shown as
/// `secret:<ns>/<name>@<fingerprint>` becomes the ARN of its import once there is one.
/// Anything unresolved is left out. Order kept (the first is the default), duplicates dropped.
pub fn listener_arns(certs: &[String], inv: &Inventory) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in certs {
        let arn = if let Some(secret) = secret_of(c) {
            inv.imported_certificate(secret).map(|i| i.arn.clone())
        } else if c.starts_with(DISCOVERED_CERTIFICATE) {
            None
        } else {
            Some(c.clone())
        };
        if let Some(a) = arn {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// The Secret (`namespace/name`) of a listener certificate written
/// `secret:<namespace>/<name>@<fingerprint>`.
fn secret_of(certificate: &str) -> Option<&str> {
    let rest = certificate.strip_prefix(SECRET_CERTIFICATE)?;
    Some(rest.rsplit_once('@').map_or(rest, |(s, _)| s))
}

/// The ACM certificate for `host`: one naming the host exactly beats a wildcard that covers
/// it; among equals the lowest ARN, so the choice is stable.
pub fn discover_certificate<'a>(host: &str, certs: &'a [AcmCertificate]) -> Option<&'a str> {
    let host = host.to_ascii_lowercase();
    let named = |name: &str| {
        certs
            .iter()
            .filter(|c| c.names.iter().any(|n| n == name))
            .map(|c| c.arn.as_str())
            .min()
    };
    named(&host).or_else(|| {
        let (_, parent) = host.split_once('.')?;
        if host.starts_with("*.") {
            return None;
        }
        named(&format!("*.{parent}"))
    })
}

/// A listener's certificates as ELBv2 will hold them: ACM discovery done (a host with no
/// certificate is reported), Secrets resolved to their imports where imported (a Secret not
/// imported yet stays `secret:…` and is resolved when the plan is applied).
fn resolve_certificates(
    l: &ListenerSpec,
    stack: &str,
    observed: &Inventory,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in &l.certificates {
        let resolved = if let Some(host) = c.strip_prefix(DISCOVERED_CERTIFICATE) {
            match &observed.acm_certificates {
                // ACM not read (offline plan): show what would be looked up.
                None => Some(c.clone()),
                Some(acm) => match discover_certificate(host, acm) {
                    Some(arn) => Some(arn.to_string()),
                    None => {
                        diagnostics.push(Diagnostic::new(
                            Severity::Warning,
                            ObjectKind::LoadBalancer,
                            "",
                            stack.to_string(),
                            Reason::CertificateNotFound,
                            format!(
                                "listener {}: no issued ACM certificate covers host {host}",
                                l.port
                            ),
                        ));
                        None
                    }
                },
            }
        } else if let Some(secret) = secret_of(c) {
            match observed.imported_certificate(secret) {
                Some(i) => Some(i.arn.clone()),
                None => Some(c.clone()),
            }
        } else {
            Some(c.clone())
        };
        if let Some(r) = resolved {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

/// Whether a listener's certificates differ: the default (first) certificate, then the rest
/// as a set (ELBv2 does not order them).
fn certificates_differ(observed: &[String], wanted: &[String]) -> bool {
    let rest = |v: &[String]| -> BTreeSet<String> { v.iter().skip(1).cloned().collect() };
    observed.first() != wanted.first() || rest(observed) != rest(wanted)
}

/// The index of the first element with each key: a later one with the same key is a
/// duplicate (see [`is_duplicate`]), found in one pass over many.
fn first_by<'a, T>(all: &'a [T], key: impl Fn(&'a T) -> &'a str) -> HashMap<&'a str, usize> {
    let mut first = HashMap::new();
    for (i, x) in all.iter().enumerate() {
        first.entry(key(x)).or_insert(i);
    }
    first
}

/// Whether `item` (an element of `all`) comes after another with the same key. A create
/// retried after its answer was lost can leave two of a resource, on an API that allows it;
/// only the first is used, the others are deleted.
fn is_duplicate<T, K: PartialEq>(all: &[T], item: &T, key: impl Fn(&T) -> K) -> bool {
    let k = key(item);
    all.iter()
        .find(|x| key(x) == k)
        .is_some_and(|first| !std::ptr::eq(first, item))
}

/// Deregisters a target group's targets before it is deleted, so they drain (deleting it
/// outright would cut their connections).
fn deregister_all(tg: &ObservedTargetGroup, p: &mut Phases) {
    if !tg.spec.targets.is_empty() {
        p.targets.push(Change::DeregisterTargets {
            arn: tg.arn.clone(),
            targets: tg.spec.targets.clone(),
        });
    }
}

/// The managed security group: created with its rules, or its rules brought in line.
fn plan_managed_security_group(stack: &AlbStack, observed: &Inventory, p: &mut Phases) {
    let Some(want) = &stack.load_balancer.managed_security_group else {
        return;
    };
    match observed
        .security_groups
        .iter()
        .find(|g| g.stack == stack.stack)
    {
        None => {
            p.security_groups.push(Change::CreateSecurityGroup {
                stack: stack.stack.clone(),
                spec: want.clone(),
            });
            if !want.ingress.is_empty() {
                p.security_groups
                    .push(Change::AuthorizeSecurityGroupIngress {
                        group: Ref::Name(want.name.clone()),
                        rules: want.ingress.clone(),
                    });
            }
        }
        Some(have) => {
            let add: Vec<(u16, String)> = want
                .ingress
                .iter()
                .filter(|r| !have.ingress.contains(r))
                .cloned()
                .collect();
            let remove: Vec<(u16, String)> = have
                .ingress
                .iter()
                .filter(|r| !want.ingress.contains(r))
                .cloned()
                .collect();
            if !add.is_empty() {
                p.security_groups
                    .push(Change::AuthorizeSecurityGroupIngress {
                        group: Ref::Arn(have.id.clone()),
                        rules: add,
                    });
            }
            if !remove.is_empty() {
                p.security_groups.push(Change::RevokeSecurityGroupIngress {
                    id: have.id.clone(),
                    rules: remove,
                });
            }
        }
    }
}

/// Security groups, subnets and IP address type of an existing load balancer.
fn plan_network(
    stack: &AlbStack,
    o: &ObservedLoadBalancer,
    observed: &Inventory,
    p: &mut Phases,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let spec = &stack.load_balancer;
    let mut missing = |what: String| {
        diagnostics.push(Diagnostic::new(
            Severity::Error,
            ObjectKind::LoadBalancer,
            "",
            stack.stack.clone(),
            Reason::AnnotationInvalid,
            format!("{what} not found; the load balancer keeps its current one"),
        ))
    };
    match resolve_security_groups(spec, &stack.stack, observed) {
        Ok(groups) if groups != o.security_groups => {
            p.load_balancers.push(Change::SetSecurityGroups {
                arn: o.arn.clone(),
                stack: stack.stack.clone(),
                groups,
            })
        }
        Ok(_) => {}
        // The managed or backend group is created by this plan; the load balancer joins it
        // once it exists.
        Err(what) if what.ends_with(NOT_CREATED) => {
            p.load_balancers.push(Change::SetSecurityGroups {
                arn: o.arn.clone(),
                stack: stack.stack.clone(),
                groups: spec
                    .managed_security_group
                    .iter()
                    .map(|g| format!("(new) {}", g.name))
                    .chain(spec.security_groups.iter().cloned())
                    .chain(spec.backend_security_group.iter().map(|b| match b {
                        BackendGroupUse::Managed(g) => format!("(new) {}", g.name),
                        BackendGroupUse::Given(id) => id.clone(),
                    }))
                    .collect(),
            })
        }
        Err(what) => missing(what),
    }
    match resolve_subnets(spec, observed) {
        Ok(Some(subnets)) if subnets != o.subnets => p.load_balancers.push(Change::SetSubnets {
            arn: o.arn.clone(),
            subnets,
        }),
        Ok(_) => {}
        Err(what) => missing(what),
    }
    if !o.ip_address_type.is_empty() && o.ip_address_type != spec.ip_address_type {
        p.load_balancers.push(Change::SetIpAddressType {
            arn: o.arn.clone(),
            ip_address_type: spec.ip_address_type.clone(),
        });
    }
    if spec.name_given && o.name != spec.name {
        diagnostics.push(Diagnostic::new(
            Severity::Warning,
            ObjectKind::LoadBalancer,
            "",
            stack.stack.clone(),
            Reason::AnnotationIgnored,
            format!(
                "load-balancer-name {} is asked for, but the load balancer is named {} and ELBv2 cannot rename one; it keeps its name until the Ingress (or its group) is deleted and re-created (as with the AWS Load Balancer Controller, where the name applies at creation only)",
                spec.name, o.name
            ),
        ));
    }
    // ELBv2 cannot change a load balancer's scheme in place; replacing it changes its DNS
    // name under every client. Tollgate refuses, loudly, rather than pretend (the AWS Load
    // Balancer Controller replaces the ALB).
    if !o.scheme.is_empty() && o.scheme != spec.scheme.as_str() {
        diagnostics.push(Diagnostic::new(
            Severity::Error,
            ObjectKind::LoadBalancer,
            "",
            stack.stack.clone(),
            Reason::ApplyFailed,
            format!(
                "scheme {} is asked for, but load balancer {} is {} and ELBv2 cannot change a scheme in place; it stays {} until the Ingress (or its group) is deleted and re-created, or the scheme set back",
                spec.scheme.as_str(),
                o.name,
                o.scheme,
                o.scheme
            ),
        ));
    }
}

/// The tag change that brings `observed` to `desired`, touching only keys Tollgate owns:
/// those it wants now, and those its `TAG_MANAGED` tag says it set before.
pub fn plan_tags(
    arn: &str,
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> Option<Change> {
    let add: BTreeMap<String, String> = desired
        .iter()
        .filter(|(k, v)| observed.get(*k) != Some(*v) && k.as_str() != TAG_CLUSTER)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove: Vec<String> = observed
        .get(TAG_MANAGED)
        .map(|keys| {
            keys.split(',')
                .filter(|k| !k.is_empty())
                .filter(|k| !desired.contains_key(*k) && observed.contains_key(*k))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if add.is_empty() && remove.is_empty() {
        None
    } else {
        Some(Change::SetTags {
            arn: arn.to_string(),
            add,
            remove,
        })
    }
}

/// Diffs every desired stack against the inventory. Observed stacks that are no longer
/// desired are deleted whole.
pub fn plan(desired: &[AlbStack], observed: &Inventory) -> Plan {
    plan_holding(desired, observed, &BTreeSet::new())
}

/// [`plan`], leaving the `held` stacks exactly as AWS has them: no change to, and no
/// deletion of, their load balancer, listeners, rules, target groups, targets or security
/// group — whatever the desired state says (a member Ingress turned invalid and its last
/// valid version is not known, so what is desired of the stack is not known either).
/// Imported certificates are not deleted while anything is held: a held listener may use one.
pub fn plan_holding(desired: &[AlbStack], observed: &Inventory, held: &BTreeSet<String>) -> Plan {
    plan_scoped(desired, observed, held, &BTreeSet::new())
}

/// [`plan_holding`], not looking inside the `settled` stacks: the caller knows each is
/// desired exactly as when AWS last matched it and that AWS has not been re-read since
/// (issue 16: a change to one Ingress plans only its stack). They still count as desired,
/// so nothing of theirs is deleted and their certificates stay wanted.
pub fn plan_scoped(
    desired: &[AlbStack],
    observed: &Inventory,
    held: &BTreeSet<String>,
    settled: &BTreeSet<String>,
) -> Plan {
    let mut p = Phases::default();
    let mut diagnostics = Vec::new();
    let mut blocked = BTreeSet::new();
    // Indexes, so that planning is linear in the number of stacks, not quadratic.
    let desired_by_stack: HashMap<&str, &AlbStack> =
        desired.iter().map(|s| (s.stack.as_str(), s)).collect();
    let mut lbs_by_stack: HashMap<&str, &ObservedLoadBalancer> = HashMap::new();
    for lb in &observed.load_balancers {
        lbs_by_stack.entry(lb.stack.as_str()).or_insert(lb);
    }
    let mut tgs_by_stack: HashMap<&str, Vec<&ObservedTargetGroup>> = HashMap::new();
    for tg in &observed.target_groups {
        tgs_by_stack.entry(tg.stack.as_str()).or_default().push(tg);
    }
    // A load balancer nobody wants any more but with deletion protection on cannot be
    // deleted: say so, and leave its whole stack (its target groups are still in use).
    let mut held = held.clone();
    for lb in &observed.load_balancers {
        let wanted = desired_by_stack.contains_key(lb.stack.as_str());
        let protected = lb
            .attributes
            .get("deletion_protection.enabled")
            .is_some_and(|v| v == "true");
        if !wanted && protected && held.insert(lb.stack.clone()) {
            diagnostics.push(Diagnostic::new(
                Severity::Warning,
                ObjectKind::LoadBalancer,
                "",
                lb.stack.clone(),
                Reason::ApplyFailed,
                format!(
                    "load balancer {} has deletion protection on, so it and its target groups are not deleted; turn it off (load-balancer-attributes deletion_protection.enabled=false, before deleting the Ingress) or delete it by hand",
                    lb.name
                ),
            ));
        }
    }
    let held = &held;
    let backend = crate::backend_rules::plan_backend(desired, held, observed);
    diagnostics.extend(backend.diagnostics);
    p.security_groups.extend(backend.before);
    let kept: Vec<AlbStack>;
    let desired: &[AlbStack] = if held.is_empty() {
        desired
    } else {
        kept = desired
            .iter()
            .filter(|s| !held.contains(&s.stack))
            .cloned()
            .collect();
        &kept
    };
    for stack in held {
        let wanted = desired_by_stack.contains_key(stack.as_str());
        if wanted && lbs_by_stack.contains_key(stack.as_str()) {
            diagnostics.push(Diagnostic::new(
                Severity::Warning,
                ObjectKind::LoadBalancer,
                "",
                stack.clone(),
                Reason::LastValidVersionServed,
                "left as AWS has it (no change, no deletion): a member Ingress is invalid and no earlier valid version of it is known".to_string(),
            ));
        }
    }
    let desired_stacks: BTreeSet<&str> = desired
        .iter()
        .map(|s| s.stack.as_str())
        .chain(held.iter().map(String::as_str))
        .collect();

    for stack in desired {
        if settled.contains(&stack.stack) {
            continue;
        }
        let lb_obs: Option<&ObservedLoadBalancer> = lbs_by_stack.get(stack.stack.as_str()).copied();
        let observed_tgs: &[&ObservedTargetGroup] = tgs_by_stack
            .get(stack.stack.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);

        // WAF and Shield first: a stack whose protection cannot be applied is not touched
        // (a new load balancer is not created), never served without it.
        let protection = match plan_protection(stack, lb_obs, observed) {
            Ok(p) => p,
            Err(message) => {
                diagnostics.push(Diagnostic::new(
                    Severity::Error,
                    ObjectKind::LoadBalancer,
                    "",
                    stack.stack.clone(),
                    Reason::ApplyFailed,
                    format!("{message}; the load balancer is left as AWS has it (not created if new) rather than served without it"),
                ));
                blocked.insert(stack.stack.clone());
                continue;
            }
        };

        // Target groups and their targets.
        for tg in &stack.target_groups {
            match observed_tgs.iter().find(|o| o.spec.name == tg.name) {
                None => {
                    p.target_groups
                        .push(Change::CreateTargetGroup { spec: tg.clone() });
                    if !tg.targets.is_empty() {
                        p.targets.push(Change::RegisterTargets {
                            target_group: Ref::Name(tg.name.clone()),
                            targets: tg.targets.clone(),
                        });
                    }
                }
                Some(o) => {
                    // AWS reports every attribute with its default: compare only what we set.
                    let settings_differ = o.spec.health_check != tg.health_check
                        || !is_subset(&tg.attributes, &o.spec.attributes);
                    if settings_differ {
                        p.target_groups.push(Change::ModifyTargetGroup {
                            arn: o.arn.clone(),
                            spec: tg.clone(),
                        });
                    }
                    if let Some(c) = plan_tags(&o.arn, &tg.tags, &o.spec.tags) {
                        p.target_groups.push(c);
                    }
                    let want: BTreeSet<&(String, u16)> = tg.targets.iter().collect();
                    let have: BTreeSet<&(String, u16)> = o.spec.targets.iter().collect();
                    let add: Vec<(String, u16)> =
                        want.difference(&have).map(|t| (*t).clone()).collect();
                    let remove: Vec<(String, u16)> =
                        have.difference(&want).map(|t| (*t).clone()).collect();
                    if !add.is_empty() {
                        p.targets.push(Change::RegisterTargets {
                            target_group: Ref::Arn(o.arn.clone()),
                            targets: add,
                        });
                    }
                    if !remove.is_empty() {
                        p.targets.push(Change::DeregisterTargets {
                            arn: o.arn.clone(),
                            targets: remove,
                        });
                    }
                }
            }
        }
        let wanted_tg_names: BTreeSet<&str> = stack
            .target_groups
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        for o in observed_tgs {
            if !wanted_tg_names.contains(o.spec.name.as_str())
                || is_duplicate(observed_tgs, o, |t| t.spec.name.clone())
            {
                deregister_all(o, &mut p);
                p.delete_target_groups.push(Change::DeleteTargetGroup {
                    arn: o.arn.clone(),
                    name: o.spec.name.clone(),
                });
            }
        }

        // The load balancer.
        let lb_ref = match lb_obs {
            None => {
                p.load_balancers.push(Change::CreateLoadBalancer {
                    stack: stack.stack.clone(),
                    name: stack.load_balancer.name.clone(),
                });
                Ref::Name(stack.load_balancer.name.clone())
            }
            Some(o) => {
                if !is_subset(&stack.load_balancer.attributes, &o.attributes) {
                    p.load_balancers.push(Change::ModifyLoadBalancerAttributes {
                        arn: o.arn.clone(),
                        attributes: stack.load_balancer.attributes.clone(),
                    });
                }
                plan_network(stack, o, observed, &mut p, &mut diagnostics);
                if let Some(c) = plan_tags(&o.arn, &stack.load_balancer.tags, &o.tags) {
                    p.load_balancers.push(c);
                }
                Ref::Arn(o.arn.clone())
            }
        };
        p.load_balancers
            .extend(protection.into_iter().map(|c| c.on(&lb_ref)));
        plan_managed_security_group(stack, observed, &mut p);

        // Listeners and rules.
        let no_listeners = Vec::new();
        let observed_listeners: &Vec<ObservedListener> =
            lb_obs.map(|o| &o.listeners).unwrap_or(&no_listeners);
        for wanted in &stack.listeners {
            let listener = ListenerRef {
                load_balancer: lb_ref.clone(),
                port: wanted.port,
            };
            let mut resolved = wanted.clone();
            resolved.certificates =
                resolve_certificates(wanted, &stack.stack, observed, &mut diagnostics);
            resolve_target_group_names(&mut resolved, &stack.stack, observed, &mut diagnostics);
            if let Err(why) = resolve_trust_store(&mut resolved, observed) {
                // Not created, or left as it is, rather than served without the check.
                diagnostics.push(Diagnostic::new(
                    Severity::Error,
                    ObjectKind::LoadBalancer,
                    "",
                    stack.stack.clone(),
                    Reason::ApplyFailed,
                    format!("listener {}: {why}; the listener is left as AWS has it (not created if new) rather than served without client certificates", wanted.port),
                ));
                blocked.insert(stack.stack.clone());
                continue;
            }
            let l = &resolved;
            let no_certificate = l.protocol == "HTTPS" && l.certificates.is_empty();
            if no_certificate {
                diagnostics.push(Diagnostic::new(
                    Severity::Error,
                    ObjectKind::LoadBalancer,
                    "",
                    stack.stack.clone(),
                    Reason::CertificateNotFound,
                    format!("HTTPS listener on port {} has no certificate; it is left as it is (not created)", l.port),
                ));
            }
            match observed_listeners.iter().find(|o| o.port == l.port) {
                None if no_certificate => {}
                None => {
                    p.listeners.push(Change::CreateListener {
                        listener: listener.clone(),
                        spec: l.clone(),
                    });
                    if !l.attributes.is_empty() {
                        p.listeners.push(Change::ModifyListenerAttributes {
                            listener: listener.clone(),
                            attributes: l.attributes.clone(),
                        });
                    }
                    let mut prio = 0;
                    for r in &l.rules {
                        prio += crate::priorities::SPACING;
                        p.rules.push(Change::CreateRule {
                            listener: listener.clone(),
                            priority: prio,
                            rule: r.clone(),
                        });
                    }
                }
                Some(o) => {
                    let differs = o.protocol != l.protocol
                        || o.default_action != l.default_action
                        || o.default_authenticate != l.default_authenticate
                        || (!no_certificate
                            && certificates_differ(&o.certificates, &l.certificates))
                        || (l.ssl_policy.is_some() && o.ssl_policy != l.ssl_policy)
                        || l.mutual_authentication.as_ref().is_some_and(|m| {
                            !same_mutual_authentication(m, o.mutual_authentication.as_ref())
                        });
                    if differs {
                        p.listeners.push(Change::ModifyListener {
                            arn: o.arn.clone(),
                            spec: l.clone(),
                        });
                    }
                    let attributes_differ = o
                        .attributes
                        .as_ref()
                        .is_none_or(|have| !is_subset(&l.attributes, have));
                    if !l.attributes.is_empty() && attributes_differ {
                        p.listeners.push(Change::ModifyListenerAttributes {
                            listener: listener.clone(),
                            attributes: l.attributes.clone(),
                        });
                    }
                    let Some(placed) = place_rules(&l.rules, &o.rules) else {
                        diagnostics.push(Diagnostic::new(
                            Severity::Error,
                            ObjectKind::LoadBalancer,
                            "",
                            stack.stack.clone(),
                            Reason::QuotaExceeded,
                            format!("listener {} has no room for rule priorities under 50000; its rules are left as they are", l.port),
                        ));
                        continue;
                    };
                    for (rule, placement) in l.rules.iter().zip(placed.placements) {
                        match placement {
                            Placement::Keep { .. } => {}
                            Placement::Move { arn, from, to } => {
                                p.rules.push(Change::SetRulePriority { arn, from, to })
                            }
                            Placement::Modify { arn, .. } => p.rules.push(Change::ModifyRule {
                                arn,
                                rule: rule.clone(),
                            }),
                            Placement::Create { priority } => p.rules.push(Change::CreateRule {
                                listener: listener.clone(),
                                priority,
                                rule: rule.clone(),
                            }),
                        }
                    }
                    for arn in placed.delete {
                        p.delete_rules.push(Change::DeleteRule { arn });
                    }
                }
            }
        }
        let wanted_ports: BTreeSet<u16> = stack.listeners.iter().map(|l| l.port).collect();
        for o in observed_listeners {
            if !wanted_ports.contains(&o.port) || is_duplicate(observed_listeners, o, |l| l.port) {
                p.delete_listeners
                    .push(Change::DeleteListener { arn: o.arn.clone() });
            }
        }
    }

    // Secret certificates: import what is new or rotated; delete imports nothing uses.
    let mut wanted_secrets: BTreeMap<&str, &str> = BTreeMap::new();
    for c in desired.iter().flat_map(|s| &s.secret_certificates) {
        wanted_secrets.insert(&c.secret, &c.material.fingerprint);
    }
    for (secret, fingerprint) in &wanted_secrets {
        let have = observed.imported_certificate(secret);
        if have.is_none_or(|h| h.fingerprint != *fingerprint) {
            p.certificates.push(Change::ImportCertificate {
                secret: secret.to_string(),
                fingerprint: fingerprint.to_string(),
                arn: have.map(|h| h.arn.clone()),
            });
        }
    }
    for c in observed
        .imported_certificates
        .iter()
        .filter(|_| held.is_empty())
    {
        let kept = observed
            .imported_certificate(&c.secret)
            .is_some_and(|k| k.arn == c.arn);
        if !wanted_secrets.contains_key(c.secret.as_str()) || !kept {
            p.delete_certificates.push(Change::DeleteCertificate {
                arn: c.arn.clone(),
                secret: c.secret.clone(),
            });
        }
    }

    // Managed security groups of stacks nobody wants (or a duplicate) go after their load
    // balancers.
    let first_sg = first_by(&observed.security_groups, |g| g.stack.as_str());
    for (i, g) in observed.security_groups.iter().enumerate() {
        if held.contains(&g.stack) {
            continue;
        }
        let duplicate = first_sg.get(g.stack.as_str()) != Some(&i);
        if duplicate
            || desired_by_stack
                .get(g.stack.as_str())
                .is_none_or(|s| s.load_balancer.managed_security_group.is_none())
        {
            p.delete_security_groups.push(Change::DeleteSecurityGroup {
                id: g.id.clone(),
                name: g.name.clone(),
            });
        }
    }

    // Stacks nobody wants: the load balancer (with its listeners and rules), then its target
    // groups.
    let first_lb = first_by(&observed.load_balancers, |lb| lb.stack.as_str());
    for (i, o) in observed.load_balancers.iter().enumerate() {
        if held.contains(&o.stack) {
            continue;
        }
        if !desired_stacks.contains(o.stack.as_str()) || first_lb.get(o.stack.as_str()) != Some(&i)
        {
            // A protection outlives its load balancer in Shield: Tollgate's own goes first.
            if let Some(Some(sp)) = &o.shield_protection {
                if sp.name == crate::alb_stack::SHIELD_PROTECTION_NAME {
                    p.delete_load_balancers
                        .push(Change::DeleteShieldProtection {
                            load_balancer: Ref::Arn(o.arn.clone()),
                            id: sp.id.clone(),
                        });
                }
            }
            p.delete_load_balancers.push(Change::DeleteLoadBalancer {
                arn: o.arn.clone(),
                name: o.name.clone(),
            });
        }
    }
    for o in &observed.target_groups {
        if !desired_stacks.contains(o.stack.as_str()) {
            deregister_all(o, &mut p);
            p.delete_target_groups.push(Change::DeleteTargetGroup {
                arn: o.arn.clone(),
                name: o.spec.name.clone(),
            });
        }
    }

    p.delete_security_groups.extend(backend.after);
    let changes = [
        p.certificates,
        p.security_groups,
        p.target_groups,
        p.load_balancers,
        p.listeners,
        p.rules,
        p.targets,
        p.delete_rules,
        p.delete_listeners,
        p.delete_load_balancers,
        p.delete_target_groups,
        p.delete_certificates,
        p.delete_security_groups,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut blocked_stacks = held.clone();
    blocked_stacks.extend(blocked);
    Plan {
        changes,
        diagnostics,
        blocked_stacks,
    }
}

/// A listener's trust store named by name, as its ARN (`Aws::look_up_addons` found it).
fn resolve_trust_store(l: &mut ListenerSpec, observed: &Inventory) -> Result<(), String> {
    let Some(store) = l
        .mutual_authentication
        .as_mut()
        .and_then(|m| m.trust_store.as_mut())
        .filter(|t| !t.starts_with("arn:"))
    else {
        return Ok(());
    };
    let key = format!("truststore:{store}");
    match observed.ids_by_name.get(&key) {
        Some(arn) => {
            *store = arn.clone();
            Ok(())
        }
        None if observed.names_not_found.contains(&key) => Err(format!(
            "mutual-authentication: no trust store is named {store}"
        )),
        None => Err(format!(
            "mutual-authentication: trust store {store} could not be looked up"
        )),
    }
}

/// Whether AWS's mutual TLS is what is asked for (none reported is `off`).
fn same_mutual_authentication(
    want: &tollgate_contract::MutualAuthentication,
    has: Option<&tollgate_contract::MutualAuthentication>,
) -> bool {
    match has {
        Some(h) => h == want,
        None => want.mode == "off",
    }
}

/// A WAF or Shield change for a load balancer not known yet by reference.
enum ProtectionChange {
    WebAcl(Option<String>),
    CreateShield,
    DeleteShield(String),
}

impl ProtectionChange {
    fn on(self, lb: &Ref) -> Change {
        let load_balancer = lb.clone();
        match self {
            ProtectionChange::WebAcl(acl) => Change::SetWebAcl { load_balancer, acl },
            ProtectionChange::CreateShield => Change::CreateShieldProtection { load_balancer },
            ProtectionChange::DeleteShield(id) => {
                Change::DeleteShieldProtection { load_balancer, id }
            }
        }
    }
}

/// The WAF and Shield changes a stack needs, or why they cannot be made. What AWS has is
/// looked up beforehand (`Aws::look_up_addons`) for stacks that manage either; a
/// load balancer about to be created has neither.
fn plan_protection(
    stack: &AlbStack,
    lb: Option<&ObservedLoadBalancer>,
    observed: &Inventory,
) -> Result<Vec<ProtectionChange>, String> {
    let mut out = Vec::new();
    let spec = &stack.load_balancer;
    if let Some(w) = &spec.web_acl {
        let wanted = match w {
            WebAcl::None => None,
            WebAcl::Arn(a) => Some(a.clone()),
            WebAcl::Name(n) => match observed.ids_by_name.get(&format!("webacl:{n}")) {
                Some(arn) => Some(arn.clone()),
                None if observed.names_not_found.contains(&format!("webacl:{n}")) => {
                    return Err(format!(
                        "wafv2-acl-name: no regional WAFv2 web ACL is named {n}"
                    ))
                }
                None => {
                    return Err(format!(
                        "wafv2-acl-name: web ACL {n} could not be looked up"
                    ))
                }
            },
        };
        let has = match lb {
            None => Some(None),
            Some(o) => o.web_acl.clone(),
        };
        // Not looked up (the look-up failed): an association is made again (AWS takes the
        // same one twice), a removal only when known to be needed.
        let needed = match (&has, &wanted) {
            (Some(h), w) => h != w,
            (None, Some(_)) => true,
            (None, None) => false,
        };
        if needed {
            out.push(ProtectionChange::WebAcl(wanted));
        }
    }
    if let Some(on) = spec.shield_advanced {
        let has = match lb {
            None => Some(None),
            Some(o) => o.shield_protection.clone(),
        };
        match (on, has) {
            (true, Some(Some(_))) | (false, Some(None)) => {}
            (true, None) => {
                return Err("shield-advanced-protection: whether the load balancer is protected could not be looked up".into())
            }
            (true, _) => {
                match observed.shield_subscribed {
                    Some(true) => {}
                    Some(false) => return Err("shield-advanced-protection: the account has no active Shield Advanced subscription".into()),
                    None => return Err("shield-advanced-protection: the Shield Advanced subscription could not be looked up".into()),
                }
                out.push(ProtectionChange::CreateShield);
            }
            (false, Some(Some(p))) => {
                // Only Tollgate's own: one made by someone else is theirs to remove.
                if p.name == crate::alb_stack::SHIELD_PROTECTION_NAME {
                    out.push(ProtectionChange::DeleteShield(p.id));
                }
            }
            (false, None) => return Err(
                "shield-advanced-protection: the load balancer's protection could not be looked up"
                    .into(),
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::is_duplicate;

    #[test]
    fn only_later_elements_with_an_earlier_key_are_duplicates() {
        let all = [("a", 1), ("b", 2), ("a", 3), ("a", 4)];
        let dup: Vec<bool> = all.iter().map(|x| is_duplicate(&all, x, |y| y.0)).collect();
        assert_eq!(dup, [false, false, true, true]);
    }
}
