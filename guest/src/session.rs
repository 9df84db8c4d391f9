//! Host side: one workload in a guest, driven like `docker run` in the foreground. Output goes
//! to our stdout/stderr (and a log file), stdin is forwarded with `-i`, signals sent to vmctl
//! are forwarded to the workload, and the workload's exit code is returned.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::client::{Client, ClientError, Event, Handle};
use crate::protocol::ContainerSpec;

/// The real-time signal `vmctl stop` sends after its grace period: SIGKILL the workload.
pub fn kill_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// Signals vmctl forwards to the workload.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// What a signal to vmctl acts on.
enum Target {
    /// The VM is booting: end its VMM process (the boot then fails as interrupted).
    Booting { vmm_pid: i32 },
    /// Forward to the workload; with `tty`, SIGWINCH becomes a resize of its terminal.
    Running {
        handle: Handle,
        id: String,
        tty: bool,
    },
}

/// Our terminal's size (rows, cols), when stdin or stdout is one.
pub fn window_size() -> Option<(u16, u16)> {
    for fd in [0, 1] {
        // SAFETY: winsize is plain data; TIOCGWINSZ writes it, with a pointer that is valid
        // for the call.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Signal handling for a VM-backed run. Create it first thing in `main`'s flow, before any
/// thread is started, so every thread has the signals blocked and only ours takes them.
pub struct Signals {
    target: Arc<Mutex<Option<Target>>>,
    interrupted: Arc<std::sync::atomic::AtomicBool>,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before any use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigemptyset/sigaddset/pthread_sigmask on our own initialised set.
        unsafe {
            libc::sigemptyset(&mut set);
            for s in FORWARDED {
                libc::sigaddset(&mut set, s as libc::c_int);
            }
            libc::sigaddset(&mut set, kill_signal());
            libc::sigaddset(&mut set, libc::SIGWINCH);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
        }
        let target: Arc<Mutex<Option<Target>>> = Arc::new(Mutex::new(None));
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, i) = (target.clone(), interrupted.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: sigwait with an initialised set and a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let guard = t.lock().unwrap_or_else(|e| e.into_inner());
                match guard.as_ref() {
                    Some(Target::Running { handle, id, tty }) if sig == libc::SIGWINCH => {
                        if let (true, Some((rows, cols))) = (*tty, window_size()) {
                            let _ = handle.resize(id, rows, cols);
                        }
                    }
                    _ if sig == libc::SIGWINCH => {}
                    Some(Target::Running { handle, id, .. }) => {
                        let s = if sig == kill_signal() {
                            libc::SIGKILL
                        } else {
                            sig
                        };
                        let _ = handle.signal(id, s);
                    }
                    Some(Target::Booting { vmm_pid }) => {
                        i.store(true, std::sync::atomic::Ordering::SeqCst);
                        // SAFETY: kill(2) with integers; the VMM is our child.
                        unsafe { libc::kill(*vmm_pid, libc::SIGKILL) };
                    }
                    None => i.store(true, std::sync::atomic::Ordering::SeqCst),
                }
            })?;
        Ok(Signals {
            target,
            interrupted,
        })
    }

    /// From now on a signal ends the booting VM's VMM process `pid`.
    pub fn booting(&self, vmm_pid: i32) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(Target::Booting { vmm_pid });
    }

    /// Whether a signal arrived before the workload ran.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn running(&self, handle: Handle, id: &str, tty: bool) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(Target::Running {
            handle,
            id: id.into(),
            tty,
        });
    }
}

/// Timeouts of the requests of a run.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub create: Duration,
    pub start: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            create: Duration::from_secs(120),
            start: Duration::from_secs(60),
        }
    }
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the guest went away before the workload exited{0}")]
    Lost(String),
    #[error("write the workload's output: {0}")]
    Output(std::io::Error),
    #[error("the guest agent ({0}) cannot give the workload a terminal (-t): rebuild the agent initramfs (scripts/build-guest-image.sh)")]
    NoTty(String),
}

/// Creates and starts `spec` in the guest, streams it, returns its exit code. With
/// `spec.stdin`, our stdin is forwarded until EOF. Output is also appended to `log`. With
/// `spec.tty` the workload has a pty (its output is one stream, with the pty's `\r\n`) whose
/// size follows ours (SIGWINCH); putting our terminal in raw mode is the caller's part.
pub fn run(
    client: &Client,
    spec: ContainerSpec,
    signals: &Signals,
    log: Option<&Path>,
    t: Timeouts,
) -> Result<i32, SessionError> {
    let events = client.take_events().ok_or(ClientError::Closed)?;
    let id = spec.id.clone();
    let (stdin, tty) = (spec.stdin, spec.tty);
    if tty && !client.supports(crate::protocol::FEATURE_TTY) {
        return Err(SessionError::NoTty(client.agent().to_string()));
    }
    client.create(spec, t.create)?;
    if let (true, Some((rows, cols))) = (tty, window_size()) {
        client.sender().resize(&id, rows, cols)?;
    }
    signals.running(client.sender(), &id, tty);
    client.start(&id, t.start)?;
    if stdin {
        let (h, id) = (client.sender(), id.clone());
        std::thread::spawn(move || forward_stdin(h, &id));
    }
    let mut log = log.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    for ev in events {
        match ev {
            Event::Stdout { id: i, data } if i == id => {
                out.write_all(&data)
                    .and_then(|_| out.flush())
                    .map_err(SessionError::Output)?;
                if let Some(l) = log.as_mut() {
                    let _ = l.write_all(&data);
                }
            }
            Event::Stderr { id: i, data } if i == id => {
                err.write_all(&data).map_err(SessionError::Output)?;
                if let Some(l) = log.as_mut() {
                    let _ = l.write_all(&data);
                }
            }
            Event::Exit { id: i, code } if i == id => return Ok(code),
            Event::Closed(why) => {
                return Err(SessionError::Lost(
                    why.map(|w| format!(": {w}")).unwrap_or_default(),
                ))
            }
            _ => {}
        }
    }
    Err(SessionError::Lost(String::new()))
}

fn forward_stdin(h: Handle, id: &str) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if h.stdin(id, &buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = h.close_stdin(id);
}
