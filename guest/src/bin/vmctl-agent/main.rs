//! `vmctl-agent`: PID 1 of vmctl's guests. It mounts the basics, writes the boot-time marker,
//! reaps zombies, and serves the host's requests (guest/PROTOCOL.md) over virtio-serial or
//! vsock, running each workload in a container. `vmctl-agent shim` is its per-container helper.

mod containers;
mod init;
mod net;
mod reaper;
mod server;
mod shim;
mod transport;
mod user;
mod volumes;
mod workload;

use std::sync::{Arc, Mutex};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("shim") {
        shim::main();
    }
    if std::process::id() != 1 {
        eprintln!("vmctl-agent: must run as PID 1 of a vmctl guest (it mounts filesystems and powers the machine off)");
        std::process::exit(2);
    }
    let reboot = match pid1() {
        Ok(reboot) => reboot,
        Err(e) => {
            eprintln!("vmctl-agent: fatal: {e:#}");
            false
        }
    };
    init::power_off(reboot)
}

/// Returns whether the host asked for a reboot rather than a power-off.
fn pid1() -> anyhow::Result<bool> {
    init::stage1()?;
    init::early()?;
    reaper::start()?;
    if let Err(e) = net::loopback() {
        eprintln!("vmctl-agent: loopback: {e:#}");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let listener = transport::listen(&cmdline)?;
    let containers = containers::Containers::default();
    loop {
        let stream = listener.accept()?;
        eprintln!("vmctl-agent: host connected over {}", stream.kind);
        let out: server::Out = Arc::new(Mutex::new(stream.writer));
        match server::serve(stream.reader, out, &containers) {
            Ok(server::End::Shutdown { reboot }) => return Ok(reboot),
            Ok(server::End::Closed) if listener.reconnects() => continue,
            Ok(server::End::Closed) => {
                eprintln!("vmctl-agent: the host closed the channel; powering off");
                containers.kill_all();
                return Ok(false);
            }
            Err(e) if listener.reconnects() => eprintln!("vmctl-agent: session: {e:#}"),
            Err(e) => return Err(e),
        }
    }
}
