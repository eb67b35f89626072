//! Which Ingresses are Tollgate's: `spec.ingressClassName`, the legacy class annotation, the
//! default IngressClass, and the `--ingress-class` name claimed without an IngressClass.

use std::collections::HashMap;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use tollgate_contract::{Diagnostic, ObjectKind, Reason, Severity};

use super::annotations::{DEFAULT_CLASS, LEGACY_CLASS};
use super::BuildOptions;

/// Decides class membership for one snapshot.
pub(crate) struct ClassSelector<'a> {
    opts: &'a BuildOptions,
    classes: HashMap<&'a str, &'a IngressClass>,
    has_default_class: bool,
}

impl<'a> ClassSelector<'a> {
    pub(crate) fn new(classes: &'a [IngressClass], opts: &'a BuildOptions) -> Self {
        let ours: Vec<&IngressClass> = classes
            .iter()
            .filter(|c| {
                c.spec
                    .as_ref()
                    .and_then(|s| s.controller.as_deref())
                    .is_some_and(|ctl| ctl == opts.controller_name)
            })
            .collect();
        let has_default_class = ours.iter().any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        });
        ClassSelector {
            opts,
            classes: ours
                .into_iter()
                .filter_map(|c| c.metadata.name.as_deref().map(|n| (n, c)))
                .collect(),
            has_default_class,
        }
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
