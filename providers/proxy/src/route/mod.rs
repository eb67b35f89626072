//! Route: one configuration generation compiled from the model ([`config`]), with each
//! listener's rules in an indexed table ([`route_table`]), swapped atomically by
//! [`crate::Proxy::apply_model`].

pub mod config;
pub mod route_table;
