//! `TollgateClassParams`: settings a cluster admin attaches to an IngressClass through
//! `spec.parameters` (apiGroup `tollgate.io`, kind `TollgateClassParams`). Where a field is
//! set it overrides the same setting made by an Ingress's annotations, so an admin can pin
//! e.g. the scheme or the group for every Ingress of the class.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model_builder::annotations::IngressSettings;
use tollgate_contract::{IpAddressType, Scheme, TargetType};

/// API group of Tollgate's own resources.
pub const API_GROUP: &str = "tollgate.io";

/// Parameters for every Ingress of an IngressClass that references them. Cluster-scoped.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tollgate.io",
    version = "v1alpha1",
    kind = "TollgateClassParams",
    plural = "tollgateclassparams",
    derive = "PartialEq",
    singular = "tollgateclassparams",
    shortname = "tcp",
    doc = "Settings applied to every Ingress of an IngressClass that names these parameters; set fields override the Ingresses' annotations."
)]
#[serde(rename_all = "camelCase")]
pub struct TollgateClassParamsSpec {
    /// Every Ingress of the class joins this group (one load balancer), whatever its
    /// `group.name` annotation says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<ClassGroup>,
    /// `internet-facing` or `internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "scheme_schema")]
    pub scheme: Option<ClassScheme>,
    /// Subnet IDs or Name tags for the load balancers (otherwise discovered by tags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Security group IDs or Name tags attached instead of a managed security group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// CIDRs allowed in by the managed security group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_cidrs: Vec<String>,
    /// Tags added to every AWS resource (merged over the Ingresses' `tags` annotation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// ACM certificate ARNs for the HTTPS listeners (replace the annotation's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_arns: Vec<String>,
    /// ELB security policy of the HTTPS listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_policy: Option<String>,
    /// `ip` or `instance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "target_type_schema")]
    pub target_type: Option<ClassTargetType>,
    /// `ingress-nginx`: the class's Ingresses get ingress-nginx's defaults where they differ
    /// from ALB's (a redirect to HTTPS and HSTS when an Ingress has `tls`, a 1m body limit),
    /// so Ingresses written for ingress-nginx behave as they did; `alb`: ALB's. Unset: the
    /// controller's `--ingress-nginx-defaults`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "defaults_schema")]
    pub defaults: Option<ClassDefaults>,
    /// Only Ingresses in namespaces whose labels match may use the class; others are not
    /// served, with an Error (the AWS Load Balancer Controller's IngressClassParams
    /// `namespaceSelector`). Unset: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub namespace_selector: Option<LabelSelector>,
    /// `ipv4`, `dualstack` or `dualstack-without-public-ipv4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ip_address_type_schema")]
    pub ip_address_type: Option<String>,
    /// Load balancer attributes, merged over the Ingresses' (these win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub load_balancer_attributes: BTreeMap<String, String>,
    /// Managed prefix lists (`pl-...`) the managed security group admits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_lists: Vec<String>,
    /// Port HTTP requests are redirected to with HTTPS (as the `ssl-redirect` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_redirect_port: Option<u16>,
    /// The name load balancers of the class are created with (as `load-balancer-name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_name: Option<String>,
    /// A WAFv2 web ACL for the class's load balancers, by ARN or `none` (as
    /// `wafv2-acl-arn`; these win over the Ingresses').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wafv2_acl_arn: Option<String>,
    /// A WAFv2 web ACL by name or `none` (as `wafv2-acl-name`; wins over the ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wafv2_acl_name: Option<String>,
    /// Where these parameters came from when they are another controller's (the AWS Load
    /// Balancer Controller's `elbv2.k8s.aws` IngressClassParams), with what of them is not
    /// honoured. Never part of the CRD.
    #[serde(skip)]
    #[schemars(skip)]
    pub foreign: Option<ForeignParams>,
}

/// Another controller's class parameters, read as Tollgate's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignParams {
    /// `IngressClassParams <name>`, for messages.
    pub what: String,
    /// Fields Tollgate does not honour (a Warning on each Ingress of the class).
    pub not_honoured: Vec<String>,
    /// Protective fields Tollgate does not honour: the class's Ingresses are not served
    /// rather than served without the protection.
    pub refused: Vec<String>,
}

fn label_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "A label selector (matchLabels, matchExpressions) over the Ingress's Namespace.",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn ip_address_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_enum(
        &["ipv4", "dualstack", "dualstack-without-public-ipv4"],
        "The load balancer's IP address type.",
    )
}

/// Whether `labels` satisfy `selector` (Kubernetes label selector semantics: every
/// `matchLabels` pair and every `matchExpressions` term must hold; an empty selector
/// matches everything).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let terms = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            // An operator the API server would have refused: select nothing.
            _ => false,
        }
    });
    pairs && terms
}

/// Whose defaults a class's Ingresses get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassDefaults {
    #[serde(rename = "ingress-nginx")]
    IngressNginx,
    #[serde(rename = "alb")]
    Alb,
}

fn defaults_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_enum(
        &["ingress-nginx", "alb"],
        "`ingress-nginx` or `alb`: whose defaults the class's Ingresses get.",
    )
}

// An optional field is simply absent: a `null` in a CRD enum makes kube-apiserver 1.20
// reject the CRD, and older `kubectl` refuses it client-side.
fn string_enum(values: &[&str], description: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": values,
        "description": description,
    })
}

fn scheme_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_enum(
        &["internet-facing", "internal"],
        "`internet-facing` or `internal`.",
    )
}

fn target_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_enum(&["ip", "instance"], "`ip` or `instance`.")
}

/// An ingress group named by class parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClassGroup {
    /// The group name (as `alb.ingress.kubernetes.io/group.name`).
    pub name: String,
}

/// Load balancer scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClassScheme {
    InternetFacing,
    Internal,
}

/// How targets are registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClassTargetType {
    Ip,
    Instance,
}

impl TollgateClassParamsSpec {
    /// Overrides `settings` with every field the admin set.
    /// What in these parameters cannot be applied as written (each makes the class's
    /// Ingresses refused: a web ACL or name that cannot be honoured is not dropped).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = &self.load_balancer_name {
            if let Err(e) = crate::model_builder::alb_protection::valid_load_balancer_name(n) {
                out.push(format!("loadBalancerName {n:?}: {e}"));
            }
        }
        if let Some(a) = &self.wafv2_acl_arn {
            if let Err(e) = crate::model_builder::alb_protection::parse_web_acl_arn(a) {
                out.push(format!("wafv2AclArn {a:?}: {e}"));
            }
        }
        if let Some(n) = &self.wafv2_acl_name {
            if let Err(e) = crate::model_builder::alb_protection::parse_web_acl_name(n) {
                out.push(format!("wafv2AclName {n:?}: {e}"));
            }
        }
        out
    }

    pub fn apply_to(&self, settings: &mut IngressSettings) {
        if let Some(g) = &self.group {
            settings.group_name = Some(g.name.clone());
        }
        if let Some(s) = self.scheme {
            settings.scheme = Some(match s {
                ClassScheme::InternetFacing => Scheme::InternetFacing,
                ClassScheme::Internal => Scheme::Internal,
            });
        }
        settings
            .tags
            .extend(self.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !self.certificate_arns.is_empty() {
            settings.certificate_arns = self.certificate_arns.clone();
        }
        if let Some(p) = &self.ssl_policy {
            settings.ssl_policy = Some(p.clone());
        }
        if !self.subnets.is_empty() {
            settings.subnets = Some(self.subnets.clone());
        }
        if !self.security_groups.is_empty() {
            settings.security_groups = Some(self.security_groups.clone());
        }
        if !self.inbound_cidrs.is_empty() {
            settings.inbound_cidrs = Some(self.inbound_cidrs.clone());
        }
        if let Some(t) = self.target_type {
            settings.backend.target_type = Some(match t {
                ClassTargetType::Ip => TargetType::Ip,
                ClassTargetType::Instance => TargetType::Instance,
            });
        }
        if let Some(t) = self.ip_address_type.as_deref() {
            settings.ip_address_type = match t {
                "ipv4" => Some(IpAddressType::Ipv4),
                "dualstack" => Some(IpAddressType::Dualstack),
                "dualstack-without-public-ipv4" => Some(IpAddressType::DualstackWithoutPublicIpv4),
                _ => settings.ip_address_type,
            };
        }
        settings.load_balancer_attributes.extend(
            self.load_balancer_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if !self.prefix_lists.is_empty() {
            settings.inbound_prefix_lists = Some(self.prefix_lists.clone());
        }
        if let Some(p) = self.ssl_redirect_port {
            settings.ssl_redirect_port = Some(p);
        }
        if let Some(n) = &self.load_balancer_name {
            settings.load_balancer_name = Some(n.clone());
        }
        // Checked by `problems` first: an Ingress of a class whose ACL does not parse is
        // refused before this applies. The name wins, as with the annotations.
        let acl = self
            .wafv2_acl_name
            .as_deref()
            .map(crate::model_builder::alb_protection::parse_web_acl_name)
            .or_else(|| {
                self.wafv2_acl_arn
                    .as_deref()
                    .map(crate::model_builder::alb_protection::parse_web_acl_arn)
            })
            .and_then(Result::ok);
        if acl.is_some() {
            settings.protection.web_acl = acl;
        }
    }
}

/// The CRD manifest (`tollgate crd`).
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&TollgateClassParams::crd())
}
