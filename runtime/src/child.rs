//! What runs inside the container process after fork: rootfs, hostname, console, rlimits,
//! then (once started) identity, capabilities, no_new_privs, seccomp and execve.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process, Spec};
use seccompiler::BpfProgram;

use crate::error::{Context, Error, Result};
use crate::rootfs::{self, Overlay, RootfsPlan};
use crate::security::{caps, seccomp};
use crate::sync;

/// How the container process learns that it may exec the workload.
pub(crate) enum Gate {
    /// Wait for MSG_START on the sync socket (runtime and start in one process).
    Socket,
    /// Open this FIFO (an O_PATH fd) for writing: blocks until `start` opens it (runc-style,
    /// for `create` and `start` in different processes).
    Fifo(OwnedFd),
}

/// Everything the container process needs, prepared by the runtime before fork.
pub(crate) struct Plan {
    pub spec: Spec,
    pub rootfs: PathBuf,
    pub overlay: Option<Overlay>,
    pub new_userns: bool,
    /// A new network namespace: bring its loopback up.
    pub new_netns: bool,
    pub cgroup2: bool,
    /// Joining a running container (exec): no rootfs or hostname setup.
    pub exec_only: bool,
    pub gate: Gate,
    pub console: Option<OwnedFd>,
    /// stdin, stdout, stderr for the workload (else the runtime's own).
    pub stdio: Option<[OwnedFd; 3]>,
    pub init: bool,
    pub seccomp: Vec<BpfProgram>,
}

/// Setup before the start gate (container process, pid 1 of its namespace).
pub(crate) fn setup(plan: &Plan) -> Result<()> {
    let process = process(&plan.spec)?;
    if let Some(fds) = &plan.stdio {
        for (target, fd) in fds.iter().enumerate() {
            // SAFETY: dup2 of an open descriptor onto 0, 1 or 2.
            if unsafe { libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
                return Err(Error::sys(
                    "dup2 the workload's stdio",
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    if !plan.exec_only {
        if plan.new_netns {
            loopback_up()?;
        }
        if let Some(h) = plan.spec.hostname() {
            nix::unistd::sethostname(h).ctx(|| format!("sethostname {h:?}"))?;
        }
        if let Some(d) = plan.spec.domainname() {
            let c = CString::new(d.as_str()).unwrap_or_default();
            // SAFETY: `c` is a valid C string of the given length.
            if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } != 0 {
                return Err(Error::sys(
                    format!("setdomainname {d:?}"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        rootfs::prepare(&RootfsPlan {
            spec: &plan.spec,
            rootfs: &plan.rootfs,
            overlay: plan.overlay.as_ref(),
            userns: plan.new_userns,
            cgroup2: plan.cgroup2,
        })?;
    }
    match (&plan.console, process.terminal().unwrap_or(false)) {
        (Some(sock), true) => {
            let size = process
                .console_size()
                .map(|b| (b.height() as u16, b.width() as u16));
            crate::console::setup(sock.as_fd(), size)?;
        }
        (None, true) => {
            return Err(Error::Invalid {
                what: "process.terminal",
                value: "true".into(),
                hint: "a terminal needs --console-socket".into(),
            })
        }
        _ => {
            let _ = nix::unistd::setsid();
        }
    }
    for r in process.rlimits().iter().flatten() {
        let res = rlimit_resource(r.typ());
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(Error::sys(
                format!("setrlimit {:?}", r.typ()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| "write oom_score_adj".into())?;
    }
    Ok(())
}

/// `ip link set lo up` with one ioctl.
fn loopback_up() -> Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ctx(|| "socket for lo".into())?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[..3].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char, 0]);
    req.ifr_ifru.ifru_flags =
        (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq that lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(Error::sys("bring lo up", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn process(spec: &Spec) -> Result<&Process> {
    spec.process()
        .as_ref()
        .ok_or_else(|| Error::Setup("spec has no process".into()))
}

/// Waits at the start gate. `Ok(false)`: the runtime went away without starting us.
pub(crate) fn wait_gate(plan: &Plan, sock: &OwnedFd) -> Result<bool> {
    match &plan.gate {
        Gate::Socket => match sync::recv(sock.as_fd())? {
            Some((sync::MSG_START, _)) => Ok(true),
            _ => Ok(false),
        },
        Gate::Fifo(path_fd) => {
            let p = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .ctx(|| "open the exec fifo".into())?;
            std::io::Write::write_all(&mut f, b"0").ctx(|| "write the exec fifo".into())?;
            Ok(true)
        }
    }
}

/// After the gate: identity, capabilities, no_new_privs, seccomp, then execve (or the
/// minimal init, which forks the workload). Returns only on error.
pub(crate) fn finalize(
    plan: &Plan,
    sync_fd: std::os::fd::RawFd,
) -> Result<std::convert::Infallible> {
    let process = process(&plan.spec)?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    let argv: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| CString::new(a.as_str()).map_err(|_| bad_string("process.args", a)))
        .collect::<Result<_>>()?;
    let envs: Vec<String> = process.env().clone().unwrap_or_default();
    let envp: Vec<CString> = envs
        .iter()
        .map(|e| CString::new(e.as_str()).map_err(|_| bad_string("process.env", e)))
        .collect::<Result<_>>()?;
    if !nnp && !plan.seccomp.is_empty() {
        seccomp::install(&plan.seccomp)?;
    }
    if let Some(c) = process.capabilities() {
        caps::drop_bounding(c)?;
    }
    let user = process.user();
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gids: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&gids) {
        // Forbidden in a user namespace with setgroups=deny; fine when none were asked for.
        if !gids.is_empty() {
            return Err(Error::sys("setgroups", std::io::Error::from(e)));
        }
    }
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {uid}"))?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(c) = process.capabilities() {
        caps::apply(c)?;
    }
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).ctx(|| format!("chdir to process.cwd {}", cwd.display()))?;
    if nnp {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Error::sys(
                "set no_new_privs",
                std::io::Error::last_os_error(),
            ));
        }
        if !plan.seccomp.is_empty() {
            seccomp::install(&plan.seccomp)?;
        }
    }
    let path = find_program(&argv, &envs)?;
    if plan.init {
        crate::init::run(sync_fd, || {
            let e = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
            eprintln!("vmctl-init: exec {}: {e}", path.to_string_lossy());
        });
    }
    let e = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    Err(Error::Setup(format!("exec {:?}: {e}", path)))
}

fn bad_string(field: &'static str, v: &str) -> Error {
    Error::Invalid {
        what: field,
        value: v.into(),
        hint: "remove the NUL byte".into(),
    }
}

/// Resolves argv[0] with the container's PATH (its env, not the runtime's).
fn find_program(argv: &[CString], env: &[String]) -> Result<CString> {
    let arg0 = argv
        .first()
        .ok_or_else(|| Error::Setup("process.args is empty".into()))?;
    let s = arg0.to_string_lossy();
    if s.contains('/') {
        return Ok(arg0.clone());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = format!("{dir}/{s}");
        if nix::unistd::access(cand.as_str(), nix::unistd::AccessFlags::X_OK).is_ok()
            && std::fs::metadata(&cand).is_ok_and(|m| m.is_file())
        {
            return CString::new(cand).map_err(|_| bad_string("process.args", &s));
        }
    }
    Err(Error::Setup(format!(
        "exec {s:?}: executable file not found in $PATH ({path})"
    )))
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType as R;
    match t {
        R::RlimitCpu => libc::RLIMIT_CPU,
        R::RlimitFsize => libc::RLIMIT_FSIZE,
        R::RlimitData => libc::RLIMIT_DATA,
        R::RlimitStack => libc::RLIMIT_STACK,
        R::RlimitCore => libc::RLIMIT_CORE,
        R::RlimitRss => libc::RLIMIT_RSS,
        R::RlimitNproc => libc::RLIMIT_NPROC,
        R::RlimitNofile => libc::RLIMIT_NOFILE,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        R::RlimitAs => libc::RLIMIT_AS,
        R::RlimitLocks => libc::RLIMIT_LOCKS,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        R::RlimitNice => libc::RLIMIT_NICE,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO,
        R::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}
