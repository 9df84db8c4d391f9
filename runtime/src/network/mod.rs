//! Container networking: `none` (a netns with only lo, up), `host` (no netns) and `bridge`
//! (a Linux bridge, veth pairs, file-locked IPAM, MASQUERADE and iptables DNAT for published
//! ports, including 127.0.0.1 via route_localnet).

mod bridge;
mod cmd;
mod error;
mod ipam;
mod iptables;
mod port;
mod subnet;

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use bridge::{BridgeConfig, BridgeNetwork, DEFAULT_STATE_DIR};
pub use error::{NetError, Result};
pub use port::{PortMapping, Protocol};
pub use subnet::Ipv4Net;

/// How a container is networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Its own network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
    /// Its own network namespace attached to a bridge.
    Bridge,
}

impl NetworkMode {
    /// Whether the container gets its own network namespace.
    pub fn needs_netns(&self) -> bool {
        !matches!(self, NetworkMode::Host)
    }
}

impl FromStr for NetworkMode {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "host" => Ok(Self::Host),
            "bridge" => Ok(Self::Bridge),
            _ => Err(NetError::Invalid(format!(
                "unknown network mode {s:?}: use none, host or bridge"
            ))),
        }
    }
}

/// A container's place on a bridge network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The container.
    pub container_id: String,
    /// Its address (on eth0).
    pub ip: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// The default gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// Host end of the veth pair.
    pub veth_host: String,
    /// Published ports.
    pub ports: Vec<PortMapping>,
}

/// Brings up loopback in the network namespace of process `netns_pid` (for `none`; `attach`
/// does it for `bridge`).
pub fn setup_loopback(netns_pid: i32) -> Result<()> {
    cmd::ip_in_netns(netns_pid, "link set lo up\n")
}

/// Networks a container whose first process is `pid`: `none` brings up lo in its netns,
/// `host` does nothing, `bridge` opens the bridge of `cfg` and attaches it with `publish`.
/// Returns the bridge attachment, if any.
pub fn connect(
    mode: NetworkMode,
    cfg: &BridgeConfig,
    container_id: &str,
    pid: i32,
    publish: &[PortMapping],
) -> Result<Option<Attachment>> {
    if mode != NetworkMode::Bridge && !publish.is_empty() {
        return Err(NetError::Invalid(format!(
            "publishing ports ({}) needs --network bridge, not {mode:?}",
            publish
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    match mode {
        NetworkMode::Host => Ok(None),
        NetworkMode::None => setup_loopback(pid).map(|_| None),
        NetworkMode::Bridge => BridgeNetwork::open(cfg.clone())?
            .attach(container_id, pid, publish)
            .map(Some),
    }
}

/// Undoes [`connect`] for a bridge-networked container (idempotent; nothing to do for the
/// other modes, whose netns goes away with the container).
pub fn disconnect(cfg: &BridgeConfig, container_id: &str) -> Result<()> {
    if !cfg.state_dir.join(&cfg.name).join("ipam.json").exists() {
        return Ok(()); // this bridge never had an attachment
    }
    BridgeNetwork::open(cfg.clone())?.detach(container_id)
}
