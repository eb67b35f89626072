//! The PROXY protocol (v1 text and v2 binary, haproxy's proxy-protocol.txt): with
//! `--use-proxy-protocol` (ingress-nginx's `use-proxy-protocol`), every connection starts
//! with a header from the load balancer in front, naming the real client; that address is
//! then the client's for allow-lists, rate limits and `X-Forwarded-For`. A connection that
//! does not start with a valid header is closed, as nginx closes it ("broken header").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes; a v2 one 16 + 65535.
const MAX_HEADER: usize = 16 + 65_535;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("not a PROXY protocol header")]
    Invalid,
    #[error("connection closed before the PROXY header ended")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What a header said: the client's address (`None` for `UNKNOWN`/`LOCAL`, which keep the
/// connection's own), and the bytes read past it.
pub struct ProxyHeader {
    pub source: Option<SocketAddr>,
    pub rest: BytesMut,
}

/// Reads a PROXY header from the start of `io`.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match parse(&buf)? {
            Some((len, source)) => {
                let rest = buf.split_off(len);
                return Ok(ProxyHeader { source, rest });
            }
            None if buf.len() >= MAX_HEADER => return Err(ProxyHeaderError::Invalid),
            None => {
                if io.read_buf(&mut buf).await? == 0 {
                    return Err(ProxyHeaderError::Closed);
                }
            }
        }
    }
}

/// A complete header's length and source, `None` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, ProxyHeaderError> {
    let sig = buf.len().min(12);
    if buf[..sig] == V2_SIGNATURE[..sig] {
        return parse_v2(buf);
    }
    let v1 = b"PROXY ";
    let n = buf.len().min(v1.len());
    if buf[..n] != v1[..n] {
        return Err(ProxyHeaderError::Invalid);
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > 107 {
            Err(ProxyHeaderError::Invalid)
        } else {
            Ok(None)
        };
    };
    if end + 2 > 107 {
        return Err(ProxyHeaderError::Invalid);
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyHeaderError::Invalid)?;
    let parts: Vec<&str> = line.split(' ').collect();
    let source = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| ProxyHeaderError::Invalid)?;
            if (*fam == "TCP4") != ip.is_ipv4() {
                return Err(ProxyHeaderError::Invalid);
            }
            let port: u16 = sport.parse().map_err(|_| ProxyHeaderError::Invalid)?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyHeaderError::Invalid),
    };
    Ok(Some((end + 2, source)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, ProxyHeaderError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyHeaderError::Invalid);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let source = match (ver_cmd & 0x0f, buf[13] >> 4) {
        // LOCAL (health checks from the balancer itself): the connection's own address.
        (0, _) => None,
        (1, 1) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (1, 2) if body.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a)),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // UNSPEC or UNIX: nothing to use.
        (1, 0 | 3) => None,
        _ => return Err(ProxyHeaderError::Invalid),
    };
    Ok(Some((total, source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2() {
        let (len, src) = parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 443\r\nGET")
            .unwrap()
            .unwrap();
        assert_eq!(len, 40);
        assert_eq!(src, Some("192.0.2.7:5555".parse().unwrap()));
        assert!(matches!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"),
            Ok(Some((_, Some(_))))
        ));
        assert!(matches!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((15, None)))));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3"), Ok(None)));
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n").is_err());
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 1, 187,
        ]);
        v2.extend_from_slice(b"rest");
        let (len, src) = parse(&v2).unwrap().unwrap();
        assert_eq!(len, 28);
        assert_eq!(src, Some("198.51.100.9:8080".parse().unwrap()));
        assert!(matches!(parse(&v2[..20]), Ok(None)));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert!(matches!(parse(&local), Ok(Some((16, None)))));
    }
}
