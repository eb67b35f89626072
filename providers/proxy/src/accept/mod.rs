//! Accept: listeners, the PROXY protocol header, TLS (the certificate chosen by SNI, client
//! certificates asked for where routes want them), connection limits and shutdown. A
//! connection is then handed to the relay or to hyper ([`crate::http`]).

pub mod passthrough;
pub mod proxy_protocol;
pub mod server;
pub mod tls;
