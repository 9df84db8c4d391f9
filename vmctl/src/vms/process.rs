//! The detached `vmctl-vmm` process of a VM: finding the binary, starting it in its own
//! session with the console in a file, and stopping it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::store::VmDir;

/// How long `vmctl vm create` waits for the VMM's API socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// The `vmctl-vmm` binary: `$VMCTL_VMM`, else next to this executable, else on `$PATH`.
pub fn vmm_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("VMCTL_VMM") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "VMCTL_VMM={}: no such file; point it at a built vmctl-vmm \
                 (cargo build -p vmm --bin vmctl-vmm) or unset it",
                p.display()
            );
        }
        return Ok(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("vmctl-vmm")));
    if let Some(p) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("vmctl-vmm"))
            .find(|p| p.is_file())
    });
    on_path.with_context(|| {
        format!(
            "vmctl-vmm not found (looked next to vmctl{} and on $PATH); build it with \
             `cargo build -p vmm --bin vmctl-vmm` or set VMCTL_VMM",
            beside
                .map(|b| format!(" at {}", b.display()))
                .unwrap_or_default()
        )
    })
}

/// Starts `vmctl-vmm --api-sock DIR/api.sock --id ID` in a new session, stdin from /dev/null,
/// stdout and stderr appended to DIR/console.log, and waits until its socket answers.
pub fn spawn(vmm: &Path, dir: &VmDir, id: &str) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.console())
        .with_context(|| format!("creating {}", dir.console().display()))?;
    let mut cmd = Command::new(vmm);
    cmd.arg("--api-sock")
        .arg(dir.sock())
        .args(["--id", id])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", vmm.display()))?;
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        if std::os::unix::net::UnixStream::connect(dir.sock()).is_ok() {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.console()).unwrap_or_default();
            bail!(
                "{} exited ({status}) before serving its API: {}",
                vmm.display(),
                log.trim()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not open its API socket {} within {} s",
                vmm.display(),
                dir.sock().display(),
                SOCKET_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we checked belongs to this VM's VMM; no memory involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Waits until the VMM is gone or `limit` passed; true when it is gone.
fn wait_gone(dir: &VmDir, pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while dir.alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// SIGTERM, wait up to `grace`, then SIGKILL and wait for the process to go.
pub fn stop(dir: &VmDir, pid: i32, grace: Duration) -> anyhow::Result<()> {
    if !dir.alive(pid) {
        return Ok(());
    }
    kill(pid, libc::SIGTERM);
    if wait_gone(dir, pid, grace) {
        return Ok(());
    }
    tracing::warn!(
        "VMM pid {pid} still runs {} s after SIGTERM: SIGKILL",
        grace.as_secs()
    );
    kill(pid, libc::SIGKILL);
    if !wait_gone(dir, pid, Duration::from_secs(5)) {
        bail!("VMM pid {pid} survived SIGKILL");
    }
    Ok(())
}
