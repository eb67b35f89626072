//! Entry points for the fuzz targets in `tests/fuzz` — not an API. They run the relay's
//! parsers on bytes from outside, exactly as the data path does, and return what the
//! targets' invariants are checked against; nothing here touches a socket.

use std::mem::MaybeUninit;
use std::sync::Arc;

use tollgate_contract::DesiredState;

use crate::http::http1_relay::{plan_request, RelayContext, Step};
use crate::shared::client_connections::ConnectionTable;
use crate::shared::conn::ConnInfo;
use crate::shared::settings::Limits;
use crate::upstream::http1::{parse_final_head, response_facts, BodyCursor, Framing, ParsedHead};
use crate::{Proxy, ProxyError, ProxySettings};

/// What the relay made of a request head.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    Incomplete,
    Handover,
    Reject(u16),
    /// Forwarded by the relay: the head's length in the input, and the request head the
    /// target would receive.
    Forward {
        head_len: usize,
        upstream: Vec<u8>,
    },
}

/// A proxy with a configuration applied, whose relay parses request heads.
pub struct RelayHarness {
    proxy: Proxy,
    ctx: RelayContext,
}

impl RelayHarness {
    pub fn new(model: &DesiredState) -> Result<Self, ProxyError> {
        let proxy = Proxy::new(ProxySettings::default(), None)?;
        proxy.apply_model(model);
        let slot = Arc::new(ConnectionTable::new(0)).open().slot.clone();
        let conn = ConnInfo {
            client: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
            local: std::net::SocketAddr::from(([127, 0, 0, 1], 80)),
            tls: false,
            client_cert: None,
        };
        let ctx = RelayContext::new(proxy.shared.clone(), conn, &Limits::default(), slot);
        Ok(RelayHarness { proxy, ctx })
    }

    /// Applies another model, as a configuration change does.
    pub fn apply(&self, model: &DesiredState) {
        self.proxy.apply_model(model);
    }

    /// Parses and routes the request head at the front of `bytes`, as the relay does.
    pub fn request_head(&self, bytes: &[u8]) -> RequestOutcome {
        let mut upstream = Vec::new();
        match plan_request(bytes, &self.ctx, &mut upstream) {
            Step::Incomplete => RequestOutcome::Incomplete,
            Step::Handover => RequestOutcome::Handover,
            Step::Reject(status, _) => RequestOutcome::Reject(status),
            Step::Forward(plan) => RequestOutcome::Forward {
                head_len: plan.head_len,
                upstream,
            },
        }
    }
}

/// What the relay made of a target's response head.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseOutcome {
    Incomplete,
    Refused,
    Final {
        len: usize,
        status: u16,
        /// `None`: no body; `Some(None)`: until close or chunked; `Some(Some(n))`: n bytes.
        length: Option<Option<u64>>,
    },
}

/// Parses a target's response head as the relay does (`head_request`: the request was HEAD).
pub fn response_head(bytes: &[u8], head_request: bool) -> ResponseOutcome {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let (len, resp) = match parse_final_head(bytes, &mut storage) {
        Ok(ParsedHead::Incomplete) => return ResponseOutcome::Incomplete,
        Ok(ParsedHead::Final { len, response }) => (len, response),
        Err(_) => return ResponseOutcome::Refused,
    };
    match response_facts(&resp, head_request) {
        Ok(f) => ResponseOutcome::Final {
            len,
            status: f.status,
            length: match f.framing {
                Framing::None => None,
                Framing::Length(n) => Some(Some(n)),
                Framing::Chunked | Framing::UntilClose => Some(None),
            },
        },
        Err(_) => ResponseOutcome::Refused,
    }
}

/// Where a chunked body ends (bytes consumed) when scanned whole, or `Err` when refused.
/// `pieces` splits the same bytes as they might arrive from the network; the result must
/// not depend on the split.
pub fn chunked_end(bytes: &[u8], pieces: &[usize]) -> (Result<Option<usize>, ()>, bool) {
    let whole = scan(bytes, &[bytes.len()]);
    let split = scan(bytes, pieces);
    (whole, whole == split)
}

fn scan(bytes: &[u8], pieces: &[usize]) -> Result<Option<usize>, ()> {
    let mut cursor = BodyCursor::new(Framing::Chunked);
    let mut at = 0;
    for &p in pieces.iter().chain(std::iter::once(&bytes.len())) {
        let end = p.clamp(at, bytes.len());
        // Like the relay's read loop: everything scanned so far, up to where the body ends.
        let mut piece_at = at;
        while piece_at < end {
            let n = cursor.scan(&bytes[piece_at..end])?;
            if n == 0 {
                break;
            }
            piece_at += n;
            if cursor.is_done() {
                return Ok(Some(piece_at));
            }
        }
        at = end;
        if cursor.is_done() {
            return Ok(Some(at));
        }
    }
    Ok(None)
}
