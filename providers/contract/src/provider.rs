//! The contract every provider implements.

use std::future::Future;

use serde::Serialize;

use crate::diagnostics::Diagnostic;
use crate::model::DesiredState;

/// Something that makes the world match a [`DesiredState`]: cloud load balancers, or the
/// in-process proxy's route table.
///
/// `apply` is given the whole desired state every time and must be idempotent: providers
/// diff against what they observe and act only on the difference. A failure in one load
/// balancer must not stop the others from being applied; it is reported per load balancer.
pub trait Provider: Send + Sync {
    /// A failure that stopped the provider from applying anything at all.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Bring the world in line with `desired`.
    fn apply(
        &self,
        desired: &DesiredState,
    ) -> impl Future<Output = Result<ApplyReport, Self::Error>> + Send;
}

/// The outcome of one [`Provider::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// One entry per load balancer of the desired state.
    pub load_balancers: Vec<LoadBalancerStatus>,
    /// Findings from the provider (quota violations, failed calls), per object.
    pub diagnostics: Vec<Diagnostic>,
}

/// What a provider reports back for one load balancer, for Ingress status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadBalancerStatus {
    pub id: String,
    /// DNS name or IP address clients reach it on, when known.
    pub address: Option<String>,
    /// Whether the provider's view now matches the desired state.
    pub converged: bool,
}
