//! THE place where a container is created, started, waited for and removed inside the guest.
//!
//! The container gets its own mount, PID, UTS and IPC namespaces (and network namespace for
//! `network: none`), a cgroup v2 under /sys/fs/cgroup/vmctl/<id> with the spec's limits, and
//! an overlayfs root over the image layers with a tmpfs upper (/run is tmpfs).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use guest::protocol::{ContainerSpec, NetworkMode, Stats};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{fork, ForkResult, Pid};

use crate::containers::CGROUP_PARENT;

/// Per-container state directory (upper, work, rootfs) on the guest's tmpfs.
const STATE: &str = "/run/vmctl/containers";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A created container, waiting at its start gate.
pub struct Workload {
    pid: i32,
    gate: Option<OwnedFd>,
    report: Option<OwnedFd>,
    cgroup: PathBuf,
    dir: PathBuf,
    exec_failed: bool,
}

fn cgroup_dir(id: &str) -> PathBuf {
    Path::new(CGROUP_PARENT).join(id)
}

impl Workload {
    /// Sets the container up; the workload process waits for [`Workload::start`].
    pub fn create(spec: &ContainerSpec, layers: Vec<PathBuf>) -> anyhow::Result<Workload> {
        if layers.is_empty() {
            bail!("the image has no layers");
        }
        let dir = Path::new(STATE).join(&spec.id);
        for d in ["upper", "work", "rootfs"] {
            std::fs::create_dir_all(dir.join(d))
                .with_context(|| format!("mkdir {}/{d}", dir.display()))?;
        }
        let cgroup = cgroup_dir(&spec.id);
        let mut wl = Workload {
            pid: 0,
            gate: None,
            report: None,
            cgroup: cgroup.clone(),
            dir: dir.clone(),
            exec_failed: false,
        };
        setup_cgroup(&cgroup, spec)?;
        // SAFETY: prctl with integer arguments: orphans of the container come back to us.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (rep_r, rep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let plan = Plan {
            spec,
            layers: &layers,
            dir: &dir,
            cgroup: &cgroup,
        };
        // SAFETY: the shim is single-threaded, so the child may run arbitrary code.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => {
                drop((gate_w, rep_r));
                helper(&plan, gate_r, rep_w)
            }
            ForkResult::Parent { child } => {
                drop((gate_r, rep_w));
                let _ = nix::sys::wait::waitpid(child, None);
            }
        }
        let mut f = std::fs::File::from(rep_r);
        // The helper reports the pid (4 bytes), then the container's PID 1 "R" once set up;
        // anything else is an error message.
        let mut pid = [0u8; 4];
        let mut ready = [0u8; 1];
        let ok = f.read_exact(&mut pid).is_ok();
        if ok {
            wl.pid = i32::from_le_bytes(pid);
        }
        if !ok || f.read_exact(&mut ready).is_err() || ready[0] != b'R' {
            let mut msg = if ok {
                String::from_utf8_lossy(&ready).into_owned()
            } else {
                String::new()
            };
            let _ = f.read_to_string(&mut msg);
            wl.destroy();
            bail!(
                "container set-up failed: {}",
                msg.trim_matches(char::from(0)).trim()
            );
        }
        wl.gate = Some(gate_w);
        wl.report = Some(f.into());
        Ok(wl)
    }

    /// The container's PID 1, as the guest sees it.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Opens the gate; an exec failure (e.g. command not found) is returned here.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let gate = self.gate.take().context("started twice")?;
        let _ = nix::unistd::write(&gate, b"s");
        drop(gate);
        let mut msg = String::new();
        if let Some(r) = self.report.take() {
            let _ = std::fs::File::from(r).read_to_string(&mut msg);
        }
        if !msg.is_empty() {
            self.exec_failed = msg.starts_with("exec ");
            bail!("{}", msg.trim());
        }
        Ok(())
    }

    /// Whether [`Workload::start`] failed in the exec itself: the process then exited with
    /// 127 (not found) or 126 (not executable), as docker reports it.
    pub fn exec_failed(&self) -> bool {
        self.exec_failed
    }

    /// Waits for the container's PID 1; its exit code, 128 + signal when killed.
    pub fn wait(&self) -> i32 {
        use nix::sys::wait::{waitpid, WaitStatus};
        loop {
            match waitpid(Pid::from_raw(self.pid), None) {
                Ok(WaitStatus::Exited(_, c)) => return c,
                Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 255,
            }
        }
    }

    /// Kills what is left and removes the cgroup and the state directory.
    pub fn destroy(&mut self) {
        if self.pid > 0 {
            let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
            let _ =
                nix::sys::signal::kill(Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(self.pid), None);
        }
        for _ in 0..200 {
            match std::fs::remove_dir(&self.cgroup) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                _ => break,
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resource usage from the container's cgroup.
pub fn stats(id: &str) -> anyhow::Result<Stats> {
    let cg = cgroup_dir(id);
    let read = |f: &str| {
        std::fs::read_to_string(cg.join(f)).with_context(|| format!("read {}/{f}", cg.display()))
    };
    let num = |s: String| s.trim().parse::<u64>().ok();
    let keyed = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    Ok(Stats {
        memory_bytes: num(read("memory.current")?).unwrap_or(0),
        memory_limit: num(read("memory.max")?),
        pids: num(read("pids.current")?).unwrap_or(0),
        cpu_usage_ns: keyed(&read("cpu.stat")?, "usage_usec ") * 1000,
        oom_kills: keyed(&read("memory.events").unwrap_or_default(), "oom_kill "),
    })
}

fn setup_cgroup(cg: &Path, spec: &ContainerSpec) -> anyhow::Result<()> {
    std::fs::create_dir_all(CGROUP_PARENT).context("create the containers' cgroup")?;
    let _ = std::fs::write(
        Path::new(CGROUP_PARENT).join("cgroup.subtree_control"),
        "+memory +pids +cpu",
    );
    std::fs::create_dir(cg).with_context(|| format!("create cgroup {}", cg.display()))?;
    let w = |f: &str, v: String| {
        std::fs::write(cg.join(f), &v).with_context(|| format!("write {v} to {}/{f}", cg.display()))
    };
    if let Some(m) = spec.limits.memory_bytes {
        w("memory.max", m.to_string())?;
        let _ = w("memory.swap.max", "0".into());
    }
    if let Some(c) = spec.limits.cpus {
        w(
            "cpu.max",
            format!("{} 100000", ((c * 100_000.0) as u64).max(1000)),
        )?;
    }
    if let Some(p) = spec.limits.pids.filter(|p| *p > 0) {
        w("pids.max", p.to_string())?;
    }
    Ok(())
}

struct Plan<'a> {
    spec: &'a ContainerSpec,
    layers: &'a [PathBuf],
    dir: &'a Path,
    cgroup: &'a Path,
}

fn exit(code: i32) -> ! {
    // SAFETY: ends this forked process without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

/// In the first child: joins the cgroup, makes the namespaces, forks the container's PID 1,
/// reports its pid.
fn helper(p: &Plan<'_>, gate: OwnedFd, report: OwnedFd) -> ! {
    let fail = |e: anyhow::Error| -> ! {
        let _ = nix::unistd::write(&report, format!("{e:#}").as_bytes());
        exit(1)
    };
    if let Err(e) = std::fs::write(p.cgroup.join("cgroup.procs"), "0") {
        fail(anyhow::anyhow!("join cgroup {}: {e}", p.cgroup.display()));
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if p.spec.network == NetworkMode::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = nix::sched::unshare(flags) {
        fail(anyhow::anyhow!("unshare {flags:?}: {e}"));
    }
    // SAFETY: this process is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            if let Err(e) = setup(p) {
                fail(e);
            }
            let _ = nix::unistd::write(&report, b"R");
            let mut b = [0u8; 1];
            if !matches!(nix::unistd::read(&gate, &mut b), Ok(1)) {
                exit(0);
            }
            let e = exec(p.spec);
            let code = if e.raw_os_error() == Some(libc::ENOENT) {
                127
            } else {
                126
            };
            let _ = nix::unistd::write(
                &report,
                format!(
                    "exec {:?}: {e}",
                    p.spec.args.first().unwrap_or(&String::new())
                )
                .as_bytes(),
            );
            exit(code)
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::unistd::write(&report, &child.as_raw().to_le_bytes());
            exit(0)
        }
        Err(e) => fail(anyhow::anyhow!("fork: {e}")),
    }
}

fn overlay_data(p: &Plan<'_>) -> anyhow::Result<String> {
    let lower: Vec<&str> = p
        .layers
        .iter()
        .rev()
        .map(|l| l.to_str().context("non-UTF-8 layer path"))
        .collect::<anyhow::Result<_>>()?;
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        p.dir.join("upper").display(),
        p.dir.join("work").display()
    ))
}

/// In the container's PID 1, before the gate: the root filesystem, identity, environment.
fn setup(p: &Plan<'_>) -> anyhow::Result<()> {
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .context("make / private")?;
    let root = p.dir.join("rootfs");
    let data = overlay_data(p)?;
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .with_context(|| format!("mount overlay {data}"))?;
    let sub = |d: &str| {
        let t = root.join(d);
        let _ = std::fs::create_dir_all(&t);
        t
    };
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), &sub("proc"), Some("proc"), nosuid, none).context("mount /proc")?;
    mount(
        Some("sysfs"),
        &sub("sys"),
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        none,
    )
    .context("mount /sys")?;
    mount(
        Some("tmpfs"),
        &sub("dev"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755"),
    )
    .context("mount /dev")?;
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let t = root.join("dev").join(n);
        std::fs::File::create(&t).with_context(|| format!("create {}", t.display()))?;
        mount(
            Some(Path::new("/dev").join(n).as_path()),
            &t,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .with_context(|| format!("bind /dev/{n}"))?;
    }
    mount(
        Some("devpts"),
        &sub("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .context("mount /dev/pts")?;
    mount(
        Some("shm"),
        &sub("dev/shm"),
        Some("tmpfs"),
        nosuid,
        Some("mode=1777"),
    )
    .context("mount /dev/shm")?;
    for (l, t) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let _ = std::os::unix::fs::symlink(t, root.join("dev").join(l));
    }
    nix::unistd::chdir(&root).context("chdir rootfs")?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detach the old root")?;
    nix::unistd::chdir("/")?;
    if p.spec.network == NetworkMode::None {
        let _ = crate::net::loopback();
    }
    let _ = nix::unistd::sethostname(
        p.spec
            .hostname
            .as_deref()
            .unwrap_or(&p.spec.id[..p.spec.id.len().min(12)]),
    );
    let (uid, gid, home) = crate::user::resolve(p.spec.user.as_deref())?;
    let workdir = p.spec.workdir.clone().unwrap_or_else(|| "/".into());
    std::fs::create_dir_all(&workdir)
        .with_context(|| format!("create working directory {workdir}"))?;
    if p.spec.read_only {
        let f = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(none, "/", none, f, none).context("remount / read-only")?;
    }
    nix::unistd::setgroups(&[gid]).context("setgroups")?;
    nix::unistd::setgid(gid).with_context(|| format!("setgid {gid}"))?;
    nix::unistd::setuid(uid).with_context(|| format!("setuid {uid}"))?;
    nix::unistd::chdir(workdir.as_str()).with_context(|| format!("chdir {workdir}"))?;
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    std::env::set_var("PATH", DEFAULT_PATH);
    std::env::set_var(
        "HOSTNAME",
        p.spec
            .hostname
            .as_deref()
            .unwrap_or(&p.spec.id[..p.spec.id.len().min(12)]),
    );
    std::env::set_var("HOME", home);
    for kv in &p.spec.env {
        if let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) {
            std::env::set_var(k, v);
        }
    }
    Ok(())
}

fn exec(spec: &ContainerSpec) -> std::io::Error {
    let args: Result<Vec<CString>, _> = spec
        .args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect();
    let Ok(args) = args else {
        return std::io::Error::from_raw_os_error(libc::EINVAL);
    };
    let Some(prog) = args.first() else {
        return std::io::Error::from_raw_os_error(libc::ENOENT);
    };
    match nix::unistd::execvp(prog, &args) {
        Err(e) => std::io::Error::from(e),
    }
}
