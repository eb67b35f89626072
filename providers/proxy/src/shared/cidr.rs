//! Client networks (`a.b.c.d/n`, `v6/n`, a bare address being one host), parsed once when a
//! configuration is compiled and matched per request: allow-lists of the rate limits, the
//! proxies trusted with `X-Forwarded-For`.

use std::net::IpAddr;

/// A network: its address and prefix length.
pub type Network = (IpAddr, u8);

/// Parses one network; `None` when it is not one.
pub fn parse(cidr: &str) -> Option<Network> {
    let c = cidr.trim();
    let (net, len) = c.split_once('/').unwrap_or((c, ""));
    let ip: IpAddr = net.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse::<u8>().ok().filter(|l| *l <= max)?
    };
    Some((ip, len))
}

/// Whether `net` contains `ip` (an IPv4-mapped IPv6 address counts as its IPv4 one).
pub fn contains((net, len): Network, ip: IpAddr) -> bool {
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(ip: &str, net: &str) -> bool {
        contains(parse(net).unwrap(), ip.parse().unwrap())
    }

    #[test]
    fn networks() {
        assert!(inside("10.1.2.3", "10.0.0.0/8"));
        assert!(!inside("11.1.2.3", "10.0.0.0/8"));
        assert!(inside("::ffff:10.1.2.3", "10.0.0.0/8"));
        assert!(inside("2001:db8::1", "2001:db8::/32"));
        assert!(inside("1.2.3.4", "0.0.0.0/0"));
        assert!(inside("1.2.3.4", "1.2.3.4"));
        assert!(parse("10.0.0.0/33").is_none());
        assert!(parse("nope").is_none());
    }
}
