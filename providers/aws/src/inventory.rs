//! What Tollgate observed in AWS: its own resources, found by tags. Filled by the SDK layer
//! (one tag-filtered look-up per resource kind) and kept current by Tollgate's own writes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::alb_stack::{AlbAction, RuleSpec, TargetGroupSpec};

/// Every Tollgate-owned resource in the region, by stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub load_balancers: Vec<ObservedLoadBalancer>,
    pub target_groups: Vec<ObservedTargetGroup>,
    /// ACM certificates Tollgate imported from Kubernetes Secrets.
    pub imported_certificates: Vec<ImportedCertificate>,
    /// Every other issued ACM certificate, for discovery by host; `None` when ACM was not
    /// read (an offline `plan`, or no permission), so discovery is left unresolved.
    pub acm_certificates: Option<Vec<AcmCertificate>>,
    /// Security groups Tollgate manages.
    pub security_groups: Vec<ObservedSecurityGroup>,
    /// Subnet and security-group IDs of the `Name` tags annotations use, looked up once:
    /// keys `subnet:<name>` and `sg:<name>`.
    pub ids_by_name: BTreeMap<String, String>,
    /// Names looked up and not found (same keys), not asked again before the next resync.
    pub names_not_found: std::collections::BTreeSet<String>,
    /// The backend security group (Tollgate's, or the one given) and the rules admitting it
    /// on the targets' security groups.
    pub backend_security_group: Option<ObservedBackendGroup>,
    /// Tollgate's own backend group while a given one (`--aws-backend-security-group sg-...`)
    /// replaces it: its rules are revoked and it is deleted.
    pub retired_backend_group: Option<ObservedBackendGroup>,
    /// The security group of each target whose group admits the backend group, looked up
    /// once per full read: keyed by instance ID, or `<pod IP>@<instance ID>` (a pod IP
    /// reused on another node is another key), or the pod IP when its node is not known.
    /// `Err` says why no one group can be chosen.
    pub target_security_groups: BTreeMap<String, Result<String, String>>,
    /// Whether the account has an active Shield Advanced subscription; `None` until a stack
    /// asks for protection.
    pub shield_subscribed: Option<bool>,
}

/// The cluster's backend security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedBackendGroup {
    pub id: String,
    pub name: String,
    /// Inbound rules on other groups whose source is this one. Sorted.
    pub rules: Vec<BackendRule>,
}

/// An inbound TCP rule on a target's security group admitting the backend group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct BackendRule {
    /// The target's security group.
    pub group: String,
    pub from: u16,
    pub to: u16,
    /// Tollgate's rules carry [`crate::alb_stack::BACKEND_RULE_DESCRIPTION`]; others are
    /// never revoked.
    pub description: Option<String>,
}

/// A security group Tollgate manages, with its inbound rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedSecurityGroup {
    pub id: String,
    pub name: String,
    pub stack: String,
    /// (port, CIDR) pairs allowed in over TCP. Sorted.
    pub ingress: Vec<(u16, String)>,
}

/// A certificate Tollgate imported into ACM from a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedCertificate {
    pub arn: String,
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// Fingerprint of the material imported last.
    pub fingerprint: String,
}

/// An issued ACM certificate someone else manages, with the names it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcmCertificate {
    pub arn: String,
    /// Domain name and subject alternative names, lower-case (`*.example.com` for a wildcard).
    pub names: Vec<String>,
}

/// A load balancer with its listeners and rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedLoadBalancer {
    pub arn: String,
    pub name: String,
    pub stack: String,
    pub dns_name: String,
    pub attributes: BTreeMap<String, String>,
    pub listeners: Vec<ObservedListener>,
    /// Sorted.
    pub subnets: Vec<String>,
    /// Sorted.
    pub security_groups: Vec<String>,
    pub ip_address_type: String,
    /// `internet-facing` or `internal`.
    pub scheme: String,
    pub tags: BTreeMap<String, String>,
    /// The associated WAFv2 web ACL's ARN (`Some(None)`: none); `None` until looked up
    /// (`Aws::look_up_addons`, only for load balancers whose stack manages it).
    pub web_acl: Option<Option<String>>,
    /// The Shield Advanced protection (`Some(None)`: none); `None` until looked up.
    pub shield_protection: Option<Option<ShieldProtection>>,
}

/// A Shield Advanced protection of a load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShieldProtection {
    pub id: String,
    pub name: String,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedListener {
    pub arn: String,
    pub port: u16,
    pub protocol: String,
    pub certificates: Vec<String>,
    pub ssl_policy: Option<String>,
    pub default_action: AlbAction,
    pub default_authenticate: Option<crate::alb_stack::AlbAuthenticate>,
    /// Its attributes; `None` until looked up (only for listeners whose stack sets some).
    pub attributes: Option<BTreeMap<String, String>>,
    /// Mutual TLS as AWS reports it (`None`: none reported, which is `off`).
    pub mutual_authentication: Option<tollgate_contract::MutualAuthentication>,
    pub rules: Vec<ObservedRule>,
}

/// A non-default listener rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedRule {
    pub arn: String,
    pub priority: u32,
    pub content: RuleSpec,
}

/// A target group with its registered targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedTargetGroup {
    pub arn: String,
    pub stack: String,
    /// As it would be desired: comparing specs tells what to modify.
    pub spec: TargetGroupSpec,
}

use crate::alb_stack::{AlbStack, TAG_STACK};
use crate::plan::{Change, Ref};

impl Inventory {
    fn load_balancer_mut(&mut self, r: &Ref) -> Option<&mut ObservedLoadBalancer> {
        self.load_balancers.iter_mut().find(|lb| match r {
            Ref::Arn(a) => &lb.arn == a,
            Ref::Name(n) => &lb.name == n,
        })
    }

    fn rules_mut(&mut self) -> impl Iterator<Item = &mut ObservedRule> {
        self.load_balancers
            .iter_mut()
            .flat_map(|lb| lb.listeners.iter_mut())
            .flat_map(|l| l.rules.iter_mut())
    }

    /// The ACM import of a Secret (`namespace/name`), if there is one. Should a retried
    /// import have left two, the lowest ARN is the one kept (listeners are moved to it) and
    /// the plan deletes the others.
    pub fn imported_certificate(&self, secret: &str) -> Option<&ImportedCertificate> {
        self.imported_certificates
            .iter()
            .filter(|c| c.secret == secret)
            .min_by(|a, b| a.arn.cmp(&b.arn))
    }

    /// Records a change that AWS has just carried out, so the inventory stays current without
    /// another look-up. `arn` is the ARN a create call returned (`dns_name` for a new load
    /// balancer); `stacks` is the desired state the change came from.
    pub fn record(
        &mut self,
        change: &Change,
        arn: Option<&str>,
        dns_name: Option<&str>,
        stacks: &[AlbStack],
    ) {
        let new_arn = |what: &str| {
            arn.map(str::to_string)
                .unwrap_or_else(|| format!("unknown:{what}"))
        };
        match change {
            Change::ImportCertificate {
                secret,
                fingerprint,
                ..
            } => {
                self.imported_certificates.retain(|c| &c.secret != secret);
                self.imported_certificates.push(ImportedCertificate {
                    arn: new_arn(secret),
                    secret: secret.clone(),
                    fingerprint: fingerprint.clone(),
                });
            }
            Change::DeleteCertificate { arn, .. } => {
                self.imported_certificates.retain(|c| &c.arn != arn)
            }
            Change::CreateSecurityGroup { stack, spec } => {
                self.security_groups.push(ObservedSecurityGroup {
                    id: new_arn(&spec.name),
                    name: spec.name.clone(),
                    stack: stack.clone(),
                    ingress: Vec::new(),
                });
            }
            Change::AuthorizeSecurityGroupIngress { group, rules } => {
                if let Some(g) = self.security_groups.iter_mut().find(|g| match group {
                    Ref::Arn(id) => &g.id == id,
                    Ref::Name(n) => &g.name == n,
                }) {
                    g.ingress.extend(rules.iter().cloned());
                    g.ingress.sort();
                    g.ingress.dedup();
                }
            }
            Change::RevokeSecurityGroupIngress { id, rules } => {
                if let Some(g) = self.security_groups.iter_mut().find(|g| &g.id == id) {
                    g.ingress.retain(|r| !rules.contains(r));
                }
            }
            Change::DeleteSecurityGroup { id, .. } => self.security_groups.retain(|g| &g.id != id),
            Change::CreateBackendSecurityGroup { spec } => {
                self.backend_security_group = Some(ObservedBackendGroup {
                    id: new_arn(&spec.name),
                    name: spec.name.clone(),
                    rules: Vec::new(),
                });
            }
            Change::DeleteBackendSecurityGroup { id, .. } => {
                if self
                    .backend_security_group
                    .as_ref()
                    .is_some_and(|g| &g.id == id)
                {
                    self.backend_security_group = None;
                }
                if self
                    .retired_backend_group
                    .as_ref()
                    .is_some_and(|g| &g.id == id)
                {
                    self.retired_backend_group = None;
                }
            }
            Change::AuthorizeBackendRule { rule } => {
                if let Some(g) = &mut self.backend_security_group {
                    g.rules.push(rule.clone());
                    g.rules.sort();
                    g.rules.dedup();
                }
            }
            Change::RevokeBackendRule { rule, .. } => {
                for g in self
                    .backend_security_group
                    .iter_mut()
                    .chain(self.retired_backend_group.iter_mut())
                {
                    g.rules.retain(|r| r != rule);
                }
            }
            Change::SetSecurityGroups { arn, stack, .. } => {
                let resolved = stacks.iter().find(|s| &s.stack == stack).and_then(|s| {
                    crate::plan::resolve_security_groups(&s.load_balancer, stack, self).ok()
                });
                if let (Some(groups), Some(lb)) =
                    (resolved, self.load_balancer_mut(&Ref::Arn(arn.clone())))
                {
                    lb.security_groups = groups;
                }
            }
            Change::SetSubnets { arn, subnets } => {
                if let Some(lb) = self.load_balancer_mut(&Ref::Arn(arn.clone())) {
                    lb.subnets = subnets.clone();
                }
            }
            Change::SetIpAddressType {
                arn,
                ip_address_type,
            } => {
                if let Some(lb) = self.load_balancer_mut(&Ref::Arn(arn.clone())) {
                    lb.ip_address_type = ip_address_type.clone();
                }
            }
            Change::SetTags { arn, add, remove } => {
                let tags = match self.load_balancer_mut(&Ref::Arn(arn.clone())) {
                    Some(lb) => Some(&mut lb.tags),
                    None => self
                        .target_groups
                        .iter_mut()
                        .find(|t| &t.arn == arn)
                        .map(|t| &mut t.spec.tags),
                };
                if let Some(tags) = tags {
                    tags.extend(add.clone());
                    for k in remove {
                        tags.remove(k);
                    }
                }
            }
            Change::CreateTargetGroup { spec } => {
                let mut spec = spec.clone();
                spec.targets.clear(); // registered by a RegisterTargets change
                self.target_groups.push(ObservedTargetGroup {
                    arn: new_arn(&spec.name),
                    stack: spec.tags.get(TAG_STACK).cloned().unwrap_or_default(),
                    spec,
                });
            }
            Change::ModifyTargetGroup { arn, spec } => {
                if let Some(o) = self.target_groups.iter_mut().find(|t| &t.arn == arn) {
                    o.spec.health_check = spec.health_check.clone();
                    o.spec.attributes = spec.attributes.clone();
                }
            }
            Change::CreateLoadBalancer { stack, name } => {
                let spec = stacks
                    .iter()
                    .find(|s| &s.stack == stack)
                    .map(|s| &s.load_balancer);
                let security_groups = spec
                    .and_then(|s| crate::plan::resolve_security_groups(s, stack, self).ok())
                    .unwrap_or_default();
                let subnets = spec
                    .and_then(|s| crate::plan::resolve_subnets(s, self).ok().flatten())
                    .unwrap_or_default();
                self.load_balancers.push(ObservedLoadBalancer {
                    arn: new_arn(name),
                    name: name.clone(),
                    stack: stack.clone(),
                    dns_name: dns_name.unwrap_or_default().to_string(),
                    attributes: spec.map(|s| s.attributes.clone()).unwrap_or_default(),
                    listeners: Vec::new(),
                    subnets,
                    security_groups,
                    ip_address_type: spec.map(|s| s.ip_address_type.clone()).unwrap_or_default(),
                    scheme: spec
                        .map(|s| s.scheme.as_str().to_string())
                        .unwrap_or_default(),
                    tags: spec.map(|s| s.tags.clone()).unwrap_or_default(),
                    // A new load balancer has neither.
                    web_acl: Some(None),
                    shield_protection: Some(None),
                });
            }
            Change::ModifyListenerAttributes {
                listener,
                attributes,
            } => {
                if let Some(l) = self
                    .load_balancer_mut(&listener.load_balancer)
                    .and_then(|lb| lb.listeners.iter_mut().find(|l| l.port == listener.port))
                {
                    l.attributes
                        .get_or_insert_with(BTreeMap::new)
                        .extend(attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            Change::SetWebAcl { load_balancer, acl } => {
                if let Some(lb) = self.load_balancer_mut(load_balancer) {
                    lb.web_acl = Some(acl.clone());
                }
            }
            Change::CreateShieldProtection { load_balancer } => {
                if let Some(lb) = self.load_balancer_mut(load_balancer) {
                    lb.shield_protection = Some(Some(ShieldProtection {
                        id: arn.unwrap_or_default().to_string(),
                        name: crate::alb_stack::SHIELD_PROTECTION_NAME.to_string(),
                    }));
                }
            }
            Change::DeleteShieldProtection { load_balancer, .. } => {
                if let Some(lb) = self.load_balancer_mut(load_balancer) {
                    lb.shield_protection = Some(None);
                }
            }
            Change::ModifyLoadBalancerAttributes { arn, attributes } => {
                if let Some(lb) = self.load_balancer_mut(&Ref::Arn(arn.clone())) {
                    lb.attributes = attributes.clone();
                }
            }
            Change::CreateListener { listener, spec } => {
                let arn = new_arn(&format!("listener-{}", listener.port));
                let certificates = crate::plan::listener_arns(&spec.certificates, self);
                if let Some(lb) = self.load_balancer_mut(&listener.load_balancer) {
                    lb.listeners.push(ObservedListener {
                        arn,
                        port: spec.port,
                        protocol: spec.protocol.clone(),
                        certificates,
                        ssl_policy: spec.ssl_policy.clone(),
                        default_action: spec.default_action.clone(),
                        default_authenticate: spec.default_authenticate.clone(),
                        // A new listener has only the defaults.
                        attributes: Some(BTreeMap::new()),
                        mutual_authentication: spec.mutual_authentication.clone(),
                        rules: Vec::new(),
                    });
                }
            }
            Change::ModifyListener { arn, spec } => {
                let certificates = crate::plan::listener_arns(&spec.certificates, self);
                if let Some(l) = self
                    .load_balancers
                    .iter_mut()
                    .flat_map(|lb| lb.listeners.iter_mut())
                    .find(|l| &l.arn == arn)
                {
                    l.protocol = spec.protocol.clone();
                    l.certificates = certificates;
                    l.ssl_policy = spec.ssl_policy.clone();
                    if spec.mutual_authentication.is_some() {
                        l.mutual_authentication = spec.mutual_authentication.clone();
                    }
                    l.default_action = spec.default_action.clone();
                    l.default_authenticate = spec.default_authenticate.clone();
                }
            }
            Change::CreateRule {
                listener,
                priority,
                rule,
            } => {
                let arn = new_arn(&format!("rule-{priority}"));
                if let Some(l) = self
                    .load_balancer_mut(&listener.load_balancer)
                    .and_then(|lb| lb.listeners.iter_mut().find(|l| l.port == listener.port))
                {
                    l.rules.push(ObservedRule {
                        arn,
                        priority: *priority,
                        content: rule.clone(),
                    });
                }
            }
            Change::ModifyRule { arn, rule } => {
                if let Some(r) = self.rules_mut().find(|r| &r.arn == arn) {
                    r.content = rule.clone();
                }
            }
            Change::SetRulePriority { arn, to, .. } => {
                if let Some(r) = self.rules_mut().find(|r| &r.arn == arn) {
                    r.priority = *to;
                }
            }
            Change::RegisterTargets {
                target_group,
                targets,
            } => {
                if let Some(tg) = self.target_groups.iter_mut().find(|t| match target_group {
                    Ref::Arn(a) => &t.arn == a,
                    Ref::Name(n) => &t.spec.name == n,
                }) {
                    tg.spec.targets.extend(targets.iter().cloned());
                    tg.spec.targets.sort();
                    tg.spec.targets.dedup();
                }
            }
            Change::DeregisterTargets { arn, targets } => {
                if let Some(tg) = self.target_groups.iter_mut().find(|t| &t.arn == arn) {
                    tg.spec.targets.retain(|t| !targets.contains(t));
                }
            }
            Change::DeleteRule { arn } => {
                for lb in &mut self.load_balancers {
                    for l in &mut lb.listeners {
                        l.rules.retain(|r| &r.arn != arn);
                    }
                }
            }
            Change::DeleteListener { arn } => {
                for lb in &mut self.load_balancers {
                    lb.listeners.retain(|l| &l.arn != arn);
                }
            }
            Change::DeleteLoadBalancer { arn, .. } => {
                self.load_balancers.retain(|lb| &lb.arn != arn)
            }
            Change::DeleteTargetGroup { arn, .. } => self.target_groups.retain(|t| &t.arn != arn),
        }
    }
}
