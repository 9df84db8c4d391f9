//! `vmctl-agent shim`: one per container. Its stdio are the agent's pipes (the container
//! inherits them); fd 3 is the control socket to the agent:
//! agent -> shim: the spec (one JSON line), later `start`;
//! shim -> agent: `created <pid>` | `error <msg>`, `started` | `error <msg>`, `exit <code>`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::Context;
use guest::protocol::ContainerSpec;

use crate::workload::Workload;

/// Where the agent mounts image disk `dev` ("/dev/vda" -> /run/vmctl/disks/vda).
pub fn disk_mountpoint(dev: &str) -> anyhow::Result<PathBuf> {
    let name = dev
        .strip_prefix("/dev/")
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'));
    let name = name.with_context(|| format!("image disk {dev:?} is not a /dev/NAME device"))?;
    Ok(PathBuf::from(crate::containers::DISKS).join(name))
}

pub fn main() -> ! {
    // SAFETY: the agent put the control socket on fd 3 for us; nothing else owns it.
    let sock = unsafe { UnixStream::from_raw_fd(3) };
    let mut w = match sock.try_clone() {
        Ok(w) => w,
        Err(_) => std::process::exit(125),
    };
    let mut r = BufReader::new(sock);
    let code = match run(&mut r, &mut w) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(w, "error {msg}");
            125
        }
    };
    let _ = writeln!(w, "exit {code}");
    std::process::exit(code)
}

fn run(r: &mut BufReader<UnixStream>, w: &mut UnixStream) -> anyhow::Result<i32> {
    let mut line = String::new();
    r.read_line(&mut line).context("read the spec")?;
    let spec: ContainerSpec = serde_json::from_str(&line).context("parse the spec")?;
    let disk = disk_mountpoint(&spec.disk)?;
    let layers: Vec<PathBuf> = spec
        .layers
        .iter()
        .map(|l| {
            let rel = std::path::Path::new(l);
            anyhow::ensure!(
                rel.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "layer path {l:?} must be relative, without '..'"
            );
            Ok(disk.join(rel))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut wl = Workload::create(&spec, layers)?;
    writeln!(w, "created {}", wl.pid())?;
    line.clear();
    r.read_line(&mut line).context("wait for start")?;
    if line.trim_end() != "start" {
        wl.destroy();
        anyhow::bail!("expected start, got {line:?}");
    }
    match wl.start() {
        Ok(()) => {}
        // Like a container on the host: the message on the workload's stderr, exit 126/127.
        Err(e) if wl.exec_failed() => eprintln!("vmctl: {e:#}"),
        Err(e) => {
            wl.destroy();
            return Err(e);
        }
    }
    writeln!(w, "started")?;
    let code = wl.wait();
    wl.destroy();
    Ok(code)
}
