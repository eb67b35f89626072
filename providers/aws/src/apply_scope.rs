//! Which stack each change of a plan belongs to, and the inventory split by stack, so that
//! stacks are applied independently and at once (issue 13: one slow or failing load balancer
//! must not delay every other's changes and target registrations).
//!
//! A plan's changes fall in three scopes:
//! - before every stack: certificate imports (any stack's listener may name one), the
//!   backend security group and the rules admitting it (every load balancer may carry it);
//! - one stack: everything of its load balancer, listeners, rules, target groups and managed
//!   security group, in plan order (its own creations come before what refers to them);
//! - after every stack: deletion of imports no listener uses any more, of rules no target
//!   needs and of the backend group once no load balancer carries it.

use std::collections::{HashMap, HashSet};

use crate::alb_stack::{AlbStack, TAG_STACK};
use crate::inventory::Inventory;
use crate::plan::{Change, Ref};

/// Where a change runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    Before,
    Stack(&'a str),
    After,
}

/// Every name, ARN and ID a change may refer to, mapped to its stack: built once per apply
/// from the inventory and the desired stacks, so that scoping a change is a look-up, not a
/// scan of every load balancer.
pub struct StackIndex<'a> {
    by_key: HashMap<&'a str, &'a str>,
}

impl<'a> StackIndex<'a> {
    pub fn new(inv: &'a Inventory, desired: &'a [AlbStack]) -> Self {
        let mut by_key: HashMap<&'a str, &'a str> = HashMap::new();
        for s in desired {
            let stack = s.stack.as_str();
            by_key.insert(&s.load_balancer.name, stack);
            if let Some(g) = &s.load_balancer.managed_security_group {
                by_key.insert(&g.name, stack);
            }
            for tg in &s.target_groups {
                by_key.insert(&tg.name, stack);
            }
        }
        for lb in &inv.load_balancers {
            let stack = lb.stack.as_str();
            by_key.insert(&lb.arn, stack);
            by_key.insert(&lb.name, stack);
            for l in &lb.listeners {
                by_key.insert(&l.arn, stack);
                for r in &l.rules {
                    by_key.insert(&r.arn, stack);
                }
            }
        }
        for tg in &inv.target_groups {
            by_key.insert(&tg.arn, &tg.stack);
        }
        for g in &inv.security_groups {
            by_key.insert(&g.id, &g.stack);
        }
        StackIndex { by_key }
    }

    fn of(&self, key: &str) -> Scope<'a> {
        // A change whose resource is known nowhere still runs, alone, under the empty stack.
        Scope::Stack(self.by_key.get(key).copied().unwrap_or(""))
    }

    fn of_ref(&self, r: &Ref) -> Scope<'a> {
        match r {
            Ref::Arn(k) | Ref::Name(k) => self.of(k),
        }
    }

    /// The scope of `change`.
    pub fn scope<'c>(&self, change: &'c Change) -> Scope<'c>
    where
        'a: 'c,
    {
        match change {
            Change::ImportCertificate { .. }
            | Change::CreateBackendSecurityGroup { .. }
            | Change::AuthorizeBackendRule { .. } => Scope::Before,
            Change::DeleteCertificate { .. }
            | Change::RevokeBackendRule { .. }
            | Change::DeleteBackendSecurityGroup { .. } => Scope::After,
            Change::CreateLoadBalancer { stack, .. }
            | Change::CreateSecurityGroup { stack, .. }
            | Change::SetSecurityGroups { stack, .. } => Scope::Stack(stack),
            Change::CreateTargetGroup { spec } => match spec.tags.get(TAG_STACK) {
                Some(s) => Scope::Stack(s),
                None => self.of(&spec.name),
            },
            Change::AuthorizeSecurityGroupIngress { group, .. } => self.of_ref(group),
            Change::RegisterTargets { target_group, .. } => self.of_ref(target_group),
            Change::SetWebAcl { load_balancer, .. }
            | Change::CreateShieldProtection { load_balancer }
            | Change::DeleteShieldProtection { load_balancer, .. } => self.of_ref(load_balancer),
            Change::CreateListener { listener, .. }
            | Change::CreateRule { listener, .. }
            | Change::ModifyListenerAttributes { listener, .. } => {
                self.of_ref(&listener.load_balancer)
            }
            Change::RevokeSecurityGroupIngress { id, .. }
            | Change::DeleteSecurityGroup { id, .. } => self.of(id),
            Change::ModifyTargetGroup { arn, .. }
            | Change::ModifyLoadBalancerAttributes { arn, .. }
            | Change::SetSubnets { arn, .. }
            | Change::SetIpAddressType { arn, .. }
            | Change::SetTags { arn, .. }
            | Change::ModifyListener { arn, .. }
            | Change::ModifyRule { arn, .. }
            | Change::SetRulePriority { arn, .. }
            | Change::DeregisterTargets { arn, .. }
            | Change::DeleteRule { arn }
            | Change::DeleteListener { arn }
            | Change::DeleteLoadBalancer { arn, .. }
            | Change::DeleteTargetGroup { arn, .. } => self.of(arn),
        }
    }
}

/// A plan's changes by scope: those before and after every stack, and each stack's in plan
/// order (stacks in order of their first change).
pub struct Scoped<'c> {
    pub before: Vec<&'c Change>,
    pub stacks: Vec<(String, Vec<&'c Change>)>,
    pub after: Vec<&'c Change>,
}

pub fn scope_changes<'c>(changes: &'c [Change], index: &StackIndex<'_>) -> Scoped<'c> {
    let mut out = Scoped {
        before: Vec::new(),
        stacks: Vec::new(),
        after: Vec::new(),
    };
    let mut slot: HashMap<String, usize> = HashMap::new();
    for c in changes {
        match index.scope(c) {
            Scope::Before => out.before.push(c),
            Scope::After => out.after.push(c),
            Scope::Stack(s) => {
                let i = *slot.entry(s.to_string()).or_insert_with(|| {
                    out.stacks.push((s.to_string(), Vec::new()));
                    out.stacks.len() - 1
                });
                out.stacks[i].1.push(c);
            }
        }
    }
    out
}

impl Inventory {
    /// Moves the load balancers, target groups and managed security groups of `stacks` out
    /// into one inventory per stack, each with a copy of what its changes may read of the
    /// rest (names looked up, the imports of the Secrets its listeners use). Each part is
    /// as large as its stack, so recording a change in it does not scan every stack.
    pub fn split_off_stacks(
        &mut self,
        stacks: &HashSet<&str>,
        desired: &[AlbStack],
    ) -> HashMap<String, Inventory> {
        let mut parts: HashMap<String, Inventory> = HashMap::new();
        fn part<'p>(parts: &'p mut HashMap<String, Inventory>, stack: &str) -> &'p mut Inventory {
            parts.entry(stack.to_string()).or_default()
        }
        let (moved, kept) = std::mem::take(&mut self.load_balancers)
            .into_iter()
            .partition(|lb| stacks.contains(lb.stack.as_str()));
        self.load_balancers = kept;
        for lb in moved {
            part(&mut parts, &lb.stack).load_balancers.push(lb);
        }
        let (moved, kept) = std::mem::take(&mut self.target_groups)
            .into_iter()
            .partition(|tg| stacks.contains(tg.stack.as_str()));
        self.target_groups = kept;
        for tg in moved {
            part(&mut parts, &tg.stack).target_groups.push(tg);
        }
        let (moved, kept) = std::mem::take(&mut self.security_groups)
            .into_iter()
            .partition(|g| stacks.contains(g.stack.as_str()));
        self.security_groups = kept;
        for g in moved {
            part(&mut parts, &g.stack).security_groups.push(g);
        }
        let desired: HashMap<&str, &AlbStack> =
            desired.iter().map(|s| (s.stack.as_str(), s)).collect();
        for stack in stacks {
            let p = part(&mut parts, stack);
            p.ids_by_name = self.ids_by_name.clone();
            p.backend_security_group = self.backend_security_group.as_ref().map(|g| {
                crate::inventory::ObservedBackendGroup {
                    rules: Vec::new(),
                    ..g.clone()
                }
            });
            if let Some(d) = desired.get(stack) {
                p.imported_certificates = self
                    .imported_certificates
                    .iter()
                    .filter(|c| d.secret_certificates.iter().any(|s| s.secret == c.secret))
                    .cloned()
                    .collect();
            }
        }
        parts
    }

    /// Puts back a part [`Inventory::split_off_stacks`] took out, as its changes left it.
    pub fn merge_stack(&mut self, part: Inventory) {
        self.load_balancers.extend(part.load_balancers);
        self.target_groups.extend(part.target_groups);
        self.security_groups.extend(part.security_groups);
    }
}
