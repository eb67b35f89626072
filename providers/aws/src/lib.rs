//! Tollgate's AWS provider: Ingress groups as Application Load Balancers.
//!
//! This crate holds the pure half: [`alb_stack`] turns a load balancer of the model into ALB
//! resource specs (names, tags, conditions, actions) after enforcing the quotas AWS has and the
//! emulator does not; [`inventory`] is what an observation of AWS returns; [`plan`] diffs the
//! two into ordered changes, with rules matched by content and stable, sparse priorities.
//! The SDK half (observing by tags, applying changes) builds on these.

pub mod alb_stack;
pub mod api_pacing;
pub mod apply_scope;
pub mod aws_api;
pub mod backend_rules;
pub mod inventory;
pub mod plan;
pub mod priorities;
pub mod subnet_discovery;
