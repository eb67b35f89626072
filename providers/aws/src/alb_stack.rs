//! The desired state of one Ingress group in ALB terms: names, tags, conditions and actions
//! exactly as the ELBv2 API takes them, after the quotas Tollgate enforces itself.
//!
//! Pure: built from a [`LoadBalancer`] of the model, no API calls. Quota violations become
//! diagnostics on the Ingress that caused them, and the rest of the group is still built.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tollgate_contract::{
    Action, BackendProtocol, Certificate, Diagnostic, HostMatch, ListenerProtocol, LoadBalancer,
    ObjectKind, ObjectRef, PathKind, PathMatch, ProtocolVersion, Reason, Scheme, Severity,
    TargetAddress, TargetGroup, TargetType,
};

/// Tag naming the cluster that owns a resource.
pub const TAG_CLUSTER: &str = "tollgate.io/cluster";
/// Tag naming the stack (the model's load-balancer id).
pub const TAG_STACK: &str = "tollgate.io/stack";
/// Tag naming the resource within its stack.
pub const TAG_RESOURCE: &str = "tollgate.io/resource";

/// The ALB quotas Tollgate enforces (the emulator does not; AWS does), and the
/// controller-wide switches every stack depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbLimits {
    /// The shared backend security group (`--aws-backend-security-group`).
    pub backend_security_group: BackendSecurityGroup,
    /// Whether load balancers with security groups given manage the targets' rules when
    /// their Ingresses do not say (`--aws-manage-backend-security-group-rules`; off, as the
    /// AWS Load Balancer Controller's `--enable-manage-backend-security-group-rules`).
    pub manage_backend_rules: bool,
    pub rules_per_listener: usize,
    pub values_per_condition: usize,
    /// Condition values of all a rule's conditions together ("condition values per rule").
    pub values_per_rule: usize,
    pub target_groups_per_action: usize,
    pub target_groups_per_load_balancer: usize,
    pub path_pattern_length: usize,
}

impl Default for AlbLimits {
    fn default() -> Self {
        AlbLimits {
            backend_security_group: BackendSecurityGroup::Managed,
            manage_backend_rules: false,
            rules_per_listener: 100,
            values_per_condition: 5,
            values_per_rule: 5,
            target_groups_per_action: 5,
            target_groups_per_load_balancer: 100,
            path_pattern_length: 128,
        }
    }
}

/// The security group every load balancer of the cluster carries and the targets' groups
/// admit, so that traffic reaches pods and nodes without anyone editing security groups (the
/// AWS Load Balancer Controller's shared backend security group, `k8s-traffic-<cluster>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BackendSecurityGroup {
    /// Created while some load balancer needs it, deleted when none does.
    #[default]
    Managed,
    /// The user's group (`sg-...`): used, never created or deleted.
    Given(String),
    /// No backend group and no rules on the targets' groups.
    Off,
}

/// Value of [`TAG_RESOURCE`] on the backend security group (it has no [`TAG_STACK`]).
pub const BACKEND_SECURITY_GROUP: &str = "BackendSecurityGroup";

/// Name of the cluster's managed backend security group.
pub fn backend_security_group_name(cluster: &str) -> String {
    format!("tollgate-traffic-{}", sanitize(cluster, 200))
}

/// One Ingress group as ALB resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlbStack {
    /// The model's load-balancer id; the value of [`TAG_STACK`].
    pub stack: String,
    pub load_balancer: LoadBalancerSpec,
    /// Sorted by name.
    pub target_groups: Vec<TargetGroupSpec>,
    /// Sorted by port.
    pub listeners: Vec<ListenerSpec>,
    /// Kubernetes TLS Secrets its listeners use, to be imported into ACM. Sorted.
    pub secret_certificates: Vec<SecretCertificate>,
    /// The instance of each `ip` target (pod IP → instance ID) whose node is known, when
    /// the targets' security groups are managed: a pod's network interface is one of its
    /// node's (EKS VPC CNI: pod IPs are the node ENIs' secondary addresses).
    pub target_instances: BTreeMap<String, String>,
}

/// A `kubernetes.io/tls` Secret whose certificate Tollgate imports into ACM (tagged with the
/// Secret and the material's fingerprint, re-imported under the same ARN when it rotates).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretCertificate {
    /// `namespace/name`.
    pub secret: String,
    pub material: tollgate_contract::TlsMaterial,
}

/// Prefix of a listener certificate that is a Kubernetes Secret not yet resolved to the ARN
/// of its ACM import: `secret:<namespace>/<name>@<fingerprint>`.
pub const SECRET_CERTIFICATE: &str = "secret:";
/// Prefix of a listener certificate to be discovered in ACM by host: `acm-host:<host>`.
pub const DISCOVERED_CERTIFICATE: &str = "acm-host:";
/// Tag on an imported certificate naming its Secret (`namespace/name`).
pub const TAG_SECRET: &str = "tollgate.io/secret";
/// Tag on an imported certificate holding the fingerprint of the imported material.
pub const TAG_FINGERPRINT: &str = "tollgate.io/fingerprint";
/// Tag listing (comma-separated) the user tag keys Tollgate set on a resource, so a key
/// dropped from `tags` is removed while keys others set are never touched.
pub const TAG_MANAGED: &str = "tollgate.io/managed-tags";

/// The load balancer itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    pub name: String,
    /// Whether `name` was given (`load-balancer-name`), not derived: ELBv2 cannot rename,
    /// so a given name that differs from the load balancer's is reported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub name_given: bool,
    pub scheme: Scheme,
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// Subnet IDs or `Name` tags; empty: discovered by the cluster's subnet tags.
    pub subnets: Vec<String>,
    /// Security group IDs or `Name` tags; empty: [`Self::managed_security_group`].
    pub security_groups: Vec<String>,
    /// `ipv4` or `dualstack`.
    pub ip_address_type: String,
    /// The security group Tollgate manages for this load balancer when none are given.
    pub managed_security_group: Option<SecurityGroupSpec>,
    /// The cluster's backend security group, when it carries it and its targets' groups
    /// admit that group on their ports.
    pub backend_security_group: Option<BackendGroupUse>,
    /// The WAFv2 web ACL to associate (`None`: left as AWS has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_acl: Option<tollgate_contract::WebAcl>,
    /// Shield Advanced protection on or off (`None`: left as AWS has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shield_advanced: Option<bool>,
}

/// The name Tollgate gives the Shield Advanced protections it creates: one with another
/// name was made by someone else and is never deleted (the AWS Load Balancer Controller
/// does the same with its own name).
pub const SHIELD_PROTECTION_NAME: &str = "managed by tollgate";

/// How a load balancer uses the backend security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BackendGroupUse {
    /// Tollgate's, created as this spec says.
    Managed(SecurityGroupSpec),
    /// The user's, by ID.
    Given(String),
}

/// Description of the rules Tollgate adds on targets' security groups; rules without it are
/// never revoked.
pub const BACKEND_RULE_DESCRIPTION: &str = "tollgate.io/backend-security-group";

/// A security group Tollgate owns: open on the listener ports to the inbound CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroupSpec {
    pub name: String,
    /// (port, CIDR or prefix list ID) pairs allowed in over TCP. Sorted.
    pub ingress: Vec<(u16, String)>,
    pub tags: BTreeMap<String, String>,
}

/// A target group. Its name hashes everything ELBv2 cannot change in place, so a change of
/// protocol, port or target type is a new target group (created before the old is deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupSpec {
    pub name: String,
    /// The model's target-group id.
    pub model_id: String,
    pub protocol: String,
    pub protocol_version: String,
    pub port: u16,
    pub target_type: String,
    pub health_check: tollgate_contract::HealthCheck,
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// Ready targets: (pod IP or instance ID, port). Sorted.
    pub targets: Vec<(String, u16)>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    pub port: u16,
    pub protocol: String,
    /// ACM ARNs; the first is the default certificate. Before the plan resolves them, Secret
    /// certificates appear as `secret:<namespace>/<name>@<fingerprint>` and certificates to
    /// discover as `acm-host:<host>`.
    pub certificates: Vec<String>,
    pub ssl_policy: Option<String>,
    pub default_action: AlbAction,
    /// Performed before the default action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_authenticate: Option<AlbAuthenticate>,
    /// Listener attributes to set (`listener-attributes.*`); others are left as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Mutual TLS (`mutual-authentication`); `None`: left as it is. A trust store named,
    /// not by ARN, is resolved when planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_authentication: Option<tollgate_contract::MutualAuthentication>,
    /// In evaluation order; priorities are assigned by the plan.
    pub rules: Vec<RuleSpec>,
}

/// A listener rule's content: what it matches and what it does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    pub conditions: Vec<AlbCondition>,
    /// Performed before `action` (order 1, then the action at order 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticate: Option<AlbAuthenticate>,
    pub action: AlbAction,
}

/// The tag on a rule holding the fingerprint of its OIDC client secret: AWS never returns
/// the secret, so without it a rotated Secret could not be told from the one applied.
pub const TAG_CLIENT_SECRET: &str = "tollgate.io/oidc-client-secret";

/// ALB's `authenticate-oidc` / `authenticate-cognito` action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum AlbAuthenticate {
    Oidc {
        issuer: String,
        authorization_endpoint: String,
        token_endpoint: String,
        user_info_endpoint: String,
        client_id: String,
        /// Compared by fingerprint: observed rules carry the one from their tag.
        client_secret: tollgate_contract::ClientSecret,
        session: AuthSession,
    },
    Cognito {
        user_pool_arn: String,
        user_pool_client_id: String,
        user_pool_domain: String,
        session: AuthSession,
    },
}

/// What both kinds of authenticate action share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthSession {
    pub on_unauthenticated_request: String,
    pub scope: String,
    pub session_cookie_name: String,
    pub session_timeout: i64,
    pub extra_params: BTreeMap<String, String>,
}

impl AlbAuthenticate {
    pub fn from_model(a: &tollgate_contract::IdpAuthentication) -> Self {
        let session = AuthSession {
            on_unauthenticated_request: a.on_unauthenticated_request.as_str().to_string(),
            scope: a.scope.clone(),
            session_cookie_name: a.session_cookie.clone(),
            session_timeout: i64::try_from(a.session_timeout_seconds).unwrap_or(i64::MAX),
            extra_params: a.extra_params.clone(),
        };
        match &a.idp {
            tollgate_contract::IdentityProvider::Oidc {
                issuer,
                authorization_endpoint,
                token_endpoint,
                user_info_endpoint,
                client_id,
                client_secret,
            } => AlbAuthenticate::Oidc {
                issuer: issuer.clone(),
                authorization_endpoint: authorization_endpoint.clone(),
                token_endpoint: token_endpoint.clone(),
                user_info_endpoint: user_info_endpoint.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                session,
            },
            tollgate_contract::IdentityProvider::Cognito {
                user_pool_arn,
                user_pool_client_id,
                user_pool_domain,
            } => AlbAuthenticate::Cognito {
                user_pool_arn: user_pool_arn.clone(),
                user_pool_client_id: user_pool_client_id.clone(),
                user_pool_domain: user_pool_domain.clone(),
                session,
            },
        }
    }

    /// The client secret's fingerprint, for the rule's tag.
    pub fn secret_fingerprint(&self) -> Option<&str> {
        match self {
            AlbAuthenticate::Oidc { client_secret, .. } => Some(&client_secret.fingerprint),
            AlbAuthenticate::Cognito { .. } => None,
        }
    }
}

/// A rule condition, as ELBv2 models it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase", tag = "field", content = "values")]
pub enum AlbCondition {
    HostHeader(Vec<String>),
    PathPattern(Vec<String>),
    HttpRequestMethod(Vec<String>),
    SourceIp(Vec<String>),
    /// A header name and the values (one must match).
    HttpHeader(String, Vec<String>),
    /// Key/value pairs (one must match); a pair without a key matches any key.
    QueryString(Vec<(Option<String>, String)>),
    /// `path-pattern` with `RegexValues` (one must be found in the path).
    PathRegex(Vec<String>),
    /// `host-header` with `RegexValues`.
    HostHeaderRegex(Vec<String>),
    /// `http-header` with `RegexValues`.
    HttpHeaderRegex(String, Vec<String>),
}

impl AlbCondition {
    /// How many values the condition holds (ALB allows 5 per condition).
    pub fn value_count(&self) -> usize {
        match self {
            AlbCondition::HostHeader(v)
            | AlbCondition::PathPattern(v)
            | AlbCondition::HttpRequestMethod(v)
            | AlbCondition::SourceIp(v)
            | AlbCondition::HttpHeader(_, v)
            | AlbCondition::PathRegex(v)
            | AlbCondition::HostHeaderRegex(v)
            | AlbCondition::HttpHeaderRegex(_, v) => v.len(),
            AlbCondition::QueryString(v) => v.len(),
        }
    }
}

/// A rule action, as ELBv2 models it. Target groups are referred to by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum AlbAction {
    Forward {
        target_groups: Vec<(String, u32)>,
        stickiness_seconds: Option<u32>,
    },
    Redirect {
        protocol: String,
        port: String,
        host: String,
        path: String,
        query: String,
        status_code: String,
    },
    FixedResponse {
        status_code: String,
        content_type: String,
        body: String,
    },
}

/// Lower-case letters, digits and '-', at most `max` characters, no '-' at either end.
fn sanitize(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    cleaned.trim_matches('-').to_string()
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `k8s-<group>-<hash>`: at most 32 characters, unique per cluster and stack.
pub fn load_balancer_name(cluster: &str, stack: &str) -> String {
    let tail = stack.rsplit('/').next().unwrap_or(stack);
    format!(
        "k8s-{}-{}",
        sanitize(tail, 17),
        short_hash(&[cluster, stack])
    )
}

/// `k8s-<ns>-<svc>-<hash>`: at most 32 characters; the hash covers the immutable settings.
pub fn target_group_name(cluster: &str, stack: &str, tg: &TargetGroup) -> String {
    let immutable = format!(
        "{:?}|{}|{:?}|{:?}|{:?}",
        tg.protocol, tg.service_port, tg.protocol_version, tg.target_type, tg.id
    );
    format!(
        "k8s-{}-{}-{}",
        sanitize(&tg.service.namespace, 7),
        sanitize(&tg.service.name, 9),
        short_hash(&[cluster, stack, &immutable])
    )
}

fn ingress_diag(ing: &ObjectRef, reason: Reason, message: String) -> Diagnostic {
    Diagnostic::new(
        Severity::Error,
        ObjectKind::Ingress,
        ing.namespace.clone(),
        ing.name.clone(),
        reason,
        message,
    )
}

/// ALB path patterns for a path condition; `None` when ALB cannot express it.
fn path_patterns(p: &PathMatch) -> Option<Vec<String>> {
    match p.kind {
        PathKind::Exact => Some(vec![p.path.clone()]),
        PathKind::Prefix => {
            let base = p.path.trim_end_matches('/');
            if base.is_empty() {
                Some(vec!["/*".into()])
            } else {
                Some(vec![base.to_string(), format!("{base}/*")])
            }
        }
        PathKind::Regex | PathKind::AlbRegex => None,
        // Passed as it is, as the AWS Load Balancer Controller does.
        PathKind::Glob => Some(vec![p.path.clone()]),
    }
}

/// ALB accepts only these content types in fixed responses.
fn alb_content_type(ct: &str) -> String {
    let base = ct.split(';').next().unwrap_or("").trim();
    match base {
        "text/plain" | "text/css" | "text/html" | "application/javascript" | "application/json" => {
            base.to_string()
        }
        _ => "text/plain".to_string(),
    }
}

fn translate_action(
    action: &Action,
    tg_names: &BTreeMap<String, String>,
) -> Result<AlbAction, String> {
    Ok(match action {
        Action::Forward(f) => {
            let mut tgs = Vec::new();
            for w in &f.target_groups {
                // A target group named by ARN (`targetGroupARN`) is used as it is; one named
                // by name (`targetGroupName`) is looked up when planned.
                if w.target_group.starts_with("arn:")
                    || w.target_group
                        .starts_with(tollgate_contract::TARGET_GROUP_NAME)
                {
                    tgs.push((w.target_group.clone(), w.weight));
                    continue;
                }
                let name = tg_names
                    .get(&w.target_group)
                    .ok_or_else(|| format!("target group {} was left out", w.target_group))?;
                tgs.push((name.clone(), w.weight));
            }
            // ELBv2 keeps no order among weighted target groups; compare them sorted.
            tgs.sort();
            AlbAction::Forward {
                target_groups: tgs,
                stickiness_seconds: f.stickiness_seconds,
            }
        }
        Action::Redirect(r) => AlbAction::Redirect {
            protocol: r
                .protocol
                .clone()
                .unwrap_or_else(|| "#{protocol}".into())
                .to_ascii_uppercase(),
            port: r
                .port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "#{port}".into()),
            host: r.host.clone().unwrap_or_else(|| "#{host}".into()),
            path: r.path.clone().unwrap_or_else(|| "/#{path}".into()),
            query: r.query.clone().unwrap_or_else(|| "#{query}".into()),
            // ALB redirects are 301 or 302 only: permanent kinds become 301.
            status_code: if matches!(r.status_code, 302 | 303 | 307) {
                "HTTP_302"
            } else {
                "HTTP_301"
            }
            .into(),
        },
        Action::FixedResponse(f) => AlbAction::FixedResponse {
            status_code: f.status_code.to_string(),
            content_type: alb_content_type(&f.content_type),
            body: f.body.clone(),
        },
    })
}

/// Builds the ALB stack for one load balancer of the model.
pub fn build_stack(
    cluster: &str,
    lb: &LoadBalancer,
    limits: &AlbLimits,
) -> (AlbStack, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let stack_tags = |resource: &str| -> BTreeMap<String, String> {
        let mut t = lb.tags.clone();
        let user_keys: Vec<&str> = lb.tags.keys().map(String::as_str).collect();
        t.insert(TAG_MANAGED.into(), user_keys.join(","));
        t.insert(TAG_CLUSTER.into(), cluster.into());
        t.insert(TAG_STACK.into(), lb.id.clone());
        t.insert(TAG_RESOURCE.into(), resource.into());
        t
    };

    // Target groups, at most the quota; which ones are kept follows the Ingresses' precedence.
    let precedence: BTreeMap<&ObjectRef, usize> = lb
        .ingresses
        .iter()
        .enumerate()
        .map(|(i, o)| (o, i))
        .collect();
    let first_user = |tg_id: &str| -> usize {
        lb.listeners
            .iter()
            .flat_map(|l| &l.rules)
            .filter(|r| matches!(&r.action, Action::Forward(f) if f.target_groups.iter().any(|w| w.target_group == tg_id)))
            .filter_map(|r| precedence.get(&r.ingress).copied())
            .min()
            .unwrap_or(usize::MAX)
    };
    let mut ordered: Vec<&TargetGroup> = lb.target_groups.iter().collect();
    ordered.sort_by_key(|tg| (first_user(&tg.id), tg.id.clone()));
    let mut tg_names = BTreeMap::new();
    let mut target_groups = Vec::new();
    for (i, tg) in ordered.into_iter().enumerate() {
        if i >= limits.target_groups_per_load_balancer {
            for ing in lb.ingresses.iter() {
                diags.push(ingress_diag(
                    ing,
                    Reason::QuotaExceeded,
                    format!(
                        "load balancer {} needs more than {} target groups; target group {} is left out and its routes with it",
                        lb.id, limits.target_groups_per_load_balancer, tg.id
                    ),
                ));
            }
            continue;
        }
        let name = target_group_name(cluster, &lb.id, tg);
        tg_names.insert(tg.id.clone(), name.clone());
        let mut targets: Vec<(String, u16)> = tg
            .targets
            .iter()
            .filter(|t| t.state.registered())
            .map(|t| match &t.address {
                TargetAddress::Ip(ip) => (ip.to_string(), t.port),
                TargetAddress::Instance(id) => (id.clone(), t.port),
            })
            .collect();
        targets.sort();
        targets.dedup();
        target_groups.push(TargetGroupSpec {
            name,
            model_id: tg.id.clone(),
            protocol: match tg.protocol {
                BackendProtocol::Http => "HTTP",
                BackendProtocol::Https => "HTTPS",
            }
            .into(),
            protocol_version: match tg.protocol_version {
                ProtocolVersion::Http1 => "HTTP1",
                ProtocolVersion::Http2 => "HTTP2",
                ProtocolVersion::Grpc => "GRPC",
            }
            .into(),
            port: tg
                .targets
                .first()
                .map(|t| t.port)
                .unwrap_or(tg.service_port),
            target_type: match tg.target_type {
                TargetType::Ip => "ip",
                TargetType::Instance => "instance",
            }
            .into(),
            health_check: tg.health_check.clone(),
            attributes: tg.attributes.clone(),
            tags: stack_tags(&tg.id),
            targets,
        });
    }
    target_groups.sort_by(|a, b| a.name.cmp(&b.name));

    let mut listeners = Vec::new();
    let mut secret_certificates = BTreeSet::new();
    for l in &lb.listeners {
        let owners: BTreeSet<&ObjectRef> = l.rules.iter().map(|r| &r.ingress).collect();
        let certificates: Vec<String> = l
            .certificates
            .iter()
            .map(|c| match c {
                Certificate::Arn { arn } => arn.clone(),
                Certificate::Secret {
                    secret, material, ..
                } => {
                    secret_certificates.insert(SecretCertificate {
                        secret: secret.to_string(),
                        material: material.clone(),
                    });
                    format!("{SECRET_CERTIFICATE}{secret}@{}", material.fingerprint)
                }
                Certificate::Discover { host } => format!("{DISCOVERED_CERTIFICATE}{host}"),
            })
            .collect();
        if l.protocol == ListenerProtocol::Https && certificates.is_empty() {
            let blamed: Vec<&ObjectRef> = if owners.is_empty() {
                lb.ingresses.iter().collect()
            } else {
                owners.into_iter().collect()
            };
            for ing in blamed {
                diags.push(ingress_diag(
                    ing,
                    Reason::CertificateNotFound,
                    format!(
                        "HTTPS listener on port {} has no certificate (no usable tls Secret, certificate-arn or ACM certificate for its hosts); the listener is not created",
                        l.port
                    ),
                ));
            }
            continue;
        }
        let default_action = match translate_action(&l.default_action, &tg_names) {
            Ok(a) => a,
            Err(_) => AlbAction::FixedResponse {
                status_code: "503".into(),
                content_type: "text/plain".into(),
                body: "503 service unavailable: the default backend's target group was left out\n"
                    .into(),
            },
        };
        let mut rules = Vec::new();
        for r in &l.rules {
            let mut conditions = Vec::new();
            let mut problem = None;
            if let Some(h) = &r.conditions.host {
                conditions.push(AlbCondition::HostHeader(vec![match h {
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Wildcard(s) => format!("*.{s}"),
                }]));
            }
            if let Some(p) = r
                .conditions
                .path
                .as_ref()
                .filter(|p| p.kind == PathKind::AlbRegex)
            {
                if p.path.len() > limits.path_pattern_length {
                    problem = Some(format!(
                        "path expression {} is longer than ALB's {} characters",
                        p.path, limits.path_pattern_length
                    ));
                }
                conditions.push(AlbCondition::PathRegex(vec![p.path.clone()]));
            } else if let Some(p) = &r.conditions.path {
                match path_patterns(p) {
                    Some(values) if values.iter().all(|v| v.len() <= limits.path_pattern_length) => {
                        conditions.push(AlbCondition::PathPattern(values))
                    }
                    Some(_) => problem = Some(format!("path {} is longer than ALB's {} characters", p.path, limits.path_pattern_length)),
                    None => problem = Some(format!("regular-expression path {} (use-regex) is served by the proxy provider only", p.path)),
                }
            }
            if !r.conditions.host_regexes.is_empty() {
                conditions.push(AlbCondition::HostHeaderRegex(
                    r.conditions.host_regexes.clone(),
                ));
            }
            if !r.conditions.methods.is_empty() {
                conditions.push(AlbCondition::HttpRequestMethod(
                    r.conditions.methods.clone(),
                ));
            }
            if !r.conditions.source_ips.is_empty() {
                conditions.push(AlbCondition::SourceIp(r.conditions.source_ips.clone()));
            }
            for h in &r.conditions.headers {
                conditions.push(if h.regex {
                    AlbCondition::HttpHeaderRegex(h.name.clone(), h.values.clone())
                } else {
                    AlbCondition::HttpHeader(h.name.clone(), h.values.clone())
                });
            }
            for q in &r.conditions.query {
                conditions.push(AlbCondition::QueryString(
                    q.pairs
                        .iter()
                        .map(|p| (p.key.clone(), p.value.clone()))
                        .collect(),
                ));
            }
            if conditions.is_empty() {
                conditions.push(AlbCondition::PathPattern(vec!["/*".into()]));
            }
            // ELBv2 does not keep the order; the observed rule is compared sorted.
            conditions.sort();
            let too_many = conditions
                .iter()
                .any(|c| c.value_count() > limits.values_per_condition);
            let total: usize = conditions.iter().map(AlbCondition::value_count).sum();
            if too_many {
                problem = Some(format!(
                    "a condition has more than {} values",
                    limits.values_per_condition
                ));
            } else if total > limits.values_per_rule {
                // AWS rejects the rule (moto does not: the strict test proxy does).
                problem = Some(format!(
                    "its conditions have {total} values together ({}); ALB allows {} per rule",
                    conditions
                        .iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    limits.values_per_rule
                ));
            }
            if let Action::Forward(f) = &r.action {
                if f.target_groups.len() > limits.target_groups_per_action {
                    problem = Some(format!(
                        "a forward action names more than {} target groups",
                        limits.target_groups_per_action
                    ));
                }
            }
            let action = match translate_action(&r.action, &tg_names) {
                Ok(a) => a,
                Err(e) => {
                    problem = problem.or(Some(e));
                    continue_with(&mut diags, &r.ingress, problem.take());
                    continue;
                }
            };
            if problem.is_some() {
                continue_with(&mut diags, &r.ingress, problem.take());
                continue;
            }
            let fence_host = (r.conditions.path.is_none())
                .then(|| r.conditions.host.clone())
                .flatten();
            rules.push(PlacedRule {
                ingress: r.ingress.clone(),
                fence_host,
                host: r.conditions.host.clone(),
                spec: RuleSpec {
                    conditions,
                    authenticate: r.authenticate.as_deref().map(AlbAuthenticate::from_model),
                    action,
                },
            });
        }
        if rules.len() > limits.rules_per_listener {
            rules = fit_rule_quota(rules, lb, l.port, limits.rules_per_listener, &mut diags);
        }
        listeners.push(ListenerSpec {
            port: l.port,
            protocol: l.protocol.to_string(),
            certificates,
            ssl_policy: l.ssl_policy.clone(),
            default_action,
            default_authenticate: l
                .default_authenticate
                .as_deref()
                .map(AlbAuthenticate::from_model),
            attributes: l.attributes.clone(),
            mutual_authentication: l.mutual_authentication.clone(),
            rules: rules.into_iter().map(|r| r.spec).collect(),
        });
    }
    let uses_backend = match &limits.backend_security_group {
        BackendSecurityGroup::Off => {
            if lb.network.manage_backend_security_group_rules == Some(true) {
                for ing in lb.ingresses.iter() {
                    let mut d = ingress_diag(
                        ing,
                        Reason::AnnotationIgnored,
                        "alb.ingress.kubernetes.io/manage-backend-security-group-rules: the backend security group is off (--aws-backend-security-group=off), so the targets' security groups are left as they are".into(),
                    );
                    d.severity = Severity::Warning;
                    diags.push(d);
                }
            }
            false
        }
        _ => {
            lb.network.security_groups.is_empty()
                || lb
                    .network
                    .manage_backend_security_group_rules
                    .unwrap_or(limits.manage_backend_rules)
        }
    };
    let backend_security_group = match &limits.backend_security_group {
        _ if !uses_backend => None,
        BackendSecurityGroup::Given(id) => Some(BackendGroupUse::Given(id.clone())),
        _ => Some(BackendGroupUse::Managed(SecurityGroupSpec {
            name: backend_security_group_name(cluster),
            ingress: Vec::new(),
            tags: [
                (TAG_CLUSTER.to_string(), cluster.to_string()),
                (TAG_RESOURCE.to_string(), BACKEND_SECURITY_GROUP.to_string()),
            ]
            .into(),
        })),
    };
    let mut target_instances = BTreeMap::new();
    if uses_backend {
        for tg in lb
            .target_groups
            .iter()
            .filter(|tg| tg.target_type == TargetType::Ip && tg_names.contains_key(&tg.id))
        {
            for t in &tg.targets {
                if let (TargetAddress::Ip(ip), Some(i)) = (&t.address, &t.instance) {
                    target_instances.insert(ip.to_string(), i.clone());
                }
            }
        }
    }
    diags.sort();
    diags.dedup();
    (
        AlbStack {
            stack: lb.id.clone(),
            load_balancer: LoadBalancerSpec {
                name: lb
                    .name
                    .clone()
                    .unwrap_or_else(|| load_balancer_name(cluster, &lb.id)),
                name_given: lb.name.is_some(),
                scheme: lb.scheme,
                attributes: lb.attributes.clone(),
                tags: stack_tags("LoadBalancer"),
                subnets: lb.network.subnets.clone(),
                security_groups: lb.network.security_groups.clone(),
                ip_address_type: lb.network.ip_address_type.as_str().into(),
                backend_security_group,
                web_acl: lb.protection.web_acl.clone(),
                shield_advanced: lb.protection.shield_advanced,
                managed_security_group: lb.network.security_groups.is_empty().then(|| {
                    let mut cidrs = lb.network.inbound_cidrs.clone();
                    cidrs.extend(lb.network.inbound_prefix_lists.iter().cloned());
                    if cidrs.is_empty() {
                        cidrs.push("0.0.0.0/0".into());
                        if lb.network.ip_address_type.has_ipv6() {
                            cidrs.push("::/0".into());
                        }
                    }
                    let mut ingress: Vec<(u16, String)> = listeners
                        .iter()
                        .flat_map(|l| cidrs.iter().map(move |c| (l.port, c.clone())))
                        .collect();
                    ingress.sort();
                    ingress.dedup();
                    SecurityGroupSpec {
                        name: load_balancer_name(cluster, &lb.id),
                        ingress,
                        tags: stack_tags("SecurityGroup"),
                    }
                }),
            },
            target_groups,
            listeners,
            secret_certificates: secret_certificates.into_iter().collect(),
            target_instances,
        },
        diags,
    )
}

/// A translated rule with what the quota logic needs to know about it.
struct PlacedRule {
    ingress: ObjectRef,
    host: Option<HostMatch>,
    /// Set for a host-only rule (a fence): it serves every Ingress on that host.
    fence_host: Option<HostMatch>,
    spec: RuleSpec,
}

/// Leaves out whole Ingresses, lowest precedence first, until the listener's rules fit, as
/// the builder leaves out an invalid Ingress: the group deploys, the Ingress that does not
/// fit is told. A fence stays while another Ingress's rule on its host remains.
fn fit_rule_quota(
    mut rules: Vec<PlacedRule>,
    lb: &LoadBalancer,
    port: u16,
    max: usize,
    diags: &mut Vec<Diagnostic>,
) -> Vec<PlacedRule> {
    let rank = |o: &ObjectRef| {
        lb.ingresses
            .iter()
            .position(|i| i == o)
            .unwrap_or(usize::MAX)
    };
    while rules.len() > max {
        let Some(loser) = rules
            .iter()
            .filter(|r| r.fence_host.is_none())
            .max_by_key(|r| rank(&r.ingress))
            .map(|r| r.ingress.clone())
        else {
            rules.truncate(max);
            break;
        };
        rules.retain(|r| r.fence_host.is_some() || r.ingress != loser);
        let hosts_in_use: BTreeSet<Option<HostMatch>> = rules
            .iter()
            .filter(|r| r.fence_host.is_none())
            .map(|r| r.host.clone())
            .collect();
        rules.retain(|r| r.fence_host.is_none() || hosts_in_use.contains(&r.host));
        diags.push(ingress_diag(
            &loser,
            Reason::QuotaExceeded,
            format!(
                "listener {port} of load balancer {} would need more than {max} rules; this Ingress (lowest precedence) is left out of it",
                lb.id
            ),
        ));
    }
    rules
}

/// The ALB stacks of every load balancer of the model, with every diagnostic met.
pub fn build_stacks(
    cluster: &str,
    model: &tollgate_contract::DesiredState,
    limits: &AlbLimits,
) -> (Vec<AlbStack>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let stacks = model
        .load_balancers
        .iter()
        .map(|lb| {
            let (mut s, d) = build_stack(cluster, lb, limits);
            diags.extend(d);
            // Names are unique per region and account: a given name another group took
            // first would make the two groups one load balancer.
            if let Some(first) = names.get(&s.load_balancer.name).filter(|_| s.load_balancer.name_given) {
                let derived = load_balancer_name(cluster, &lb.id);
                for ing in lb.ingresses.iter() {
                    let mut d = ingress_diag(
                        ing,
                        Reason::GroupSettingConflict,
                        format!(
                            "alb.ingress.kubernetes.io/load-balancer-name {} is taken by load balancer {first}; this one is named {derived}",
                            s.load_balancer.name
                        ),
                    );
                    d.severity = Severity::Warning;
                    diags.push(d);
                }
                s.load_balancer.name = derived;
                s.load_balancer.name_given = false;
            }
            names
                .entry(s.load_balancer.name.clone())
                .or_insert_with(|| lb.id.clone());
            s
        })
        .collect();
    (stacks, diags)
}

fn continue_with(diags: &mut Vec<Diagnostic>, ing: &ObjectRef, problem: Option<String>) {
    if let Some(p) = problem {
        diags.push(ingress_diag(
            ing,
            Reason::QuotaExceeded,
            format!("{p}; the route is left out on ALB"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_group_names_fit_elbv2_limits() {
        let tg = TargetGroup {
            id: "x".into(),
            service: ObjectRef::new("a-very-long-namespace", "a-very-long-service-name"),
            service_port: 80,
            protocol: BackendProtocol::Http,
            protocol_version: ProtocolVersion::Http1,
            target_type: TargetType::Ip,
            health_check: Default::default(),
            attributes: Default::default(),
            upstream_tls: None,
            targets: vec![],
        };
        let n = target_group_name("cluster", "stack", &tg);
        assert!(n.len() <= 32, "{n}");
        assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn names_fit_elbv2_limits() {
        let n = load_balancer_name(
            "a-very-long-cluster-name",
            "group/an-extremely-long-ingress-group-name-indeed",
        );
        assert!(n.len() <= 32, "{n}");
        assert!(n.starts_with("k8s-an-extremely-long"));
        assert!(!n.contains("--"));
    }

    #[test]
    fn prefix_becomes_two_patterns() {
        let p = |kind, path: &str| PathMatch {
            kind,
            path: path.into(),
        };
        assert_eq!(
            path_patterns(&p(PathKind::Prefix, "/")),
            Some(vec!["/*".to_string()])
        );
        assert_eq!(
            path_patterns(&p(PathKind::Prefix, "/foo/")),
            Some(vec!["/foo".to_string(), "/foo/*".to_string()])
        );
        assert_eq!(
            path_patterns(&p(PathKind::Exact, "/foo/")),
            Some(vec!["/foo/".to_string()])
        );
        assert_eq!(path_patterns(&p(PathKind::Regex, "/a(.*)")), None);
    }
}
