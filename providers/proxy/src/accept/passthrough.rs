//! ingress-nginx `ssl-passthrough` at accept: a TLS connection whose server name is a
//! passthrough host is not terminated but joined, byte for byte, to a target of the host's
//! group; any other goes on to the proxy's own handshake with the bytes read so far.
//!
//! As ingress-nginx's TCP proxy does (pkg/tcpproxy/tcp.go), the server name is read from the
//! first TLS record, matched exactly, and a ClientHello it cannot read (split over records,
//! not TLS) is handled as one without a name. Unlike it, the proxy reads that record only
//! while some host is passed through, and no PROXY header is sent to the target (neither
//! does ingress-nginx's; a TODO there).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::upstream::{InFlight, UpstreamGroup};

/// A TLS record's largest payload (RFC 8446 §5.1) plus its header.
const MAX_RECORD: usize = 5 + (1 << 14);
/// Targets tried before the connection is closed (ingress-nginx tries one).
const MAX_ATTEMPTS: usize = 3;

/// Reads the client's first TLS record (normally the whole ClientHello). Stops early, with
/// what it has, at anything that is not a TLS handshake record: the handshake that follows
/// refuses it as it would have.
pub(crate) async fn read_first_record<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if buf.len() >= 5 {
            if buf[0] != 0x16 {
                return Ok(buf);
            }
            let want = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if buf.len() >= want.min(MAX_RECORD) {
                return Ok(buf);
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The server name a ClientHello in `record` asks for (RFC 6066 §3), if it can be read
/// from this one record.
pub fn server_name(record: &[u8]) -> Option<&str> {
    let mut r = Reader(record);
    if r.u8()? != 0x16 {
        return None;
    }
    r.take(2)?; // legacy record version
    let len = usize::from(r.u16()?);
    let mut hs = Reader(r.take(len)?);
    if hs.u8()? != 0x01 {
        return None; // not a ClientHello
    }
    let hs_len = hs.u24()?;
    let mut hello = Reader(hs.take(hs_len)?);
    hello.take(2 + 32)?; // client version, random
    let session = usize::from(hello.u8()?);
    hello.take(session)?;
    let suites = usize::from(hello.u16()?);
    hello.take(suites)?;
    let compression = usize::from(hello.u8()?);
    hello.take(compression)?;
    let ext_len = usize::from(hello.u16()?);
    let mut exts = Reader(hello.take(ext_len)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let mut data = Reader(exts.take(len)?);
        if kind != 0 {
            continue;
        }
        let list = usize::from(data.u16()?);
        let mut names = Reader(data.take(list)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let n = usize::from(names.u16()?);
            let name = names.take(n)?;
            if name_type == 0 {
                return std::str::from_utf8(name).ok();
            }
        }
        return None;
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// Joins the client to a target of `group`: the bytes already read first, then both ways
/// until either side closes. A target that refuses is passed over for another; with none
/// left the client's connection is closed, as ingress-nginx's is.
pub(crate) async fn pass<S>(
    mut client: S,
    hello: BytesMut,
    group: Arc<UpstreamGroup>,
    connect_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut tried = Vec::with_capacity(MAX_ATTEMPTS);
    for _ in 0..group.targets.len().clamp(1, MAX_ATTEMPTS) {
        let Some(target) = group.pick(&tried) else {
            break;
        };
        tried.push(target.addr);
        let connected =
            tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(target.addr))
                .await;
        let Ok(Ok(mut upstream)) = connected else {
            target.record_connect_failure();
            tracing::debug!(target = %target.addr, "passthrough connect failed; trying another target");
            continue;
        };
        target.record_success();
        let _in_flight = InFlight::new(target.clone());
        let _ = upstream.set_nodelay(true);
        if upstream.write_all(&hello).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
    tracing::debug!(group = %group.id, "passthrough: no target could be reached");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for `name`.
    fn hello(name: &str) -> Vec<u8> {
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server).expect("client");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn reads_the_server_name_of_a_client_hello() {
        assert_eq!(
            server_name(&hello("argocd.example.com")),
            Some("argocd.example.com")
        );
        // Cut short: no name rather than a wrong one.
        let h = hello("argocd.example.com");
        assert_eq!(server_name(&h[..h.len() / 2]), None);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(server_name(&[]), None);
    }
}
