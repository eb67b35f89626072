//! The cluster's backend security group and the inbound rules that admit it on the targets'
//! security groups, so that an ALB reaches its pods and nodes on an EKS cluster whose
//! cluster security group admits only itself (issue 13).
//!
//! As the AWS Load Balancer Controller does it (pkg/networking/backend_sg_provider.go,
//! networking_manager.go; read, not copied):
//! - one shared group per cluster, carried by every load balancer with a managed security
//!   group, and by those with groups given when `manage-backend-security-group-rules` says
//!   so; created while some load balancer needs it, deleted when none does;
//! - on each target's security group one TCP rule from the backend group spanning the
//!   lowest to the highest port its targets and health checks use there;
//! - a target's group: the one group of its network interface, or else the one of them
//!   tagged `kubernetes.io/cluster/<cluster>`; the interface is the instance's primary one
//!   (instance targets) or the one holding the pod IP (ip targets);
//! - only rules carrying Tollgate's description are ever revoked, and none while some
//!   target's group is unknown (a rule still needed must not be taken away).

use std::collections::{BTreeMap, BTreeSet};

use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity};

use crate::alb_stack::{AlbStack, BackendGroupUse, TargetGroupSpec, BACKEND_RULE_DESCRIPTION};
use crate::inventory::{BackendRule, Inventory};
use crate::plan::Change;

/// The key of a target in [`Inventory::target_security_groups`].
pub fn target_key(tg: &TargetGroupSpec, address: &str, stack: &AlbStack) -> String {
    if tg.target_type == "instance" {
        return address.to_string();
    }
    match stack.target_instances.get(address) {
        Some(instance) => format!("{address}@{instance}"),
        None => address.to_string(),
    }
}

/// The keys of every target of the stacks that use the backend group.
pub fn wanted_keys(stacks: &[AlbStack]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in stacks
        .iter()
        .filter(|s| s.load_balancer.backend_security_group.is_some())
    {
        for tg in &s.target_groups {
            for (addr, _) in &tg.targets {
                out.insert(target_key(tg, addr, s));
            }
        }
    }
    out
}

/// Ports a target group's targets are reached on: their own and a numeric health-check
/// port.
fn ports_of(tg: &TargetGroupSpec, port: u16) -> impl Iterator<Item = u16> {
    let hc = tg.health_check.port.parse::<u16>().ok();
    std::iter::once(port).chain(hc)
}

/// What the plan does about the backend group: changes before every stack, changes after
/// every stack, and diagnostics.
#[derive(Default)]
pub struct BackendPlan {
    pub before: Vec<Change>,
    pub after: Vec<Change>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Plans the backend group and its rules for `desired` (every desired stack, settled ones
/// included; `held` stacks are planned from what AWS has of them).
pub fn plan_backend(
    desired: &[AlbStack],
    held: &BTreeSet<String>,
    observed: &Inventory,
) -> BackendPlan {
    let mut out = BackendPlan::default();
    let using: Vec<&AlbStack> = desired
        .iter()
        .filter(|s| !held.contains(&s.stack))
        .filter(|s| s.load_balancer.backend_security_group.is_some())
        .collect();
    let managed_spec = using
        .iter()
        .find_map(|s| match &s.load_balancer.backend_security_group {
            Some(BackendGroupUse::Managed(spec)) => Some(spec),
            _ => None,
        });
    let have = observed.backend_security_group.as_ref();
    // A held stack may carry the group: while anything is held, nothing is taken away.
    let holding = !held.is_empty();

    // Wanted rules: per target security group, the lowest and highest port.
    let mut span: BTreeMap<String, (u16, u16)> = BTreeMap::new();
    let mut unknown = false;
    let mut widen = |group: &str, port: u16| {
        let e = span.entry(group.to_string()).or_insert((port, port));
        e.0 = e.0.min(port);
        e.1 = e.1.max(port);
    };
    for s in &using {
        let mut unresolved: Vec<String> = Vec::new();
        for tg in &s.target_groups {
            for (addr, port) in &tg.targets {
                match observed
                    .target_security_groups
                    .get(&target_key(tg, addr, s))
                {
                    Some(Ok(group)) => ports_of(tg, *port).for_each(|p| widen(group, p)),
                    Some(Err(why)) => {
                        unknown = true;
                        unresolved.push(format!("{addr}: {why}"));
                    }
                    // Not looked up (an offline plan, or the look-up failed): said by the
                    // look-up, not here.
                    None => unknown = true,
                }
            }
        }
        unresolved.sort();
        unresolved.dedup();
        if !unresolved.is_empty() {
            out.diagnostics.push(Diagnostic::new(
                Severity::Warning,
                ObjectKind::LoadBalancer,
                "",
                s.stack.clone(),
                Reason::ApplyFailed,
                format!(
                    "the security groups of these targets are not changed, so the load balancer may not reach them: {}",
                    unresolved.join("; ")
                ),
            ));
        }
    }
    // Held stacks: their targets as AWS has them registered.
    for tg in observed
        .target_groups
        .iter()
        .filter(|t| held.contains(&t.stack))
    {
        for (addr, port) in &tg.spec.targets {
            match observed.target_security_groups.get(addr) {
                Some(Ok(group)) => ports_of(&tg.spec, *port).for_each(|p| widen(group, p)),
                _ => unknown = true,
            }
        }
    }

    if let (Some(spec), None) = (managed_spec, have) {
        out.before
            .push(Change::CreateBackendSecurityGroup { spec: spec.clone() });
    }
    let observed_rules: &[BackendRule] = have.map(|g| g.rules.as_slice()).unwrap_or(&[]);
    for (group, (from, to)) in span.iter().filter(|_| !using.is_empty()) {
        let present = observed_rules
            .iter()
            .any(|r| &r.group == group && r.from == *from && r.to == *to);
        if !present {
            out.before.push(Change::AuthorizeBackendRule {
                rule: BackendRule {
                    group: group.clone(),
                    from: *from,
                    to: *to,
                    description: Some(BACKEND_RULE_DESCRIPTION.to_string()),
                },
            });
        }
    }
    let delete = have.filter(|_| managed_spec.is_none() && !holding && observed_is_ours(observed));
    match delete {
        Some(g) => {
            // Every rule naming it goes first: a group another group's rule names cannot be
            // deleted.
            for r in observed_rules {
                out.after.push(Change::RevokeBackendRule {
                    rule: r.clone(),
                    source: g.id.clone(),
                });
            }
            out.after.push(Change::DeleteBackendSecurityGroup {
                id: g.id.clone(),
                name: g.name.clone(),
            });
        }
        None => {
            for r in observed_rules {
                let ours = r.description.as_deref() == Some(BACKEND_RULE_DESCRIPTION);
                let wanted_span = span.get(&r.group).filter(|_| !using.is_empty());
                let wanted = wanted_span == Some(&(r.from, r.to));
                // While some target's group is unknown (or a stack held) a rule may still be
                // needed — unless the wanted rule on the same group covers all of it (a
                // range that widened): that one is always safe to take away, so rules
                // never pile up towards the group's quota.
                let covered = wanted_span.is_some_and(|(from, to)| *from <= r.from && r.to <= *to);
                if ours && !wanted && ((!unknown && !holding) || covered) {
                    if let Some(g) = have {
                        out.after.push(Change::RevokeBackendRule {
                            rule: r.clone(),
                            source: g.id.clone(),
                        });
                    }
                }
            }
        }
    }
    // Tollgate's own group after a given one replaced it: its rules, then itself, once the
    // stacks have moved their load balancers off it.
    if let Some(g) = observed.retired_backend_group.as_ref().filter(|_| !holding) {
        for r in &g.rules {
            out.after.push(Change::RevokeBackendRule {
                rule: r.clone(),
                source: g.id.clone(),
            });
        }
        out.after.push(Change::DeleteBackendSecurityGroup {
            id: g.id.clone(),
            name: g.name.clone(),
        });
    }
    out
}

/// Whether the observed backend group is Tollgate's own (found by its tags) rather than one
/// given by ID, which is never deleted.
fn observed_is_ours(observed: &Inventory) -> bool {
    observed
        .backend_security_group
        .as_ref()
        .is_some_and(|g| !g.name.is_empty() && g.name != GIVEN)
}

/// The name an observed group given by ID is recorded under.
pub const GIVEN: &str = "(given)";
