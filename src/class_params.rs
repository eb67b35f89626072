//! `TollgateClassParams`: settings a cluster admin attaches to an IngressClass through
//! `spec.parameters` (apiGroup `tollgate.io`, kind `TollgateClassParams`). Where a field is
//! set it overrides the same setting made by an Ingress's annotations, so an admin can pin
//! e.g. the scheme or the group for every Ingress of the class.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model_builder::annotations::IngressSettings;
use tollgate_contract::{Scheme, TargetType};

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
    }
}

/// The CRD manifest (`tollgate crd`).
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&TollgateClassParams::crd())
}
