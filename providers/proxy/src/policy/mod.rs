//! Policy layers a route may carry, one file each, run between routing and forwarding
//! (`request_path::guarded_forward`, and the relay for the cheap ones): who the client is
//! ([`forwarded_for`]), rate limits, basic and external authentication, client
//! certificates, CORS. HSTS is a header the listener's config adds; session affinity
//! chooses a target and lives with the upstream stage.

pub mod basic_auth;
pub mod client_cert;
pub mod cors;
pub mod external_auth;
#[doc(hidden)]
pub mod forwarded_for;
pub mod rate_limit;
