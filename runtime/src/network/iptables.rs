//! iptables rules of a bridge network: outbound MASQUERADE, forwarding, and a per-bridge nat
//! chain `VMCTL-<bridge>` holding one DNAT rule per published port. Every rule carries a
//! `vmctl:` comment so its owner is visible in `iptables -S`.

use std::net::Ipv4Addr;

use super::cmd::run;
use super::error::Result;
use super::port::PortMapping;
use super::subnet::Ipv4Net;

/// One rule: table, chain and match/target arguments.
pub(crate) struct Rule {
    table: &'static str,
    chain: String,
    spec: Vec<String>,
    /// Insert at the top instead of appending (FORWARD accepts go before DROP rules).
    insert: bool,
}

impl Rule {
    fn new(table: &'static str, chain: &str, spec: &[&str], insert: bool) -> Self {
        Self {
            table,
            chain: chain.to_string(),
            spec: spec.iter().map(|s| s.to_string()).collect(),
            insert,
        }
    }

    fn args<'a>(&'a self, op: &'a str) -> Vec<&'a str> {
        let mut a = vec!["-w", "-t", self.table, op, self.chain.as_str()];
        a.extend(self.spec.iter().map(String::as_str));
        a
    }

    fn exists(&self) -> bool {
        run("iptables", &self.args("-C")).is_ok()
    }

    /// Adds the rule unless it is already there.
    pub(crate) fn ensure(&self) -> Result<()> {
        if !self.exists() {
            run(
                "iptables",
                &self.args(if self.insert { "-I" } else { "-A" }),
            )?;
        }
        Ok(())
    }

    /// Deletes every copy of the rule; a missing rule is not an error.
    pub(crate) fn delete(&self) -> Result<()> {
        while self.exists() {
            run("iptables", &self.args("-D"))?;
        }
        Ok(())
    }

    /// The iptables arguments that undo [`Rule::ensure`].
    pub(crate) fn delete_args(&self) -> Vec<&str> {
        self.args("-D")
    }
}

/// The nat chain of bridge `br`.
pub(crate) fn chain(br: &str) -> String {
    format!("VMCTL-{br}")
}

/// Creates the bridge's nat chain if missing.
pub(crate) fn ensure_chain(br: &str) -> Result<()> {
    let c = chain(br);
    if run("iptables", &["-w", "-t", "nat", "-S", &c]).is_err() {
        run("iptables", &["-w", "-t", "nat", "-N", &c])?;
    }
    Ok(())
}

/// Flushes and deletes the bridge's nat chain (after its jumps are gone).
pub(crate) fn delete_chain(br: &str) -> Result<()> {
    let c = chain(br);
    if run("iptables", &["-w", "-t", "nat", "-S", &c]).is_ok() {
        run("iptables", &["-w", "-t", "nat", "-F", &c])?;
        run("iptables", &["-w", "-t", "nat", "-X", &c])?;
    }
    Ok(())
}

/// Rules owned by the bridge itself.
pub(crate) fn bridge_rules(br: &str, subnet: &Ipv4Net) -> Vec<Rule> {
    let tag = format!("vmctl:{br}");
    let net = subnet.to_string();
    let c = chain(br);
    let cm = ["-m", "comment", "--comment", tag.as_str()];
    let with = |spec: &[&str]| -> Vec<String> {
        spec.iter()
            .chain(cm.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let mk = |table, ch: &str, spec: &[&str], insert| {
        let s = with(spec);
        let r: Vec<&str> = s.iter().map(String::as_str).collect();
        Rule::new(table, ch, &r, insert)
    };
    vec![
        // Published ports: local destinations go through the bridge's DNAT chain.
        mk(
            "nat",
            "PREROUTING",
            &["-m", "addrtype", "--dst-type", "LOCAL", "-j", &c],
            false,
        ),
        mk(
            "nat",
            "OUTPUT",
            &["-m", "addrtype", "--dst-type", "LOCAL", "-j", &c],
            false,
        ),
        // Outbound traffic leaves with the host's address.
        mk(
            "nat",
            "POSTROUTING",
            &["-s", &net, "!", "-o", br, "-j", "MASQUERADE"],
            false,
        ),
        // 127.0.0.1:PORT published ports (route_localnet) and container-to-published-port
        // hairpins: the container must answer through the host.
        mk(
            "nat",
            "POSTROUTING",
            &["-s", "127.0.0.0/8", "-o", br, "-j", "MASQUERADE"],
            false,
        ),
        mk(
            "nat",
            "POSTROUTING",
            &[
                "-s",
                &net,
                "-o",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "-j",
                "MASQUERADE",
            ],
            false,
        ),
        mk("filter", "FORWARD", &["-i", br, "-j", "ACCEPT"], true),
        mk("filter", "FORWARD", &["-o", br, "-j", "ACCEPT"], true),
    ]
}

/// The DNAT rule of one published port of container `id` at `ip`.
pub(crate) fn port_rule(br: &str, id: &str, ip: Ipv4Addr, p: &PortMapping) -> Rule {
    let tag = format!("vmctl:{br}:{id}");
    let dport = p.host_port.to_string();
    let to = format!("{ip}:{}", p.container_port);
    let host = p.host_ip.map(|h| format!("{h}/32"));
    let mut spec: Vec<&str> = vec!["-p", p.protocol.as_str()];
    if let Some(h) = &host {
        spec.extend(["-d", h.as_str()]);
    }
    spec.extend(["--dport", &dport, "-m", "comment", "--comment", &tag]);
    spec.extend(["-j", "DNAT", "--to-destination", &to]);
    Rule::new("nat", &chain(br), &spec, false)
}
