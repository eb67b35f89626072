//! Tollgate's provider contract.
//!
//! The desired-state [`model`] every provider consumes, its reference [`matching`] semantics,
//! the [`Diagnostic`]s reported against cluster objects, and the [`Provider`] trait. This crate
//! does no I/O and depends on no Kubernetes client or cloud SDK, so the compiler keeps it pure.

pub mod diagnostics;
pub mod matching;
pub mod model;
pub mod provider;
pub mod rule_list;

pub use diagnostics::{Diagnostic, ObjectKind, Reason, Severity, SubjectRef};
pub use model::*;
pub use provider::{ApplyReport, LoadBalancerStatus, Provider};
pub use rule_list::RuleList;
