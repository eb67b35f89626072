//! The client address behind trusted proxies (`--use-forwarded-headers` with
//! `--proxy-real-ip-cidr`, ingress-nginx's `use-forwarded-headers`/`proxy-real-ip-cidr`,
//! nginx's realip module with `real_ip_recursive on`): when the connection comes from a
//! trusted address, `X-Forwarded-For` is read from the right, skipping trusted addresses;
//! the first one that is not trusted is the client. Anything else keeps the peer address,
//! so a client cannot name itself.

use std::net::IpAddr;

use http::HeaderMap;

/// Trusted networks, as (network, prefix length).
pub type Trusted = [(IpAddr, u8)];

/// Parses CIDRs (a bare address is one host); `Err` names the first bad one.
pub fn parse_cidrs(list: &str) -> Result<Vec<(IpAddr, u8)>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| crate::shared::cidr::parse(c).ok_or_else(|| format!("{c:?} is not a CIDR")))
        .collect()
}

fn trusted(t: &Trusted, ip: IpAddr) -> bool {
    t.iter().any(|n| crate::shared::cidr::contains(*n, ip))
}

/// The client of a request that arrived from `peer`.
pub fn real_client(t: &Trusted, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted(t, peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse::<IpAddr>().ok())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !trusted(t, *hop) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_trusted_peers_name_the_client() {
        let t = parse_cidrs("10.0.0.0/8, 192.168.1.1").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.1.1.1"),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(real_client(&t, ip("10.2.2.2"), &h), ip("203.0.113.9"));
        assert_eq!(real_client(&t, ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(
            real_client(&t, ip("10.2.2.2"), &HeaderMap::new()),
            ip("10.2.2.2")
        );
        assert!(parse_cidrs("10.0.0.0/33").is_err());
    }
}
