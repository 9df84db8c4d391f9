//! THE place where a container is created, started, waited for and removed inside the guest:
//! with the project's runtime library, the same code `--isolation container` uses on the host
//! (docker's defaults: namespaces, capabilities, seccomp, masked paths; cgroup v2 limits;
//! overlayfs over the image layers with the upper directory on the guest's tmpfs /run).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use guest::protocol::{ContainerSpec, NetworkMode, Stats};
use runtime::oci_spec::runtime::{LinuxNamespaceType, Spec};
use runtime::{Container, ContainerBuilder};

/// The runtime's state root in the guest (tmpfs).
const ROOT: &str = "/run/vmctl-runtime";

/// A created container, waiting at its start gate.
pub struct Workload {
    c: Option<Container>,
    pid: i32,
    exec_failed: bool,
}

impl Workload {
    /// Sets the container up; the workload process waits for [`Workload::start`]. With
    /// `spec.tty`, `console` receives the master of the container's pty during the set-up.
    pub fn create(
        spec: &ContainerSpec,
        layers: Vec<PathBuf>,
        console: Option<OwnedFd>,
    ) -> anyhow::Result<Workload> {
        if layers.is_empty() {
            bail!("the image has no layers");
        }
        if spec.tty && console.is_none() {
            bail!("a terminal (tty) needs a console socket");
        }
        let binds = crate::volumes::mount_all(spec)?;
        let created = oci_spec(spec, &layers, binds).and_then(|oci| {
            let mut b = ContainerBuilder::new(spec.id.clone(), ROOT)
                .spec(oci)
                .image_layers(layers)
                .init(spec.init);
            if let Some(c) = console {
                b = b.console_socket(c);
            }
            Ok(b.create()?)
        });
        let c = match created {
            Ok(c) => c,
            Err(e) => {
                crate::volumes::unmount_all(&spec.id);
                return Err(e);
            }
        };
        let pid = c.pid();
        Ok(Workload {
            c: Some(c),
            pid,
            exec_failed: false,
        })
    }

    /// The container's PID 1, as the guest sees it.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Opens the gate. A failure here is the exec's (e.g. command not found): the process
    /// then exits with 127 or 126.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let c = self.c.as_mut().context("no container")?;
        if let Err(e) = c.start() {
            self.exec_failed = true;
            return Err(e.into());
        }
        Ok(())
    }

    /// Whether [`Workload::start`] failed in the exec itself.
    pub fn exec_failed(&self) -> bool {
        self.exec_failed
    }

    /// Waits for the container's PID 1; its exit code, 128 + signal when killed.
    pub fn wait(&self) -> i32 {
        match &self.c {
            Some(c) => c.wait().unwrap_or(255),
            None => 255,
        }
    }

    /// Kills what is left and removes the cgroup, overlay directories and state.
    pub fn destroy(&mut self) {
        if let Some(c) = self.c.take() {
            let id = c.id().to_string();
            if let Err(e) = c.delete(true) {
                eprintln!("vmctl-agent: remove container: {e}");
            }
            crate::volumes::unmount_all(&id);
        }
    }
}

/// Resource usage from the container's cgroup.
pub fn stats(id: &str) -> anyhow::Result<Stats> {
    let s = Container::load(ROOT, id)?.stats()?;
    Ok(Stats {
        memory_bytes: s.memory_usage,
        memory_limit: s.memory_limit,
        pids: s.pids_current,
        cpu_usage_ns: s.cpu_usage_ns,
        oom_kills: s.oom_kills,
    })
}

/// The OCI spec: the runtime's docker defaults, then the request (as `vmctl run` builds it
/// for `--isolation container`).
fn oci_spec(
    spec: &ContainerSpec,
    layers: &[PathBuf],
    binds: Vec<runtime::oci_spec::runtime::Mount>,
) -> anyhow::Result<Spec> {
    if spec.args.is_empty() {
        bail!("no command");
    }
    let mut oci = runtime::spec::docker_default(spec.args.clone(), Path::new("/"));
    let mut p = oci.process().clone().unwrap_or_default();
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={}", spec.id));
    }
    if spec.tty {
        env.push("TERM=xterm".into());
    }
    p.set_env(Some(env));
    p.set_cwd(PathBuf::from(
        spec.workdir.clone().unwrap_or_else(|| "/".into()),
    ));
    if let Some(u) = spec.user.as_deref().filter(|u| !u.is_empty()) {
        let (uid, gid) = crate::user::resolve(u, layers)?;
        let mut usr = p.user().clone();
        usr.set_uid(uid);
        usr.set_gid(gid);
        p.set_user(usr);
    }
    p.set_terminal(Some(spec.tty));
    oci.set_process(Some(p));
    oci.set_hostname(Some(
        spec.hostname.clone().unwrap_or_else(|| spec.id.clone()),
    ));
    let mut root = oci.root().clone().unwrap_or_default();
    root.set_readonly(Some(spec.read_only));
    oci.set_root(Some(root));
    if !binds.is_empty() {
        let mut mounts = oci.mounts().clone().unwrap_or_default();
        mounts.extend(binds);
        oci.set_mounts(Some(mounts));
    }
    let mut v = serde_json::to_value(&oci)?;
    let res = &mut v["linux"]["resources"];
    if let Some(m) = spec.limits.memory_bytes {
        res["memory"] = serde_json::json!({"limit": m, "swap": m});
    }
    if let Some(c) = spec.limits.cpus {
        if c <= 0.0 {
            bail!("cpus {c}: must be positive");
        }
        res["cpu"] = serde_json::json!({"quota": (c * 100_000.0) as i64, "period": 100_000});
    }
    if let Some(n) = spec.limits.pids {
        res["pids"] = serde_json::json!({"limit": n});
    }
    v["linux"]["cgroupsPath"] = serde_json::json!(format!("/vmctl/{}", spec.id));
    let mut oci: Spec = serde_json::from_value(v)?;
    if spec.network == NetworkMode::Guest {
        let mut linux = oci.linux().clone().unwrap_or_default();
        let ns = linux.namespaces().clone().unwrap_or_default();
        linux.set_namespaces(Some(
            ns.into_iter()
                .filter(|n| n.typ() != LinuxNamespaceType::Network)
                .collect(),
        ));
        oci.set_linux(Some(linux));
    }
    Ok(oci)
}
