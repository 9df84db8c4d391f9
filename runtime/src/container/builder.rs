//! [`ContainerBuilder`]: creates a container (namespaces, cgroup, rootfs, security) that waits
//! at its start gate.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::{Container, FIFO, SPEC_FILE};
use crate::cgroups::{Cgroup, Layout};
use crate::child::{Gate, Plan};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Phase};
use crate::launch::launch;
use crate::namespaces::Namespaces;
use crate::rootfs::Overlay;
use crate::security::seccomp;
use crate::state::{self, State};

/// Builds (creates) a container. See the crate docs for an example.
pub struct ContainerBuilder {
    id: String,
    root: PathBuf,
    bundle: Option<PathBuf>,
    spec: Option<Spec>,
    layers: Option<Vec<PathBuf>>,
    console: Option<OwnedFd>,
    stdio: Option<[OwnedFd; 3]>,
    init: bool,
    fifo_start: bool,
    layout: Option<Layout>,
}

impl ContainerBuilder {
    /// A container `id` whose state lives in `root/id`.
    pub fn new(id: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        ContainerBuilder {
            id: id.into(),
            root: root.into(),
            bundle: None,
            spec: None,
            layers: None,
            console: None,
            stdio: None,
            init: false,
            fifo_start: false,
            layout: None,
        }
    }

    /// Reads `dir/config.json` (an OCI bundle); `root.path` is relative to `dir`.
    pub fn bundle(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bundle = Some(dir.into());
        self
    }

    /// Uses this spec instead of a bundle's config.json.
    pub fn spec(mut self, spec: Spec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// Root filesystem: overlayfs over these read-only layers (bottom first), with the
    /// container's upper and work directories in its state directory. `root.path` is ignored.
    pub fn image_layers(mut self, layers: Vec<PathBuf>) -> Self {
        self.layers = Some(layers);
        self
    }

    /// A connected unix socket that receives the pty master (when `process.terminal`).
    pub fn console_socket(mut self, socket: OwnedFd) -> Self {
        self.console = Some(socket);
        self
    }

    /// The workload's stdin, stdout and stderr (default: the caller's).
    pub fn stdio(mut self, stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd) -> Self {
        self.stdio = Some([stdin, stdout, stderr]);
        self
    }

    /// Runs the minimal init as PID 1 (signal forwarding, zombie reaping).
    pub fn init(mut self, yes: bool) -> Self {
        self.init = yes;
        self
    }

    /// The container will be started by another process (`vmctl-runtime start`): the start
    /// gate is a FIFO in the state directory instead of the in-process socket.
    pub fn start_from_other_process(mut self, yes: bool) -> Self {
        self.fifo_start = yes;
        self
    }

    /// Overrides the detected cgroup layout.
    pub fn cgroup_layout(mut self, layout: Layout) -> Self {
        self.layout = Some(layout);
        self
    }

    /// Creates the container: namespaces, cgroup, rootfs, all set up; the workload waits at
    /// the start gate. On failure nothing is left behind (state dir, cgroup, mounts).
    pub fn create(self) -> Result<Container> {
        let dir = state::dir(&self.root, &self.id)?;
        std::fs::create_dir_all(&self.root)
            .ctx(|| format!("create state root {}", self.root.display()))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists {
                    id: self.id.clone(),
                    root: self.root.clone(),
                })
            }
            Err(e) => return Err(Error::sys(format!("create {}", dir.display()), e)),
        }
        let mut cleanup = Cleanup {
            dir: Some(dir.clone()),
            cgroup: None,
            pid: 0,
        };
        let c = self.create_in(&dir, &mut cleanup)?;
        cleanup.dir = None;
        cleanup.cgroup = None;
        cleanup.pid = 0;
        Ok(c)
    }

    fn create_in(self, dir: &Path, cleanup: &mut Cleanup) -> Result<Container> {
        let (mut spec, bundle) = match (self.spec, &self.bundle) {
            (Some(s), b) => (s, b.clone().unwrap_or_else(|| dir.to_path_buf())),
            (None, Some(b)) => {
                let b = std::path::absolute(b).unwrap_or_else(|_| b.clone());
                (crate::spec::load(&b)?, b)
            }
            (None, None) => {
                return Err(Error::Invalid {
                    what: "container",
                    value: self.id,
                    hint: "give a bundle or a spec".into(),
                })
            }
        };
        let overlay = match self.layers {
            Some(layers) => {
                let o = Overlay {
                    layers,
                    upper: dir.join("upper"),
                    work: dir.join("work"),
                };
                for d in [&o.upper, &o.work, &dir.join("rootfs")] {
                    std::fs::create_dir(d).ctx(|| format!("create {}", d.display()))?;
                }
                let mut root = spec.root().clone().unwrap_or_default();
                root.set_path(dir.join("rootfs"));
                spec.set_root(Some(root));
                Some(o)
            }
            None => None,
        };
        crate::spec::validate(&spec, &bundle, &bundle.join("config.json"))?;
        let rootfs = crate::spec::rootfs_path(&bundle, spec.root().as_ref().expect("validated"));
        let rootfs = rootfs
            .canonicalize()
            .ctx(|| format!("resolve root.path {}", rootfs.display()))?;
        let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(p) => seccomp::compile(p)?,
            None => Vec::new(),
        };
        let layout = match self.layout {
            Some(l) => l,
            None => Layout::detect()?,
        };
        let cg_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_else(|| PathBuf::from(format!("/vmctl-runtime/{}", self.id)));
        let layout =
            layout.for_resources(spec.linux().as_ref().and_then(|l| l.resources().as_ref()));
        let cgroup = Cgroup::new(layout.clone(), &cg_path)?;
        let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
        let cgroup = match cgroup.create() {
            Ok(()) => {
                cleanup.cgroup = Some(cgroup.clone());
                if let Some(res) = &resources {
                    cgroup.apply(res)?;
                }
                Some(cgroup)
            }
            // Rootless, best effort: without a delegated cgroup there are no limits.
            Err(e) if !nix::unistd::geteuid().is_root() && !has_limits(resources.as_ref()) => {
                tracing::warn!("rootless: running without a cgroup ({e})");
                None
            }
            Err(e) => return Err(e),
        };
        let gate = if self.fifo_start {
            let fifo = dir.join(FIFO);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
                .ctx(|| "mkfifo exec.fifo".into())?;
            let fd = nix::fcntl::open(
                &fifo,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ctx(|| "open exec.fifo".into())?;
            Gate::Fifo(fd)
        } else {
            Gate::Socket
        };
        std::fs::write(
            dir.join(SPEC_FILE),
            serde_json::to_vec(&spec).unwrap_or_default(),
        )
        .ctx(|| "save spec".into())?;
        let ns = Namespaces::from_spec(&spec)?;
        let hooks = spec.hooks().clone();
        let mut st = State {
            id: self.id.clone(),
            bundle,
            pid: 0,
            pid_start: 0,
            started: false,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            cgroup: cgroup.clone(),
            overlay: overlay.clone(),
            owned_dirs: Vec::new(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            hooks: spec.hooks().is_some(),
        };
        st.save(&self.root)?;
        let plan = Plan {
            new_userns: ns.new_user,
            new_netns: ns.unshare.contains(nix::sched::CloneFlags::CLONE_NEWNET),
            cgroup2: matches!(layout, Layout::V2 { .. }),
            spec,
            rootfs,
            overlay,
            exec_only: false,
            gate,
            console: self.console,
            stdio: self.stdio,
            init: self.init,
            seccomp: filters,
        };
        let launched = launch(plan, ns, cgroup.as_ref())?;
        cleanup.pid = launched.pid;
        st.pid = launched.pid;
        st.pid_start = state::proc_start(launched.pid).map(|s| s.0).unwrap_or(0);
        st.save(&self.root)?;
        let c = Container {
            root: self.root,
            state: st,
            sock: Some(launched.sock),
        };
        hooks::run(hooks.as_ref(), Phase::Create, &c.oci_state())?;
        Ok(c)
    }
}

/// Whether `res` asks for any limit (rootless mode can only run without).
fn has_limits(res: Option<&oci_spec::runtime::LinuxResources>) -> bool {
    res.is_some_and(|r| r.memory().is_some() || r.cpu().is_some() || r.pids().is_some())
}

/// Undoes a failed create.
struct Cleanup {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: i32,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.pid > 0 {
            let _ =
                nix::sys::signal::kill(Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(self.pid), None);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.remove() {
                tracing::warn!("cleanup: {e}");
            }
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
