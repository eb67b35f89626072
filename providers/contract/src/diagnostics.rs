//! Diagnostics: what the builder or a provider has to say about one object.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing is wrong; worth knowing.
    Info,
    /// Built, but degraded (a route answers 503, a certificate was skipped, a route lost a
    /// conflict).
    Warning,
    /// Rejected: the object, or the named part of it, was left out of the model.
    Error,
}

/// What a diagnostic is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    Ingress,
    IngressClass,
    Service,
    Secret,
    EndpointSlice,
    Endpoints,
    Node,
    Namespace,
    /// A manifest file (the name is its path).
    File,
    /// A load balancer of the model (the name is its id).
    LoadBalancer,
}

/// The object a diagnostic is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectRef {
    pub kind: ObjectKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{:?} {}", self.kind, self.name)
        } else {
            write!(f, "{:?} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A machine-readable reason; used as the Kubernetes Event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// A manifest file or document could not be parsed.
    ManifestInvalid,
    /// A manifest holds a kind Tollgate does not read; it is ignored.
    KindIgnored,
    /// The same object appears twice in the manifests; the later one is used.
    DuplicateObject,
    /// An object could not be decoded as its kind.
    ObjectInvalid,
    /// An annotation's value is malformed or out of range.
    AnnotationInvalid,
    /// An annotation under a known prefix that no controller documents (a typo, most often).
    AnnotationUnknown,
    /// A documented annotation this provider does not honour (or honours in part).
    AnnotationIgnored,
    /// A protective annotation (authentication, allow-lists, WAF...) this provider does not
    /// honour: the object is not served rather than served without that protection.
    AnnotationUnsupported,
    /// A snippet of raw proxy configuration: never applied.
    AnnotationRefused,
    /// The object turned invalid; its last valid version is still served.
    LastValidVersionServed,
    /// A host is not a valid DNS name or wildcard.
    HostInvalid,
    /// A path is not valid for its path type.
    PathInvalid,
    /// An Ingress has neither rules nor a default backend.
    NoRules,
    /// Both `spec.ingressClassName` and the legacy class annotation are set.
    IngressClassAmbiguous,
    /// The backend Service does not exist.
    ServiceNotFound,
    /// The backend Service has no such port.
    ServicePortNotFound,
    /// The backend Service's type cannot be load-balanced this way.
    ServiceTypeUnsupported,
    /// A `resource` backend: not supported.
    ResourceBackendUnsupported,
    /// A TLS Secret does not exist.
    SecretNotFound,
    /// A TLS Secret is not a usable certificate and key.
    SecretInvalid,
    /// Two Ingresses claim the same host and path; one wins.
    RouteConflict,
    /// Several Ingresses in one load balancer set a default backend; one wins.
    DefaultBackendConflict,
    /// Members of one group disagree on a load-balancer-wide setting; one wins.
    GroupSettingConflict,
    /// A provider-enforced limit was exceeded.
    QuotaExceeded,
    /// No certificate could be found for a TLS host (ACM discovery), or an HTTPS listener
    /// has none at all.
    CertificateNotFound,
    /// A provider failed to apply part of the model.
    ApplyFailed,
    /// Everything was built.
    Synced,
}

/// One finding about one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    pub severity: Severity,
    pub subject: SubjectRef,
    pub reason: Reason,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about a namespaced or cluster-scoped object.
    pub fn new(
        severity: Severity,
        kind: ObjectKind,
        namespace: impl Into<String>,
        name: impl Into<String>,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            subject: SubjectRef {
                kind,
                namespace: namespace.into(),
                name: name.into(),
            },
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {}: {:?}: {}",
            self.severity, self.subject, self.reason, self.message
        )
    }
}
