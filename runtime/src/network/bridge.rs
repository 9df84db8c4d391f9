//! Bridge networking: a Linux bridge with the gateway address, one veth pair per container
//! (host end enslaved to the bridge, peer moved into the container's netns as eth0), IPAM,
//! outbound MASQUERADE and DNAT for published ports.
//!
//! Links and addresses are managed with iproute2's `ip` (inside the container's netns via
//! `nsenter --net=/proc/PID/ns/net ip -batch -`), NAT with `iptables`: both are synchronous,
//! need no async runtime in the container runtime, and are installed by scripts/setup.sh.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::cmd::{available, ip_in_netns, run, Undo};
use super::error::{NetError, Result};
use super::ipam::Locked;
use super::iptables::{bridge_rules, delete_chain, ensure_chain, port_rule};
use super::port::PortMapping;
use super::subnet::Ipv4Net;
use super::Attachment;

/// Default state directory (IPAM); under /run, so it goes away with the links at reboot.
pub const DEFAULT_STATE_DIR: &str = "/run/vmctl/network";

/// Configuration of a bridge network.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// Bridge device name (1 to 15 characters), "vmctl0" by default.
    pub name: String,
    /// Subnet; the gateway (on the bridge) is its first host address.
    pub subnet: Ipv4Net,
    /// Where IPAM state lives (a directory per bridge below it).
    pub state_dir: PathBuf,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            name: "vmctl0".into(),
            subnet: Ipv4Net::new(Ipv4Addr::new(10, 88, 0, 0), 16).expect("valid default subnet"),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

/// A bridge network, ready to attach containers to.
#[derive(Debug)]
pub struct BridgeNetwork {
    cfg: BridgeConfig,
    gateway: Ipv4Addr,
    nat: bool,
}

fn valid_name(kind: &str, s: &str, max: usize) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(NetError::Invalid(format!(
            "invalid {kind} {s:?}: use 1 to {max} letters, digits, '_', '.' or '-'"
        )))
    }
}

fn write_sysctl(path: &str, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        tracing::warn!("could not set {path} to {value}: {e}");
    }
}

/// `ip -j ARGS` as JSON.
fn ip_json(args: &[&str]) -> Result<serde_json::Value> {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    let out = run("ip", &a)?;
    serde_json::from_str(&out).map_err(|e| NetError::Command {
        cmd: format!("ip {}", a.join(" ")),
        detail: format!("unexpected output: {e}"),
    })
}

impl BridgeNetwork {
    /// Creates the bridge (if missing) with its gateway address, enables forwarding and
    /// installs the NAT rules (skipped with a warning when iptables is missing).
    pub fn open(cfg: BridgeConfig) -> Result<Self> {
        valid_name("bridge name", &cfg.name, 15)?;
        let gateway = cfg
            .subnet
            .host(1)
            .expect("a /30 or larger subnet has a first host");
        let _state = Locked::open(&cfg.state_dir.join(&cfg.name))?;
        let mut undo = Undo::default();
        let br = cfg.name.as_str();
        match ip_json(&["-d", "link", "show", "dev", br]) {
            Ok(v) => {
                let kind = v[0]["linkinfo"]["info_kind"].as_str().unwrap_or("");
                if kind != "bridge" {
                    return Err(NetError::Conflict(format!(
                        "network device {br:?} exists but is a {kind:?}, not a bridge; \
                         choose another bridge name"
                    )));
                }
            }
            Err(_) => {
                run("ip", &["link", "add", "name", br, "type", "bridge"])?;
                undo.push("ip", &["link", "del", br]);
            }
        }
        let cidr = format!("{gateway}/{}", cfg.subnet.prefix());
        let addrs = ip_json(&["-4", "addr", "show", "dev", br])?;
        let has = addrs[0]["addr_info"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["local"].as_str() == Some(&gateway.to_string())
                    && x["prefixlen"].as_u64() == Some(u64::from(cfg.subnet.prefix()))
            })
        });
        if !has {
            run("ip", &["addr", "add", &cidr, "dev", br])?;
        }
        run("ip", &["link", "set", br, "up"])?;
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{br}/route_localnet"), "1");

        let nat = available("iptables");
        if nat {
            ensure_chain(br)?;
            for rule in bridge_rules(br, &cfg.subnet) {
                rule.ensure()?;
            }
        } else {
            tracing::warn!(
                "iptables is not installed: no outbound NAT and no published ports on {br} \
                 (apt-get install iptables)"
            );
        }
        undo.disarm();
        Ok(Self { cfg, gateway, nat })
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The gateway address (on the bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The subnet containers get addresses from.
    pub fn subnet(&self) -> Ipv4Net {
        self.cfg.subnet
    }

    fn state_dir(&self) -> PathBuf {
        self.cfg.state_dir.join(&self.cfg.name)
    }

    /// Host-side veth name and temporary peer name for a container: derived from a hash of
    /// bridge and container id, so they are stable and fit IFNAMSIZ.
    fn veth_names(&self, id: &str) -> (String, String) {
        let h = Sha256::digest(format!("{}\0{id}", self.cfg.name).as_bytes());
        let tag: String = h[..5].iter().map(|b| format!("{b:02x}")).collect();
        (format!("vh{tag}"), format!("vp{tag}"))
    }

    /// Connects the network namespace of process `netns_pid` to the bridge: a veth pair, an
    /// address from IPAM as eth0, lo up, a default route, and DNAT for `publish`.
    /// Everything done is undone if a step fails.
    pub fn attach(
        &self,
        container_id: &str,
        netns_pid: i32,
        publish: &[PortMapping],
    ) -> Result<Attachment> {
        valid_name("container id", container_id, 64)?;
        let ns_path = format!("/proc/{netns_pid}/ns/net");
        if netns_pid <= 0 || !Path::new(&ns_path).exists() {
            return Err(NetError::Invalid(format!(
                "no process {netns_pid} to attach: {ns_path} does not exist"
            )));
        }
        let ino = |p: &str| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .ok()
        };
        if ino(&ns_path) == ino("/proc/self/ns/net") {
            return Err(NetError::Invalid(format!(
                "process {netns_pid} shares the host's network namespace; bridge networking needs \
                 a container with its own (or use --network host to share the host's network)"
            )));
        }
        let st = Locked::open(&self.state_dir())?;
        let ip = self.reserve(&st, container_id, publish)?;
        let (veth_host, peer) = self.veth_names(container_id);
        let br = self.cfg.name.as_str();
        let pid = netns_pid.to_string();

        let mut undo = Undo::default();
        run(
            "ip",
            &[
                "link", "add", &veth_host, "type", "veth", "peer", "name", &peer,
            ],
        )?;
        undo.push("ip", &["link", "del", &veth_host]);
        let host_side = format!(
            "link set {veth_host} master {br}\nlink set {veth_host} up\nlink set {peer} netns {pid}\n"
        );
        super::cmd::run_with_input("ip", &["-batch", "-"], Some(&host_side))?;
        let prefix = self.cfg.subnet.prefix();
        let gw = self.gateway;
        let inside = format!(
            "link set lo up\nlink set {peer} name eth0\naddr add {ip}/{prefix} dev eth0\n\
             link set eth0 up\nroute add default via {gw} dev eth0\n"
        );
        ip_in_netns(netns_pid, &inside)?;
        let att = self.commit(st, &mut undo, container_id, ip, veth_host, publish)?;
        undo.disarm();
        Ok(att)
    }

    /// Checks that `id` is not attached yet and that `publish` claims free host ports, then
    /// picks the lowest free address.
    fn reserve(&self, st: &Locked, id: &str, publish: &[PortMapping]) -> Result<Ipv4Addr> {
        if !publish.is_empty() && !self.nat {
            return Err(NetError::Invalid(
                "publishing ports needs iptables, which is not installed (apt-get install iptables)".into(),
            ));
        }
        if st.state.attachments.contains_key(id) {
            return Err(NetError::Conflict(format!(
                "{id:?} is already attached to {}; detach it first",
                self.cfg.name
            )));
        }
        for (i, p) in publish.iter().enumerate() {
            let taken = st
                .state
                .attachments
                .values()
                .flat_map(|a| a.ports.iter().map(move |q| (a.container_id.as_str(), q)))
                .chain(publish[..i].iter().map(|q| (id, q)))
                .find(|(_, q)| p.clashes_with(q));
            if let Some((owner, q)) = taken {
                return Err(NetError::Conflict(format!(
                    "host port {p} is already published ({q} by {owner:?}); choose another host port"
                )));
            }
        }
        st.allocate(&self.cfg.subnet, self.gateway)
    }

    /// Installs the DNAT rules of `publish` to `ip` and records the attachment (rules undone
    /// through `undo` if a later step fails).
    fn commit(
        &self,
        mut st: Locked,
        undo: &mut Undo,
        id: &str,
        ip: Ipv4Addr,
        link: String,
        publish: &[PortMapping],
    ) -> Result<Attachment> {
        for p in publish {
            let rule = port_rule(&self.cfg.name, id, ip, p);
            rule.ensure()?;
            undo.push("iptables", &rule.delete_args());
        }
        let att = Attachment {
            container_id: id.to_string(),
            ip,
            prefix: self.cfg.subnet.prefix(),
            gateway: self.gateway,
            veth_host: link,
            ports: publish.to_vec(),
        };
        st.state.attachments.insert(id.to_string(), att.clone());
        st.save()?;
        tracing::info!("attached {id} to {} as {ip}", self.cfg.name);
        Ok(att)
    }

    /// The TAP device name of a VM: derived from a hash of bridge and VM id (fits IFNAMSIZ).
    pub fn tap_name(&self, vm_id: &str) -> String {
        let (veth, _) = self.veth_names(vm_id);
        format!("vt{}", &veth[2..])
    }

    /// Connects a VM to the bridge: a persistent TAP device (for the VMM to open by name)
    /// enslaved to the bridge, an address from the same IPAM as containers (for the guest to
    /// configure on its NIC), and DNAT for `publish` to that address. The attachment's
    /// `veth_host` is the TAP; [`BridgeNetwork::detach`] removes it like a veth. Everything
    /// done is undone if a step fails.
    pub fn attach_tap(&self, vm_id: &str, publish: &[PortMapping]) -> Result<Attachment> {
        valid_name("VM id", vm_id, 64)?;
        let st = Locked::open(&self.state_dir())?;
        let ip = self.reserve(&st, vm_id, publish)?;
        let tap = self.tap_name(vm_id);
        if run("ip", &["link", "show", "dev", &tap]).is_ok() {
            // A leftover of a VM whose record is gone: its address was released already.
            run("ip", &["link", "del", &tap])?;
        }
        let mut undo = Undo::default();
        run("ip", &["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        undo.push("ip", &["link", "del", &tap]);
        let br = self.cfg.name.as_str();
        let cmds = format!("link set {tap} master {br}\nlink set {tap} up\n");
        super::cmd::run_with_input("ip", &["-batch", "-"], Some(&cmds))?;
        let att = self.commit(st, &mut undo, vm_id, ip, tap, publish)?;
        undo.disarm();
        Ok(att)
    }

    /// Removes a container's veth, port rules and address. Detaching an unknown (or already
    /// detached) container succeeds.
    pub fn detach(&self, container_id: &str) -> Result<()> {
        let mut st = Locked::open(&self.state_dir())?;
        let (veth, ports, ip) = match st.state.attachments.get(container_id) {
            Some(a) => (a.veth_host.clone(), a.ports.clone(), Some(a.ip)),
            None => (self.veth_names(container_id).0, Vec::new(), None),
        };
        if let Some(ip) = ip {
            if self.nat {
                for p in &ports {
                    port_rule(&self.cfg.name, container_id, ip, p).delete()?;
                }
            }
        }
        // The veth is gone already if the container's netns died with it.
        if run("ip", &["link", "show", "dev", &veth]).is_ok() {
            run("ip", &["link", "del", &veth])?;
        }
        if st.state.attachments.remove(container_id).is_some() {
            st.save()?;
            tracing::info!("detached {container_id} from {}", self.cfg.name);
        }
        Ok(())
    }

    /// Detaches containers whose veth is gone (their netns died without a detach); returns
    /// their ids.
    pub fn prune(&self) -> Result<Vec<String>> {
        let mut gone = Vec::new();
        for a in self.attachments()? {
            if run("ip", &["link", "show", "dev", &a.veth_host]).is_err() {
                self.detach(&a.container_id)?;
                gone.push(a.container_id);
            }
        }
        Ok(gone)
    }

    /// The containers attached now.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        let st = Locked::open(&self.state_dir())?;
        Ok(st.state.attachments.values().cloned().collect())
    }

    /// Detaches everything, then removes the bridge, its iptables rules and its state.
    pub fn destroy(self) -> Result<()> {
        for a in self.attachments()? {
            self.detach(&a.container_id)?;
        }
        let br = self.cfg.name.as_str();
        let dir = self.state_dir();
        let _st = Locked::open(&dir)?;
        if self.nat {
            for rule in bridge_rules(br, &self.cfg.subnet) {
                rule.delete()?;
            }
            delete_chain(br)?;
        }
        if run("ip", &["link", "show", "dev", br]).is_ok() {
            run("ip", &["link", "del", br])?;
        }
        std::fs::remove_dir_all(&dir)
            .map_err(super::error::io_err(format!("remove {}", dir.display())))
    }
}
