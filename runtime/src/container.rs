//! The container lifecycle (OCI: create, start, state, kill, delete; plus exec, pause,
//! resume, stats, wait), youki-style: a builder produces a created container waiting at its
//! start gate; a `Container` is loaded from the state root by id.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use crate::cgroups::{Cgroup, Stats};
use crate::child::{Gate, Plan};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Phase};
use crate::launch::launch;
use crate::namespaces::Namespaces;
use crate::security::seccomp;
use crate::state::{State, Status};
use crate::sync;

/// The default state root of the OCI CLI.
pub const DEFAULT_ROOT: &str = "/run/vmctl-runtime";
const SPEC_FILE: &str = "spec.json";
const FIFO: &str = "exec.fifo";

mod builder;
pub use builder::ContainerBuilder;

/// A container known to the state root.
pub struct Container {
    root: PathBuf,
    state: State,
    /// The sync socket, in the process that created the container.
    sock: Option<OwnedFd>,
}

impl Container {
    /// Loads container `id` from `root`.
    pub fn load(root: impl AsRef<Path>, id: &str) -> Result<Container> {
        let root = root.as_ref();
        Ok(Container {
            root: root.into(),
            state: State::load(root, id)?,
            sock: None,
        })
    }

    /// Every container under `root`.
    pub fn list(root: impl AsRef<Path>) -> Result<Vec<Container>> {
        let root = root.as_ref();
        let Ok(entries) = std::fs::read_dir(root) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Container> = entries
            .flatten()
            .filter_map(|e| Container::load(root, &e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| {
            a.state
                .created
                .cmp(&b.state.created)
                .then(a.state.id.cmp(&b.state.id))
        });
        Ok(out)
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Host pid of the container process (its PID 1).
    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    pub fn status(&self) -> Status {
        self.state.status()
    }

    /// The recorded state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The spec the container was created with.
    pub fn spec(&self) -> Result<Spec> {
        let p = self.dir().join(SPEC_FILE);
        let text = std::fs::read(&p).ctx(|| format!("read {}", p.display()))?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::sys("parse saved spec", std::io::Error::other(e)))
    }

    /// The container's state directory.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.state.id)
    }

    /// The OCI `state` document.
    pub fn oci_state(&self) -> serde_json::Value {
        let status = self.status();
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": self.state.id,
            "status": status.to_string(),
            "pid": if status == Status::Stopped { 0 } else { self.state.pid },
            "bundle": self.state.bundle,
            "annotations": self.state.annotations,
            "created": self.state.created,
        })
    }

    fn require(&self, ok: &[Status], op: &'static str) -> Result<Status> {
        let s = self.status();
        if ok.contains(&s) {
            Ok(s)
        } else {
            Err(Error::State {
                id: self.state.id.clone(),
                status: s.to_string(),
                op,
            })
        }
    }

    /// Lets the workload run (it execs now). In the creating process the exec's outcome is
    /// reported: a missing program is an error here.
    pub fn start(&mut self) -> Result<()> {
        self.require(&[Status::Created], "start")?;
        if let Some(sock) = self.sock.take() {
            sync::send(sock.as_fd(), sync::MSG_START, &[])?;
            if let Some((sync::MSG_ERROR, body)) = sync::recv(sock.as_fd())? {
                return Err(Error::Setup(String::from_utf8_lossy(&body).into_owned()));
            }
        } else {
            self.start_fifo()?;
        }
        self.state.started = true;
        self.state.save(&self.root)?;
        self.run_hooks(Phase::Poststart);
        Ok(())
    }

    /// Runs the spec's hooks of `phase`; failures are logged (poststart, poststop).
    fn run_hooks(&self, phase: Phase) {
        if !self.state.hooks {
            return;
        }
        let hooks = self.spec().ok().and_then(|s| s.hooks().clone());
        if let Err(e) = hooks::run(hooks.as_ref(), phase, &self.oci_state()) {
            tracing::warn!("{e}");
        }
    }

    fn start_fifo(&self) -> Result<()> {
        use std::io::Read;
        let fifo = self.dir().join(FIFO);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .ctx(|| format!("open {} (started already?)", fifo.display()))?;
        let mut b = [0u8; 1];
        loop {
            match f.read(&mut b) {
                Ok(1) => break,
                Ok(_) | Err(_) if self.state.alive() => {
                    std::thread::sleep(std::time::Duration::from_micros(200))
                }
                _ => {
                    return Err(Error::Setup(
                        "the container process died before start".into(),
                    ))
                }
            }
        }
        std::fs::remove_file(&fifo).ctx(|| "remove exec.fifo".into())
    }

    /// Sends `signal` to the container process, or with `all` to every process of its cgroup.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        self.require(&[Status::Created, Status::Running, Status::Paused], "kill")?;
        if all {
            if let Some(cg) = &self.state.cgroup {
                cg.signal_all(signal);
                return Ok(());
            }
        }
        // SAFETY: kill(2) with integers.
        if unsafe { libc::kill(self.state.pid, signal) } != 0 {
            return Err(Error::sys(
                format!("kill {} with {signal}", self.state.pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Waits for the container process to exit and returns its exit code (128 + signal when
    /// killed). Works in the process that created it (a child subreaper).
    pub fn wait(&self) -> Result<i32> {
        wait_pid(self.state.pid)
    }

    /// Freezes every process of the container.
    pub fn pause(&self) -> Result<()> {
        self.require(&[Status::Running, Status::Created], "pause")?;
        self.cgroup()?.freeze(true)
    }

    /// Thaws the container.
    pub fn resume(&self) -> Result<()> {
        self.require(&[Status::Paused], "resume")?;
        self.cgroup()?.freeze(false)
    }

    fn cgroup(&self) -> Result<&Cgroup> {
        self.state
            .cgroup
            .as_ref()
            .ok_or_else(|| Error::Setup("container has no cgroup".into()))
    }

    /// Resource usage of the container's cgroup.
    pub fn stats(&self) -> Result<Stats> {
        self.cgroup()?.stats()
    }

    /// Host pids of every process in the container.
    pub fn processes(&self) -> Result<Vec<i32>> {
        self.cgroup()?.procs()
    }

    /// Runs `process` inside the running container (its namespaces, cgroup, and the
    /// container's seccomp profile); returns its host pid (wait with [`wait_pid`]).
    pub fn exec(&self, process: Process, console: Option<OwnedFd>) -> Result<i32> {
        self.exec_with_stdio(process, console, None)
    }

    /// [`Container::exec`] with the process' stdin, stdout and stderr.
    pub fn exec_with_stdio(
        &self,
        process: Process,
        console: Option<OwnedFd>,
        stdio: Option<[OwnedFd; 3]>,
    ) -> Result<i32> {
        self.require(&[Status::Running, Status::Created], "exec")?;
        let mut spec = self.spec()?;
        spec.set_process(Some(process));
        let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(p) => seccomp::compile(p)?,
            None => Vec::new(),
        };
        let ns = Namespaces::of_process(self.state.pid)?;
        let plan = Plan {
            new_userns: false,
            new_netns: false,
            cgroup2: false,
            spec,
            rootfs: PathBuf::from("/"),
            overlay: None,
            exec_only: true,
            gate: Gate::Socket,
            console,
            stdio,
            init: false,
            seccomp: filters,
        };
        let launched = launch(plan, ns, self.state.cgroup.as_ref())?;
        sync::send(launched.sock.as_fd(), sync::MSG_START, &[])?;
        if let Some((sync::MSG_ERROR, body)) = sync::recv(launched.sock.as_fd())? {
            let _ = wait_pid(launched.pid);
            return Err(Error::Setup(String::from_utf8_lossy(&body).into_owned()));
        }
        Ok(launched.pid)
    }

    /// Deletes a stopped (or, with `force`, any) container: kills what is left, removes its
    /// cgroup, overlay directories and state.
    pub fn delete(self, force: bool) -> Result<()> {
        let s = self.status();
        if matches!(s, Status::Running | Status::Paused) && !force {
            return Err(Error::State {
                id: self.state.id.clone(),
                status: s.to_string(),
                op: "delete (use --force)",
            });
        }
        if self.state.alive() {
            // SAFETY: kill(2) with integers.
            unsafe { libc::kill(self.state.pid, libc::SIGKILL) };
        }
        if let Some(cg) = &self.state.cgroup {
            cg.remove()?;
        }
        // Reap it when it is our child; otherwise wait until it is gone.
        let _ = waitpid(
            Pid::from_raw(self.state.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        for _ in 0..2000 {
            if !self.state.alive() {
                break;
            }
            let _ = waitpid(
                Pid::from_raw(self.state.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.run_hooks(Phase::Poststop);
        let dir = self.dir();
        std::fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))
    }
}

/// Waits for process `pid` (a child, or an orphan re-parented to this subreaper) and
/// returns its exit code, 128 + signal number when it was killed.
pub fn wait_pid(pid: i32) -> Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("wait for {pid}"),
                    std::io::Error::from(e),
                ))
            }
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;
