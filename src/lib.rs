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
