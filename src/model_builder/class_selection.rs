//! Which Ingresses are Tollgate's: `spec.ingressClassName`, the legacy class annotation, the
//! default IngressClass, and the `--ingress-class` name claimed without an IngressClass.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity};

use super::annotations::{DEFAULT_CLASS, LEGACY_CLASS};
use super::BuildOptions;
use crate::alb_class_params::{ELBV2_GROUP, FROM_ANNOTATION};
use crate::class_params::{TollgateClassParams, TollgateClassParamsSpec, API_GROUP};

fn is_default(c: &IngressClass) -> bool {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS))
        .is_some_and(|v| v == "true")
}

/// Decides class membership for one snapshot.
pub(crate) struct ClassSelector<'a> {
    opts: &'a BuildOptions,
    classes: HashMap<&'a str, &'a IngressClass>,
    has_default_class: bool,
}

impl<'a> ClassSelector<'a> {
    pub(crate) fn new(classes: &'a [Arc<IngressClass>], opts: &'a BuildOptions) -> Self {
        let ours: Vec<&IngressClass> = classes
            .iter()
            .filter(|c| {
                c.spec
                    .as_ref()
                    .and_then(|s| s.controller.as_deref())
                    .is_some_and(|ctl| ctl == opts.controller_name)
            })
            .map(|c| &**c)
            .collect();
        let has_default_class = ours.iter().any(|c| is_default(c));
        ClassSelector {
            opts,
            classes: ours
                .into_iter()
                .filter_map(|c| c.metadata.name.as_deref().map(|n| (n, c)))
                .collect(),
            has_default_class,
        }
    }

    /// The class name an Ingress names (the field wins over the legacy annotation).
    fn class_of<'i>(&self, ing: &'i Ingress) -> Option<&'i str> {
        ing.spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                ing.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS))
                    .map(String::as_str)
            })
    }

    /// The TollgateClassParams of the Ingress's class (or of the default class when it names
    /// none), if the class points at existing ones.
    pub(crate) fn params_for<'p>(
        &self,
        ing: &Ingress,
        params: &'p [Arc<TollgateClassParams>],
    ) -> Option<&'p TollgateClassParamsSpec> {
        if params.is_empty() {
            return None;
        }
        let class = match self.class_of(ing) {
            Some(c) => self.classes.get(c)?,
            None => self.classes.values().find(|c| is_default(c))?,
        };
        let p = class.spec.as_ref()?.parameters.as_ref()?;
        // Tollgate's own, or the AWS Load Balancer Controller's read as Tollgate's.
        let from = match (p.api_group.as_deref(), p.kind.as_str()) {
            (Some(API_GROUP), "TollgateClassParams") => None,
            (Some(ELBV2_GROUP), "IngressClassParams") => Some(ELBV2_GROUP),
            _ => return None,
        };
        params
            .iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(p.name.as_str())
                    && c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(FROM_ANNOTATION))
                        .map(String::as_str)
                        == from
            })
            .map(|c| &c.spec)
    }

    fn is_ours(&self, class: &str) -> bool {
        self.opts.ingress_class.as_deref() == Some(class) || self.classes.contains_key(class)
    }

    /// Whether Tollgate should build this Ingress; may add a diagnostic about ambiguity.
    pub(crate) fn claims(&self, ing: &Ingress, diags: &mut Vec<Diagnostic>) -> bool {
        let field = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        let legacy = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS))
            .map(String::as_str);
        match (field, legacy) {
            (Some(f), Some(l)) if f != l => {
                let claimed = self.is_ours(f);
                if claimed || self.is_ours(l) {
                    diags.push(Diagnostic::new(
                        Severity::Warning,
                        ObjectKind::Ingress,
                        ing.metadata.namespace.clone().unwrap_or_default(),
                        ing.metadata.name.clone().unwrap_or_default(),
                        Reason::IngressClassAmbiguous,
                        format!(
                            "spec.ingressClassName {f:?} and annotation {LEGACY_CLASS} {l:?} disagree; spec.ingressClassName is used"
                        ),
                    ));
                }
                claimed
            }
            (Some(c), _) | (None, Some(c)) => self.is_ours(c),
            (None, None) => self.has_default_class || self.opts.watch_ingress_without_class,
        }
    }
}
