//! The cluster objects the model builder reads: one consistent snapshot, from any source.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Secret, Service};
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
    }

    /// Whether the snapshot holds no object at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
