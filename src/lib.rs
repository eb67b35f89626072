//! Tollgate, the controller: sources of cluster objects, the Ingress → model builder, and the
//! command-line front end. Providers live in `providers/`.

pub mod aws_command;
pub mod cluster_snapshot;
pub mod echo_backend;
pub mod model_builder;
pub mod proxy_command;
pub mod sources;

pub use cluster_snapshot::ClusterSnapshot;
pub use model_builder::{build, BuildOptions, BuildOutput, Grouping};

/// Logs a diagnostic at the level its severity calls for (a CLI's or a controller's log).
pub fn log_diagnostic(d: &tollgate_contract::Diagnostic) {
    use tollgate_contract::Severity;
    match d.severity {
        Severity::Error => {
            tracing::error!(subject = %d.subject, reason = ?d.reason, "{}", d.message)
        }
        Severity::Warning => {
            tracing::warn!(subject = %d.subject, reason = ?d.reason, "{}", d.message)
        }
        Severity::Info => tracing::info!(subject = %d.subject, reason = ?d.reason, "{}", d.message),
    }
}
