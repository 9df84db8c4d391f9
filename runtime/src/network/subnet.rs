//! IPv4 subnets ("10.88.0.0/16").

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::NetError;

/// An IPv4 network: address with host bits cleared, and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The network `addr/prefix`; host bits of `addr` are cleared. Prefix 8..=30.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, NetError> {
        if !(8..=30).contains(&prefix) {
            return Err(NetError::Invalid(format!(
                "subnet prefix /{prefix} is not supported: use /8 to /30 (e.g. 10.88.0.0/16)"
            )));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    /// Prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of usable host addresses (network and broadcast excluded).
    pub fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The `n`th host address (1-based), if inside the subnet.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        (n >= 1 && n <= self.hosts()).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }

    /// Whether `ip` lies inside this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || {
            NetError::Invalid(format!(
                "invalid subnet {s:?}: expected IPv4 CIDR like 10.88.0.0/16"
            ))
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Self::new(addr, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_membership() {
        let n: Ipv4Net = "10.88.1.7/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.88.0.0/16");
        assert_eq!(n.hosts(), 65534);
        assert_eq!(n.host(1), Some(Ipv4Addr::new(10, 88, 0, 1)));
        assert_eq!(n.host(65534), Some(Ipv4Addr::new(10, 88, 255, 254)));
        assert_eq!(n.host(65535), None);
        assert_eq!(n.host(0), None);
        assert!(n.contains(Ipv4Addr::new(10, 88, 200, 3)));
        assert!(!n.contains(Ipv4Addr::new(10, 89, 0, 1)));
        let small: Ipv4Net = "192.168.5.4/30".parse().unwrap();
        assert_eq!(small.hosts(), 2);
        assert!("10.0.0.0/31".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
    }
}
