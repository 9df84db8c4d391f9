//! Networking of VM-backed runs (`--isolation microvm|hosted`).
//!
//! `--network bridge` (the default) gives the VM a TAP device on the SAME bridge and IPAM as
//! containers (runtime::network): containers and VMs get distinct addresses in one subnet and
//! reach each other; `-p` publishes to the VM's address with the containers' DNAT rules; the
//! host tells the guest agent the address, prefix and gateway. `--network none`: no NIC.
//! `--network host` is refused: a VM has its own kernel and cannot share the host's stack.
//!
//! The attachment is released when [`VmNet`] drops (normal end, error, signal); after a
//! SIGKILL of the supervisor `vmctl rm` releases it from the record
//! ([`guest::registry::NetRecord`]).

use std::net::Ipv4Addr;

use anyhow::{bail, Context};
use guest::protocol::NetConfig;
use guest::registry::NetRecord;
use runtime::network::{BridgeConfig, BridgeNetwork, PortMapping};

use crate::cli::RunArgs;

/// What `--network` and `-p` ask of a VM, checked before anything is set up.
pub(crate) enum Plan {
    None,
    Bridge {
        cfg: BridgeConfig,
        publish: Vec<PortMapping>,
    },
}

/// Checks `--network`, `--bridge`, `--subnet` and `-p`.
pub(crate) fn plan(args: &RunArgs) -> anyhow::Result<Plan> {
    let publish = args
        .publish
        .iter()
        .map(|p| p.parse::<PortMapping>())
        .collect::<Result<Vec<_>, _>>()?;
    match args.network.as_str() {
        "none" => {
            if let Some(p) = args.publish.first() {
                bail!("-p {p} needs --network bridge: a VM with --network none has no NIC");
            }
            Ok(Plan::None)
        }
        "host" => bail!(
            "--network host is not possible for a VM: it runs its own kernel and cannot share \
             the host's network stack; use --network bridge (the default) with -p to publish \
             ports, or --isolation container"
        ),
        "bridge" => {
            let subnet = args.subnet.parse().with_context(|| {
                format!(
                    "--subnet {:?}: expected an IPv4 network like 10.88.0.0/16",
                    args.subnet
                )
            })?;
            Ok(Plan::Bridge {
                cfg: BridgeConfig {
                    name: args.bridge.clone(),
                    subnet,
                    // The containers' network state: one IPAM for containers and VMs.
                    state_dir: crate::container::state_root().join("network"),
                },
                publish,
            })
        }
        other => bail!("--network {other:?}: expected bridge or none for a VM"),
    }
}

/// A VM's attachment to the bridge; released on drop.
pub(crate) struct VmNet {
    cfg: BridgeConfig,
    id: String,
    /// The host TAP device the VMM opens.
    pub tap: String,
    /// The guest's address.
    pub ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    /// The guest NIC's MAC address (locally administered, from the VM id).
    pub mac: [u8; 6],
}

impl VmNet {
    /// Attaches VM `id` per `plan` (None for `--network none`).
    pub(crate) fn attach(plan: &Plan, id: &str) -> anyhow::Result<Option<VmNet>> {
        let Plan::Bridge { cfg, publish } = plan else {
            return Ok(None);
        };
        let net = BridgeNetwork::open(cfg.clone())?;
        let att = net.attach_tap(id, publish)?;
        Ok(Some(VmNet {
            cfg: cfg.clone(),
            id: id.to_string(),
            tap: att.veth_host,
            ip: att.ip,
            prefix: att.prefix,
            gateway: att.gateway,
            mac: mac_of(id),
        }))
    }

    /// What the guest agent configures on its first NIC.
    pub(crate) fn guest_config(&self) -> NetConfig {
        NetConfig {
            interface: "eth0".into(),
            address: self.ip.to_string(),
            prefix: self.prefix,
            gateway: Some(self.gateway.to_string()),
        }
    }

    /// The record entry that lets `vmctl rm` release the attachment.
    pub(crate) fn record(&self) -> NetRecord {
        NetRecord {
            bridge: self.cfg.name.clone(),
            subnet: self.cfg.subnet.to_string(),
            state_dir: self.cfg.state_dir.clone(),
            tap: self.tap.clone(),
            ip: self.ip.to_string(),
        }
    }
}

impl Drop for VmNet {
    fn drop(&mut self) {
        if let Err(e) = runtime::network::disconnect(&self.cfg, &self.id) {
            eprintln!("vmctl: release the network of VM {}: {e}", self.id);
        }
    }
}

/// A locally administered unicast MAC from the VM id's first hex digits.
fn mac_of(id: &str) -> [u8; 6] {
    let mut m = [0x02, 0, 0, 0, 0, 0];
    for (i, b) in m[1..].iter_mut().enumerate() {
        *b = id
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_local_unicast_and_from_the_id() {
        let m = mac_of("0a1b2c3d4e5f");
        assert_eq!(m, [0x02, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e]);
        assert_eq!(m[0] & 1, 0);
        assert_eq!(m[0] & 2, 2);
    }
}
