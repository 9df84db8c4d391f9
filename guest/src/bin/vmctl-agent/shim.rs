//! `vmctl-agent shim`: one per container. Its stdio are the agent's pipes (the container
//! inherits them); fd 3 is the control socket to the agent:
//! agent -> shim: the spec (one JSON line), later `start`; `resize <rows> <cols>` any time after
//! `created` (tty containers);
//! shim -> agent: `created <pid>` | `error <msg>`, `started` | `error <msg>`, `exit <code>`.
//!
//! A tty container's stdio is a pty from its own devpts: the shim holds the master and copies
//! it to its stdout (the one output stream) and its stdin into it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
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
    let r = BufReader::new(sock);
    let code = match run(r, &mut w) {
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

fn run(mut r: BufReader<UnixStream>, w: &mut UnixStream) -> anyhow::Result<i32> {
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
    let (console, theirs) = if spec.tty {
        let (a, b) = UnixStream::pair().context("console socketpair")?;
        (Some(a), Some(OwnedFd::from(b)))
    } else {
        (None, None)
    };
    let mut wl = Workload::create(&spec, layers, theirs)?;
    let master = match console.map(|c| runtime::console::recv_fd(c.as_fd())) {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            wl.destroy();
            return Err(e).context("receive the container's terminal");
        }
        None => None,
    };
    writeln!(w, "created {}", wl.pid())?;
    loop {
        line.clear();
        if r.read_line(&mut line).context("wait for start")? == 0 {
            wl.destroy();
            anyhow::bail!("the agent went away before start");
        }
        match line.trim_end() {
            "start" => break,
            l if l.starts_with("resize ") => resize(master.as_ref(), l),
            l => {
                wl.destroy();
                anyhow::bail!("expected start, got {l:?}");
            }
        }
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
    let output = master.map(|m| proxy(m, spec.stdin, r));
    let code = wl.wait();
    wl.destroy();
    // Everything that held the pty's slave is gone now: the copy ends at the master's EIO.
    if let Some(t) = output {
        let _ = t.join();
    }
    Ok(code)
}

/// `resize ROWS COLS` on the pty master (ignored without a terminal or when malformed).
fn resize(master: Option<&OwnedFd>, line: &str) {
    let mut it = line.split(' ').skip(1).map(|x| x.parse::<u16>());
    let (Some(master), Some(Ok(rows)), Some(Ok(cols))) = (master, it.next(), it.next()) else {
        return;
    };
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives across the call, on an open pty master.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Copies the pty master to our stdout (returned thread) and, with `stdin`, our stdin into it;
/// applies later `resize` lines from the agent.
fn proxy(
    master: OwnedFd,
    stdin: bool,
    mut ctl: BufReader<UnixStream>,
) -> std::thread::JoinHandle<()> {
    if let Ok(dup) = master.try_clone() {
        std::thread::spawn(move || {
            let mut line = String::new();
            while ctl.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.starts_with("resize ") {
                    resize(Some(&dup), line.trim_end());
                }
                line.clear();
            }
        });
    }
    if stdin {
        if let Ok(m) = master.try_clone() {
            std::thread::spawn(move || {
                let mut m = std::fs::File::from(m);
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut m);
            });
        }
    }
    std::thread::spawn(move || {
        let mut m = std::fs::File::from(master);
        // SAFETY: fd 1 is our stdout pipe to the agent; ManuallyDrop keeps it open.
        let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
        let mut buf = [0u8; 16 * 1024];
        loop {
            match m.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    })
}
