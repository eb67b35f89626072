//! The AWS diff: desired ALB stacks against the observed inventory → ordered changes.
//!
//! Pure and printable (`tollgate plan --provider aws`). Order: target groups, load balancers,
//! listeners, certificates, rules, targets; deletions after, in reverse (rules, listeners,
//! load balancers, then target groups no rule uses any more). Creating before deleting means
//! a route is never missing while it moves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity};

use crate::alb_stack::{AlbAction, AlbStack, ListenerSpec, RuleSpec, TargetGroupSpec};
use crate::inventory::{Inventory, ObservedListener, ObservedLoadBalancer};
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
}

impl Change {
    /// `+` create, `~` change, `-` delete, as a terraform plan prints them.
    pub fn symbol(&self) -> char {
        match self {
            Change::CreateTargetGroup { .. }
            | Change::CreateLoadBalancer { .. }
            | Change::CreateListener { .. }
            | Change::CreateRule { .. }
            | Change::RegisterTargets { .. } => '+',
            Change::DeleteRule { .. }
            | Change::DeleteListener { .. }
            | Change::DeleteLoadBalancer { .. }
            | Change::DeleteTargetGroup { .. }
            | Change::DeregisterTargets { .. } => '-',
            _ => '~',
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.symbol();
        match self {
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

fn describe(rule: &RuleSpec) -> String {
    let conds: Vec<String> = rule
        .conditions
        .iter()
        .map(|c| match c {
            crate::alb_stack::AlbCondition::HostHeader(v) => format!("host {}", v.join("|")),
            crate::alb_stack::AlbCondition::PathPattern(v) => format!("path {}", v.join("|")),
            crate::alb_stack::AlbCondition::HttpRequestMethod(v) => {
                format!("method {}", v.join("|"))
            }
            crate::alb_stack::AlbCondition::SourceIp(v) => format!("source {}", v.join("|")),
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
    target_groups: Vec<Change>,
    load_balancers: Vec<Change>,
    listeners: Vec<Change>,
    rules: Vec<Change>,
    targets: Vec<Change>,
    delete_rules: Vec<Change>,
    delete_listeners: Vec<Change>,
    delete_load_balancers: Vec<Change>,
    delete_target_groups: Vec<Change>,
}

fn is_subset(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// Certificates as ELBv2 holds them: ACM ARNs (Secret certificates are imported first).
fn acm_only(certs: &[String]) -> Vec<&String> {
    certs.iter().filter(|c| c.starts_with("arn:")).collect()
}

/// Diffs every desired stack against the inventory. Observed stacks that are no longer
/// desired are deleted whole.
pub fn plan(desired: &[AlbStack], observed: &Inventory) -> Plan {
    let mut p = Phases::default();
    let mut diagnostics = Vec::new();
    let desired_stacks: BTreeSet<&str> = desired.iter().map(|s| s.stack.as_str()).collect();

    for stack in desired {
        let lb_obs: Option<&ObservedLoadBalancer> = observed
            .load_balancers
            .iter()
            .find(|lb| lb.stack == stack.stack);
        let observed_tgs: Vec<_> = observed
            .target_groups
            .iter()
            .filter(|tg| tg.stack == stack.stack)
            .collect();

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
        for o in &observed_tgs {
            if !wanted_tg_names.contains(o.spec.name.as_str()) {
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
                Ref::Arn(o.arn.clone())
            }
        };

        // Listeners and rules.
        let no_listeners = Vec::new();
        let observed_listeners: &Vec<ObservedListener> =
            lb_obs.map(|o| &o.listeners).unwrap_or(&no_listeners);
        for l in &stack.listeners {
            let listener = ListenerRef {
                load_balancer: lb_ref.clone(),
                port: l.port,
            };
            match observed_listeners.iter().find(|o| o.port == l.port) {
                None => {
                    p.listeners.push(Change::CreateListener {
                        listener: listener.clone(),
                        spec: l.clone(),
                    });
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
                        || acm_only(&o.certificates) != acm_only(&l.certificates)
                        || (l.ssl_policy.is_some() && o.ssl_policy != l.ssl_policy);
                    if differs {
                        p.listeners.push(Change::ModifyListener {
                            arn: o.arn.clone(),
                            spec: l.clone(),
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
            if !wanted_ports.contains(&o.port) {
                p.delete_listeners
                    .push(Change::DeleteListener { arn: o.arn.clone() });
            }
        }
    }

    // Stacks nobody wants: the load balancer (with its listeners and rules), then its target
    // groups.
    for o in &observed.load_balancers {
        if !desired_stacks.contains(o.stack.as_str()) {
            p.delete_load_balancers.push(Change::DeleteLoadBalancer {
                arn: o.arn.clone(),
                name: o.name.clone(),
            });
        }
    }
    for o in &observed.target_groups {
        if !desired_stacks.contains(o.stack.as_str()) {
            p.delete_target_groups.push(Change::DeleteTargetGroup {
                arn: o.arn.clone(),
                name: o.spec.name.clone(),
            });
        }
    }

    let changes = [
        p.target_groups,
        p.load_balancers,
        p.listeners,
        p.rules,
        p.targets,
        p.delete_rules,
        p.delete_listeners,
        p.delete_load_balancers,
        p.delete_target_groups,
    ]
    .into_iter()
    .flatten()
    .collect();
    Plan {
        changes,
        diagnostics,
    }
}
