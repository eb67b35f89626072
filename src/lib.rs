//! Tollgate, the controller: sources of cluster objects, the Ingress → model builder, and the
//! command-line front end. Providers live in `providers/`.

pub mod admin_server;
pub mod admission_webhook;
pub mod alb_class_params;
pub mod allocator;
pub mod aws_command;
pub mod class_params;
pub mod cluster_snapshot;
pub mod echo_backend;
pub mod ingress_status;
pub mod kubernetes_mode;
pub mod leader_election;
pub mod model_builder;
pub mod proxy_command;
pub mod readiness_gate;
pub mod sources;

pub use cluster_snapshot::ClusterSnapshot;
pub use model_builder::last_known_good::LastKnownGood;
pub use model_builder::{
    build, build_with, load_balancer_id, BuildCache, BuildOptions, BuildOutput, Grouping,
    ProviderKind,
};

/// Hands memory freed by a configuration rebuild back to the OS. A rebuild briefly holds
/// the old and the new snapshot and model; glibc keeps such freed memory in its arenas, which
/// measured as half the controller's RSS with 1,000 Ingresses. Rebuilds are rare next to
/// requests, so the trim's cost does not matter.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no Rust invariant is
    // involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

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
