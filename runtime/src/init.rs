//! The minimal init (`--init`): PID 1 forwards signals to the workload, reaps every zombie,
//! and exits with the workload's status (128 + signal when it was killed).

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Forks the workload (`exec` runs in the child and must not return) and becomes its reaper.
pub(crate) fn run(sync_fd: std::os::fd::RawFd, exec: impl FnOnce()) -> ! {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old));
    // SAFETY: the container process is single-threaded here.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            exec();
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            // The workload's exec (close-on-exec) must be what the runtime sees as EOF, and
            // the init keeps none of the runtime's descriptors (sockets, fifo, logs).
            // SAFETY: closing our copy of the sync socket, then every fd >= 3; the reaper
            // below uses none of them.
            unsafe {
                libc::close(sync_fd);
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
            reap(child, &all)
        }
        Err(e) => {
            eprintln!("vmctl-init: fork: {e}");
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(126) }
        }
    }
}

fn reap(child: Pid, set: &SigSet) -> ! {
    loop {
        let sig = set.wait().unwrap_or(Signal::SIGCHLD);
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => exit_after_reaping(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => {
                    exit_after_reaping(128 + s as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

fn exit_after_reaping(code: i32) -> ! {
    while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(code) }
}
