//! The cluster objects the model builder reads: one consistent snapshot, from any source.

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::class_params::TollgateClassParams;

/// Every object kind Tollgate reads, as plain lists. Sources fill it; the builder indexes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSnapshot {
    pub ingresses: Vec<Ingress>,
    pub ingress_classes: Vec<IngressClass>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    /// core/v1 Endpoints: read only for Services that have no EndpointSlice.
    pub endpoints: Vec<Endpoints>,
    pub secrets: Vec<Secret>,
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
    /// Parameters IngressClasses point at (`spec.parameters`).
    pub class_params: Vec<TollgateClassParams>,
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
