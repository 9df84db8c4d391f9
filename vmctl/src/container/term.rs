//! Foreground plumbing: signal forwarding while waiting, and the terminal proxy for -t.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::Result;

pub(super) fn block_signals() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(set)
}

/// Waits for `pid`, handing other signals to `forward` (SIGWINCH resizes `tty`); returns the
/// docker-style exit code.
pub(super) fn wait_forwarding(
    pid: i32,
    set: &nix::sys::signal::SigSet,
    tty: Option<&TermGuard>,
    forward: impl Fn(i32),
) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, code) => return Ok(code),
            WaitStatus::Signaled(_, s, _) => return Ok(128 + s as i32),
            _ => {}
        }
        match set.wait()? {
            nix::sys::signal::Signal::SIGCHLD => {}
            nix::sys::signal::Signal::SIGWINCH => {
                if let Some(t) = tty {
                    t.sync_size();
                }
            }
            s => forward(s as i32),
        }
    }
}

/// Raw mode on our stdin when it is a terminal (restored when the guard drops); a no-op
/// guard otherwise. VM-backed `-it` runs use it around their session.
pub(crate) fn raw_stdin() -> TermGuard {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(stdin.as_fd()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
    }
    TermGuard {
        saved,
        master: None,
    }
}

/// Raw mode on our terminal (restored on drop) and two copy threads between it and `master`.
pub(super) fn proxy_tty(master: OwnedFd) -> Result<TermGuard> {
    let mut guard = raw_stdin();
    guard.master = Some(master.try_clone()?);
    guard.sync_size();
    let mut m_in = std::fs::File::from(master.try_clone()?);
    let mut m_out = std::fs::File::from(master);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut m_in);
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = m_out.read(&mut buf) {
            if n == 0
                || std::io::stdout()
                    .write_all(&buf[..n])
                    .and_then(|_| std::io::stdout().flush())
                    .is_err()
            {
                break;
            }
        }
    });
    Ok(guard)
}

/// Restores our terminal's mode when dropped.
pub(crate) struct TermGuard {
    saved: Option<nix::sys::termios::Termios>,
    /// The container's pty master, whose size follows ours.
    master: Option<OwnedFd>,
}

impl TermGuard {
    /// Copies our terminal's size to the container's pty (when both exist).
    pub(super) fn sync_size(&self) {
        let Some(m) = &self.master else { return };
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a winsize that lives across both calls.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(std::io::stdin().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
