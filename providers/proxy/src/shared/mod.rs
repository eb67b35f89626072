//! Below every stage: the types and helpers they all use (bodies, the connection's facts,
//! the proxy's own answers, settings, metrics, CIDR lists, the client connection table).
//! Nothing here imports from the stages above.

pub mod body;
pub mod cidr;
pub mod client_connections;
pub mod conn;
pub mod metrics;
pub mod responses;
pub mod settings;
