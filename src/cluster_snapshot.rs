//! The cluster objects the model builder reads: one consistent snapshot, from any source.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::class_params::TollgateClassParams;

/// Every object kind Tollgate reads, as plain lists. Sources fill it; the builder indexes it.
///
/// Objects are shared (`Arc`): the Kubernetes source hands out what its reflector stores
/// already hold, so a new snapshot after one change costs pointers, not a deep copy of the
/// cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSnapshot {
    pub ingresses: Vec<Arc<Ingress>>,
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// core/v1 Endpoints: read only for Services that have no EndpointSlice.
    pub endpoints: Vec<Arc<Endpoints>>,
    pub secrets: Vec<Arc<Secret>>,
    pub nodes: Vec<Arc<Node>>,
    pub namespaces: Vec<Arc<Namespace>>,
    /// Parameters IngressClasses point at (`spec.parameters`).
    pub class_params: Vec<Arc<TollgateClassParams>>,
    /// Only the pods carrying Tollgate's readiness gate (`readiness_gate::LABEL`): the ALB
    /// registers them while the gate alone holds them not Ready.
    pub gated_pods: Vec<Arc<Pod>>,
    /// Whether the source watches gated pods at all (it may not be allowed to list pods):
    /// without it no gate would ever open, so the webhook gates nothing.
    pub gated_pods_watched: bool,
}

impl ClusterSnapshot {
    /// Total number of objects held.
    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.endpoints.len()
            + self.secrets.len()
            + self.nodes.len()
            + self.namespaces.len()
            + self.class_params.len()
            + self.gated_pods.len()
    }

    /// Adds every object of `other` (a second file or fixture read on its own).
    pub fn merge(&mut self, other: ClusterSnapshot) {
        self.ingresses.extend(other.ingresses);
        self.ingress_classes.extend(other.ingress_classes);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.endpoints.extend(other.endpoints);
        self.secrets.extend(other.secrets);
        self.nodes.extend(other.nodes);
        self.namespaces.extend(other.namespaces);
        self.class_params.extend(other.class_params);
        self.gated_pods.extend(other.gated_pods);
    }

    /// Whether the snapshot holds no object at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
