//! `vmctl run -d` for VM-backed runs: the run forks a supervisor into its own session (stdio on
//! /dev/null) which does the whole foreground flow; the workload's output goes to the record's
//! `output.log` only. The caller waits until the supervisor reports the VM launched, prints the
//! VM id and returns, as docker does. An error before the launch is the caller's error; an
//! error after it is appended to `output.log` (and the record shows the run exited).

use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::bail;
use guest::registry::Record;

/// The detached supervisor's line back to the waiting `vmctl run -d`.
pub(crate) struct Notify {
    pipe: RefCell<Option<UnixStream>>,
    log: RefCell<Option<PathBuf>>,
}

impl Notify {
    /// For foreground runs: nothing to tell.
    pub(crate) fn none() -> Notify {
        Notify {
            pipe: RefCell::new(None),
            log: RefCell::new(None),
        }
    }

    /// The VM of `rec` is launched: `vmctl run -d` prints its id and returns.
    pub(crate) fn launched(&self, rec: &Record) {
        if let Some(mut p) = self.pipe.borrow_mut().take() {
            let _ = writeln!(p, "ok {}", rec.id);
            *self.log.borrow_mut() = Some(rec.dir().join("output.log"));
        }
    }

    fn failed(&self, e: &anyhow::Error) {
        let msg = format!("vmctl: {e:#}\n");
        if let Some(mut p) = self.pipe.borrow_mut().take() {
            let _ =
                p.write_all(format!("err {}\n", msg.trim_end().replace('\n', "\u{1}")).as_bytes());
        } else if let Some(log) = self.log.borrow().as_ref() {
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
                let _ = f.write_all(msg.as_bytes());
            } else if let Some(dir) = log.parent().filter(|d| d.is_dir()) {
                let _ = std::fs::write(dir.join("output.log"), msg);
            }
        }
    }
}

/// Runs `body` in a detached supervisor; returns once it called [`Notify::launched`] (exit
/// code 0, the id printed) or failed before that (its error). Call it before any thread is
/// started (the supervisor is a fork of this process).
pub(crate) fn run(body: impl FnOnce(&Notify) -> anyhow::Result<i32>) -> anyhow::Result<i32> {
    let (mut ours, theirs) = UnixStream::pair()?;
    // SAFETY: vmctl has started no thread yet (the caller's contract); the child runs the
    // ordinary flow and ends with _exit.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(ours);
            let _ = nix::unistd::setsid();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = nix::unistd::dup2_stdin(null.as_fd());
                let _ = nix::unistd::dup2_stdout(null.as_fd());
                let _ = nix::unistd::dup2_stderr(null.as_fd());
            }
            let notify = Notify {
                pipe: RefCell::new(Some(theirs)),
                log: RefCell::new(None),
            };
            if let Err(e) = body(&notify) {
                notify.failed(&e);
            }
            // SAFETY: ends the supervisor without the parent's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(theirs);
            let mut line = String::new();
            std::io::BufReader::new(&mut ours).read_line(&mut line)?;
            let line = line.trim_end();
            if let Some(id) = line.strip_prefix("ok ") {
                println!("{id}");
                return Ok(0);
            }
            // Reap it if it is done (it is, unless it is still cleaning up).
            let _ = nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            match line.strip_prefix("err ") {
                Some(msg) => {
                    let msg = msg.replace('\u{1}', "\n");
                    bail!("{}", msg.strip_prefix("vmctl: ").unwrap_or(&msg))
                }
                None => {
                    bail!("the detached supervisor (pid {child}) ended before the VM was launched")
                }
            }
        }
    }
}
