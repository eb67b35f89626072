//! The AWS Load Balancer Controller's `IngressClassParams` (`elbv2.k8s.aws/v1beta1`,
//! cluster-scoped), read for IngressClasses Tollgate claims so that a class moved over from
//! that controller keeps its settings (issue 13). Each is read as a [`TollgateClassParams`]:
//! what Tollgate honours maps onto the same fields, what it does not is named in a Warning on
//! every Ingress of the class, and protective fields it does not honour (WAF) keep the
//! class's Ingresses unserved.
//!
//! Fields and precedence from the controller's apis/elbv2/v1beta1/ingressclassparams_types.go
//! and pkg/ingress (read, not copied): a set field replaces the Ingresses' annotation (tags
//! and load balancer attributes are merged, the parameters' winning).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::class_params::{
    ClassGroup, ClassScheme, ClassTargetType, ForeignParams, TollgateClassParams,
    TollgateClassParamsSpec,
};

/// API group of the AWS Load Balancer Controller's resources.
pub const ELBV2_GROUP: &str = "elbv2.k8s.aws";

/// Marks a [`TollgateClassParams`] read from an `IngressClassParams`, so that an
/// IngressClass's `spec.parameters` finds it by group and name.
pub const FROM_ANNOTATION: &str = "tollgate.io/read-from";

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "elbv2.k8s.aws",
    version = "v1beta1",
    kind = "IngressClassParams",
    plural = "ingressclassparams",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct IngressClassParamsSpec {
    #[serde(default)]
    #[schemars(skip)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub group: Option<ClassGroup>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub ip_address_type: Option<String>,
    #[serde(default)]
    pub subnets: Option<SubnetSelector>,
    #[serde(default, rename = "inboundCIDRs")]
    pub inbound_cidrs: Vec<String>,
    #[serde(default)]
    pub tags: Vec<KeyValue>,
    #[serde(default)]
    pub load_balancer_attributes: Vec<KeyValue>,
    #[serde(default)]
    pub certificate_arn: Vec<String>,
    #[serde(default)]
    pub ssl_policy: Option<String>,
    /// A port number, as a string.
    #[serde(default)]
    pub ssl_redirect_port: Option<String>,
    #[serde(default)]
    pub target_type: Option<String>,
    #[serde(default, rename = "prefixListsIDs")]
    pub prefix_lists_ids: Vec<String>,
    /// The legacy spelling of `prefixListsIDs`.
    #[serde(default, rename = "PrefixListsIDs")]
    pub prefix_lists_ids_legacy: Vec<String>,
    #[serde(default)]
    pub load_balancer_name: Option<String>,
    #[serde(default)]
    pub wafv2_acl_arn: Option<String>,
    #[serde(default)]
    pub wafv2_acl_name: Option<String>,
    /// Every other field, named as not honoured (never dropped silently).
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `subnets`: IDs, or tags to select subnets by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubnetSelector {
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    #[schemars(skip)]
    pub tags: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// Fields of the controller's IngressClassParams that protect something: not honoured, so
/// the class's Ingresses are not served.
const PROTECTIVE: &[&str] = &[];

impl IngressClassParams {
    /// These parameters as Tollgate's, carrying what is not honoured.
    pub fn to_tollgate(&self) -> TollgateClassParams {
        let s = &self.spec;
        let name = self.metadata.name.clone().unwrap_or_default();
        let mut foreign = ForeignParams {
            what: format!("IngressClassParams {name}"),
            ..ForeignParams::default()
        };
        let mut not = |field: &str, why: &str| {
            foreign.not_honoured.push(format!("{field} ({why})"));
        };
        let scheme = match s.scheme.as_deref() {
            None => None,
            Some("internal") => Some(ClassScheme::Internal),
            Some("internet-facing") => Some(ClassScheme::InternetFacing),
            Some(other) => {
                not(
                    "scheme",
                    &format!("{other:?} is neither internal nor internet-facing"),
                );
                None
            }
        };
        let target_type = match s.target_type.as_deref() {
            None => None,
            Some("ip") => Some(ClassTargetType::Ip),
            Some("instance") => Some(ClassTargetType::Instance),
            Some(other) => {
                not(
                    "targetType",
                    &format!("{other:?} is neither ip nor instance"),
                );
                None
            }
        };
        let ip_address_type = match s.ip_address_type.as_deref() {
            None => None,
            Some(t @ ("ipv4" | "dualstack" | "dualstack-without-public-ipv4")) => {
                Some(t.to_string())
            }
            Some(other) => {
                not(
                    "ipAddressType",
                    &format!("{other:?} is not an IP address type"),
                );
                None
            }
        };
        let subnets = match &s.subnets {
            Some(sel) if !sel.tags.is_empty() => {
                not(
                    "subnets.tags",
                    "subnets are not chosen by arbitrary tags; they are discovered by their role tags",
                );
                Vec::new()
            }
            Some(sel) => sel.ids.clone(),
            None => Vec::new(),
        };
        let ssl_redirect_port = match s.ssl_redirect_port.as_deref() {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    not("sslRedirectPort", &format!("{p:?} is not a port"));
                    None
                }
            },
        };
        let mut prefix_lists = s.prefix_lists_ids.clone();
        prefix_lists.extend(s.prefix_lists_ids_legacy.iter().cloned());
        let mut refused = Vec::new();
        for (field, value) in &s.other {
            if value.is_null() {
                continue;
            }
            if PROTECTIVE.contains(&field.as_str()) {
                refused.push(field.clone());
            } else {
                not(field, "not implemented");
            }
        }
        foreign.refused = refused;
        let spec = TollgateClassParamsSpec {
            group: s.group.clone().filter(|g| !g.name.is_empty()),
            scheme,
            subnets,
            inbound_cidrs: s.inbound_cidrs.clone(),
            tags: s
                .tags
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            certificate_arns: s.certificate_arn.clone(),
            ssl_policy: s.ssl_policy.clone().filter(|p| !p.is_empty()),
            target_type,
            namespace_selector: s.namespace_selector.clone(),
            ip_address_type,
            load_balancer_attributes: s
                .load_balancer_attributes
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            prefix_lists,
            ssl_redirect_port,
            load_balancer_name: s.load_balancer_name.clone().filter(|n| !n.is_empty()),
            wafv2_acl_arn: s.wafv2_acl_arn.clone().filter(|a| !a.is_empty()),
            wafv2_acl_name: s.wafv2_acl_name.clone().filter(|n| !n.is_empty()),
            foreign: Some(foreign),
            ..TollgateClassParamsSpec::default()
        };
        let mut out = TollgateClassParams::new(&name, spec);
        out.metadata.annotations = Some(
            [(FROM_ANNOTATION.to_string(), ELBV2_GROUP.to_string())]
                .into_iter()
                .collect(),
        );
        out
    }
}
