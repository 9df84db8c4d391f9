//! Starting the container process: fork (glibc's, so the child may allocate even when the
//! caller is multi-threaded), enter/create namespaces in that child, fork once more so the
//! workload is PID 1 of the new PID namespace, and talk over a sync socket. No re-exec.
//!
//! runtime ──fork──> helper: [setns user | unshare user; "U"] wait "g"; setns...; unshare...
//!                      └──fork──> container process (pid 1): "P" sent by helper, helper exits;
//!                                 setup; "R"; start gate; finalize; execve

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use crate::cgroups::Cgroup;
use crate::child::{self, Gate, Plan};
use crate::error::{Context, Error, Result};
use crate::namespaces::Namespaces;
use crate::sync::{self, MSG_ERROR, MSG_GO, MSG_PID, MSG_READY, MSG_USERNS};

/// A container process that finished its setup and waits at its start gate.
pub(crate) struct Launched {
    pub pid: i32,
    /// The runtime's end of the sync socket (start, and exec errors, go through it).
    pub sock: OwnedFd,
}

/// Forks the container process. The calling process becomes a child subreaper so it can
/// wait for the container process, whose direct parent (the helper) exits early.
pub(crate) fn launch(plan: Plan, ns: Namespaces, cgroup: Option<&Cgroup>) -> Result<Launched> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (ours, theirs) = sync::pair()?;
    // SAFETY: glibc's fork; the child only runs this crate's code and then execs or exits.
    let helper = match unsafe { fork() }.ctx(|| "fork".into())? {
        ForkResult::Child => {
            drop(ours);
            helper_main(plan, ns, theirs)
        }
        ForkResult::Parent { child } => child,
    };
    drop(theirs);
    let result = parent_side(&ours, helper, &ns, cgroup);
    let _ = waitpid(helper, None);
    match result {
        Ok(pid) => Ok(Launched { pid, sock: ours }),
        Err(e) => Err(e),
    }
}

fn parent_side(
    sock: &OwnedFd,
    helper: Pid,
    ns: &Namespaces,
    cgroup: Option<&Cgroup>,
) -> Result<i32> {
    let fail = |e: Error| {
        let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
        e
    };
    if let Some(cg) = cgroup {
        cg.add_process(helper.as_raw()).map_err(fail)?;
    }
    if ns.new_user {
        sync::expect(sock.as_fd(), MSG_USERNS).map_err(fail)?;
        write_maps(helper.as_raw(), ns).map_err(fail)?;
    }
    sync::send(sock.as_fd(), MSG_GO, &[]).map_err(fail)?;
    let body = sync::expect(sock.as_fd(), MSG_PID)?;
    let pid = i32::from_le_bytes(
        body.get(..4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 4]),
    );
    if let Err(e) = sync::expect(sock.as_fd(), MSG_READY) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(e);
    }
    Ok(pid)
}

fn write_maps(pid: i32, ns: &Namespaces) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
            .ctx(|| "write setgroups".into())?;
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), &ns.uid_map)
        .ctx(|| format!("write uid_map {:?} (linux.uidMappings)", ns.uid_map))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &ns.gid_map)
        .ctx(|| format!("write gid_map {:?} (linux.gidMappings)", ns.gid_map))?;
    Ok(())
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends this forked process without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

fn report(sock: &OwnedFd, e: &Error) {
    let text = match e {
        Error::Setup(m) => m.clone(),
        other => other.to_string(),
    };
    let _ = sync::send(sock.as_fd(), MSG_ERROR, text.as_bytes());
}

fn helper_main(plan: Plan, ns: Namespaces, sock: OwnedFd) -> ! {
    match enter(&ns, &sock) {
        Ok(()) => {}
        Err(e) => {
            report(&sock, &e);
            exit(1)
        }
    }
    // SAFETY: this helper is single-threaded (a fresh fork).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => container_main(plan, sock),
        Ok(ForkResult::Parent { child }) => {
            let _ = sync::send(sock.as_fd(), MSG_PID, &child.as_raw().to_le_bytes());
            exit(0)
        }
        Err(e) => {
            report(
                &sock,
                &Error::sys("fork the container process", std::io::Error::from(e)),
            );
            exit(1)
        }
    }
}

fn enter(ns: &Namespaces, sock: &OwnedFd) -> Result<()> {
    if let Some(fd) = &ns.user_join {
        setns(fd, CloneFlags::CLONE_NEWUSER).ctx(|| "join the user namespace".into())?;
    } else if ns.new_user {
        unshare(CloneFlags::CLONE_NEWUSER).ctx(|| "create the user namespace".into())?;
        sync::send(sock.as_fd(), MSG_USERNS, &[])?;
    }
    sync::expect(sock.as_fd(), MSG_GO)?;
    if ns.new_user || ns.user_join.is_some() {
        let root = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
        let _ = nix::unistd::setresgid(root.1, root.1, root.1);
        let _ = nix::unistd::setresuid(root.0, root.0, root.0);
    }
    for (flag, fd) in &ns.joins {
        setns(fd, *flag).ctx(|| format!("join namespace {flag:?}"))?;
    }
    unshare(ns.unshare).ctx(|| format!("create namespaces {:?}", ns.unshare))?;
    Ok(())
}

fn container_main(plan: Plan, sock: OwnedFd) -> ! {
    if let Err(e) = child::setup(&plan) {
        report(&sock, &e);
        exit(1)
    }
    if sync::send(sock.as_fd(), MSG_READY, &[]).is_err() {
        exit(1)
    }
    match child::wait_gate(&plan, &sock) {
        Ok(true) => {}
        Ok(false) => exit(0),
        Err(e) => {
            eprintln!("vmctl-runtime: {e}");
            exit(1)
        }
    }
    let Err(e) = child::finalize(&plan, sock.as_raw_fd());
    if matches!(plan.gate, Gate::Socket) {
        report(&sock, &e);
    } else {
        eprintln!("vmctl-runtime: {e}");
    }
    exit(if e.to_string().contains("not found") {
        127
    } else {
        126
    })
}
