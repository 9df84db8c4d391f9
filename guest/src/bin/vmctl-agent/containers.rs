//! The agent's containers. Each runs under its own shim process (`vmctl-agent shim`, see
//! shim.rs) whose stdio are pipes to the agent, so the container inherits them; the agent
//! pumps them to the host and reports the exit once all output is out.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use guest::protocol::{valid_id, ContainerSpec, FromAgent, Stats};

use crate::reaper;
use crate::server::{send, Out};

/// Where image disks are mounted (read-only), one directory per device name.
pub const DISKS: &str = "/run/vmctl/disks";

struct Entry {
    pid: i32,
    ctl: Mutex<BufReader<UnixStream>>,
    stdin: Mutex<Option<Sender<Vec<u8>>>>,
}

#[derive(Default)]
pub struct Containers {
    map: Mutex<HashMap<String, Arc<Entry>>>,
    out: Arc<Mutex<Option<Out>>>,
}

impl Containers {
    /// Output of every container goes to `out` from now on.
    pub fn set_output(&self, out: Out) {
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
    }

    fn get(&self, id: &str) -> anyhow::Result<Arc<Entry>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id)
            .cloned()
            .with_context(|| format!("no container {id:?} in this guest"))
    }

    /// Creates a container; returns its pid.
    pub fn create(&self, spec: ContainerSpec) -> anyhow::Result<i32> {
        if !valid_id(&spec.id) {
            bail!(
                "invalid container id {:?}: use 1-64 letters, digits, '-', '_', '.'",
                spec.id
            );
        }
        if self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&spec.id)
        {
            bail!("container {:?} exists already in this guest", spec.id);
        }
        mount_disk(&spec.disk)?;
        let (ours, theirs) = UnixStream::pair().context("socketpair")?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("shim")
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let fd = theirs.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = {
            let mut guard = reaper::lock();
            let child = cmd.spawn().context("start the container shim")?;
            guard.watch(child.id() as i32);
            child
        };
        drop(theirs);
        let shim_pid = child.id() as i32;
        let mut ctl = BufReader::new(ours);
        let line = serde_json::to_string(&spec)? + "\n";
        ctl.get_mut()
            .write_all(line.as_bytes())
            .context("send the spec to the shim")?;
        let pid = match read_status(&mut ctl)? {
            Status::Created(pid) => pid,
            Status::Error(e) => {
                reaper::wait(shim_pid);
                bail!("{e}");
            }
            other => bail!("container shim: unexpected {other:?}"),
        };
        let stdin = child.stdin.take().map(|mut w| {
            let (tx, rx) = channel::<Vec<u8>>();
            std::thread::spawn(move || {
                for chunk in rx {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
            tx
        });
        let out_pipe = child.stdout.take().context("shim stdout")?;
        let err_pipe = child.stderr.take().context("shim stderr")?;
        let entry = Arc::new(Entry {
            pid,
            ctl: Mutex::new(ctl),
            stdin: Mutex::new(stdin),
        });
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.id.clone(), entry.clone());
        let id = spec.id.clone();
        let out = self.out.clone();
        std::thread::spawn(move || {
            let o = pump(out_pipe, id.clone(), out.clone(), true);
            let e = pump(err_pipe, id.clone(), out.clone(), false);
            let _ = (o.join(), e.join());
            let shim_code = reaper::wait(shim_pid);
            let code = match read_status(&mut entry.ctl.lock().unwrap_or_else(|e| e.into_inner())) {
                Ok(Status::Exit(c)) => c,
                _ => shim_code,
            };
            if let Some(out) = out.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                send(&out, &FromAgent::Exit { id, code }, &[]);
            }
        });
        Ok(pid)
    }

    pub fn start(&self, id: &str) -> anyhow::Result<()> {
        let e = self.get(id)?;
        let mut ctl = e.ctl.lock().unwrap_or_else(|e| e.into_inner());
        ctl.get_mut()
            .write_all(b"start\n")
            .context("tell the shim to start")?;
        match read_status(&mut ctl)? {
            Status::Started => Ok(()),
            Status::Error(e) => bail!("{e}"),
            other => bail!("container shim: unexpected {other:?}"),
        }
    }

    pub fn signal(&self, id: &str, signal: i32) -> anyhow::Result<()> {
        let e = self.get(id)?;
        let sig = nix::sys::signal::Signal::try_from(signal)
            .with_context(|| format!("bad signal number {signal}"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(e.pid), sig)
            .with_context(|| format!("signal {signal} to container {id} (pid {})", e.pid))
    }

    pub fn stdin(&self, id: &str, data: Vec<u8>) {
        if let Ok(e) = self.get(id) {
            if let Some(tx) = e.stdin.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = tx.send(data);
            }
        }
    }

    pub fn close_stdin(&self, id: &str) {
        if let Ok(e) = self.get(id) {
            e.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// Sets a tty container's window size (its shim owns the pty master).
    pub fn resize(&self, id: &str, rows: u16, cols: u16) -> anyhow::Result<()> {
        let e = self.get(id)?;
        // Held only briefly, except by the exit reader once the shim is ending: then the
        // size no longer matters.
        let Ok(mut ctl) = e.ctl.try_lock() else {
            return Ok(());
        };
        ctl.get_mut()
            .write_all(format!("resize {rows} {cols}\n").as_bytes())
            .context("tell the shim the window size")
    }

    pub fn stats(&self, id: &str) -> anyhow::Result<Stats> {
        self.get(id)?;
        crate::workload::stats(id)
    }

    /// Kills the container (its shim removes it) and forgets it.
    pub fn delete(&self, id: &str) -> anyhow::Result<()> {
        let e = self.get(id)?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(e.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    pub fn kill_all(&self) {
        let ids: Vec<String> = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.delete(&id);
        }
    }
}

/// Copies a pipe to the host as stdout or stderr frames until EOF.
fn pump(
    mut pipe: impl Read + Send + 'static,
    id: String,
    out: Arc<Mutex<Option<Out>>>,
    stdout: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let msg = if stdout {
                FromAgent::Stdout {
                    id: id.clone(),
                    len: n,
                }
            } else {
                FromAgent::Stderr {
                    id: id.clone(),
                    len: n,
                }
            };
            if let Some(o) = out.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                send(&o, &msg, &buf[..n]);
            }
        }
    })
}

/// Mounts an image disk read-only under [`DISKS`] unless it is mounted already.
fn mount_disk(dev: &str) -> anyhow::Result<std::path::PathBuf> {
    let target = crate::shim::disk_mountpoint(dev)?;
    if std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap_or_default()))
    {
        return Ok(target);
    }
    std::fs::create_dir_all(&target).with_context(|| format!("mkdir {}", target.display()))?;
    nix::mount::mount(
        Some(dev),
        &target,
        Some("ext4"),
        nix::mount::MsFlags::MS_RDONLY,
        Some("noload"),
    )
    .with_context(|| {
        format!(
            "mount the image disk {dev} (ext4, read-only) on {}",
            target.display()
        )
    })?;
    Ok(target)
}

/// A line from the shim on the control socket.
#[derive(Debug)]
pub enum Status {
    Created(i32),
    Started,
    Exit(i32),
    Error(String),
}

fn read_status(r: &mut BufReader<UnixStream>) -> anyhow::Result<Status> {
    let mut line = String::new();
    if r.read_line(&mut line)
        .context("read from the container shim")?
        == 0
    {
        bail!("the container shim exited without a word (see the guest console)");
    }
    let line = line.trim_end();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    Ok(match word {
        "created" => Status::Created(rest.parse().context("shim pid")?),
        "started" => Status::Started,
        "exit" => Status::Exit(rest.parse().context("shim exit code")?),
        "error" => Status::Error(rest.to_string()),
        _ => bail!("container shim said {line:?}"),
    })
}
