//! Forwarding fields: what the origin is told about the client, and who
//! may tell it. A client's own `X-Forwarded-Host`, `Forwarded`,
//! `X-Real-IP`, `X-Original-URL`, `X-Rewrite-URL` (and configured fields)
//! could make an origin build a page for another host or path than the
//! one the gateway routed and keyed, so they are removed unless the peer
//! is a trusted proxy (`[api_gateway] trusted_proxies`); the gateway sets
//! `X-Forwarded-For`, `-Proto` and `-Host` itself.

use std::net::IpAddr;
use std::str::FromStr;
use thiserror::Error;

/// Fields only a trusted proxy may send on: the origin may act on them.
pub const UNTRUSTED_FIELDS: [&str; 5] = [
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
];

/// An address block, `10.0.0.0/8` or `fd00::/8` (a bare address is its
/// own block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a `trusted_proxies` entry is not a block.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CidrError {
    /// The address part does not parse.
    #[error("not an IP address: {0:?}")]
    Address(String),
    /// The prefix is not a number within the address's length.
    #[error("not a prefix length for this address: {0:?}")]
    Prefix(String),
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(addr.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix(prefix.to_owned()))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 peer counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => mask_eq(
                u128::from(a.to_bits()),
                u128::from(b.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(a), IpAddr::V6(b)) => mask_eq(a.to_bits(), b.to_bits(), 128, self.prefix),
            _ => false,
        }
    }
}

fn mask_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    let drop = u32::from(bits - prefix.min(bits));
    a.checked_shr(drop).unwrap_or(0) == b.checked_shr(drop).unwrap_or(0)
}

/// The forwarding rules of a data plane.
#[derive(Debug, Clone, Default)]
pub struct ForwardRules {
    /// Peers whose forwarding fields are kept (`trusted_proxies`).
    pub trusted: Vec<Cidr>,
    /// More fields removed from untrusted peers' requests, lowercase
    /// (`strip_fields`).
    pub strip: Vec<Box<str>>,
    /// Add an RFC 7239 `Forwarded` field too (`forwarded_field`).
    pub forwarded: bool,
}

impl ForwardRules {
    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }

    /// Whether the field `name` of an untrusted peer's request is removed.
    pub fn strips(&self, name: &str) -> bool {
        UNTRUSTED_FIELDS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
            || self.strip.iter().any(|f| name.eq_ignore_ascii_case(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_and_contain() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()), "mapped");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let one: Cidr = "fd00::1".parse().unwrap();
        assert!(one.contains("fd00::1".parse().unwrap()));
        assert!(!one.contains("fd00::2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fdff::2".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "ten/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
    }
}
