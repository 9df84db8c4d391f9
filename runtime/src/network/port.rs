//! Published ports: `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::NetError;

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// "tcp" or "udp".
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A port published from the host to a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to accept on; `None` means every local address.
    pub host_ip: Option<Ipv4Addr>,
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl PortMapping {
    /// Whether two mappings claim the same host port.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

impl FromStr for PortMapping {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        const FORM: &str = "expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80";
        let invalid =
            |why: String| NetError::Invalid(format!("invalid port mapping {s:?}: {why}; {FORM}"));
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, Protocol::Tcp),
            Some((spec, "udp")) => (spec, Protocol::Udp),
            Some((_, p)) => return Err(invalid(format!("unknown protocol {p:?}"))),
            None => (s, Protocol::Tcp),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (host_ip, hp, cp) = match parts.as_slice() {
            [hp, cp] => (None, *hp, *cp),
            [ip, hp, cp] => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| invalid(format!("host address {ip:?} is not an IPv4 address")))?;
                (Some(ip), *hp, *cp)
            }
            _ => return Err(invalid("wrong number of ':'-separated fields".into())),
        };
        let port = |p: &str, what: &str| -> Result<u16, NetError> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(invalid(format!(
                    "{what} port {p:?} is not a number from 1 to 65535"
                ))),
            }
        };
        Ok(Self {
            host_ip: host_ip.filter(|ip| !ip.is_unspecified()),
            host_port: port(hp, "host")?,
            container_port: port(cp, "container")?,
            protocol,
        })
    }
}
