//! Host side: records of VM-backed workloads (microvm, hosted) for `vmctl ps/stop/logs/rm`.
//! Each lives in `<root>/<id>/` (default root /run/vmctl/vms): `state.json`, the workload's
//! output `output.log`, the guest console `console.log`, and the agent socket while it runs.
//! The `vmctl run` process that owns the VM is its supervisor: stopping a VM is a signal to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default root of the records.
pub const DEFAULT_ROOT: &str = "/run/vmctl/vms";

/// A VM-backed workload.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// "microvm" or "hosted".
    pub isolation: String,
    pub image: String,
    pub command: Vec<String>,
    /// The supervising `vmctl run` process.
    pub pid: i32,
    /// The VMM process (QEMU), or the supervisor itself for the in-process VMM.
    pub vmm_pid: i32,
    /// Seconds since the epoch.
    pub created: u64,
    /// "running" or "exited".
    pub status: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The VM's place on a bridge network (`--network bridge`), released by [`remove`] when
    /// the supervisor could not (it was killed).
    #[serde(default)]
    pub network: Option<NetRecord>,
}

/// A VM's bridge attachment: enough to undo it without the supervisor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NetRecord {
    /// Bridge device.
    pub bridge: String,
    /// Its subnet, e.g. "10.88.0.0/16".
    pub subnet: String,
    /// The IPAM state directory (shared with containers).
    pub state_dir: PathBuf,
    /// The VM's TAP device.
    pub tap: String,
    /// The VM's address.
    pub ip: String,
}

impl NetRecord {
    /// Removes the TAP, the address lease and the published ports of VM `id` (idempotent).
    pub fn release(&self, id: &str) -> Result<()> {
        let err = |e: String| RegistryError::Io {
            what: format!(
                "release the network of VM {id} ({} on {})",
                self.ip, self.bridge
            ),
            err: std::io::Error::other(e),
        };
        if !Path::new("/sys/class/net").join(&self.bridge).exists() {
            // The bridge (and its IPAM state) was destroyed: only the TAP can be left.
            if Path::new("/sys/class/net").join(&self.tap).exists() {
                let st = std::process::Command::new("ip")
                    .args(["link", "del", &self.tap])
                    .status()
                    .map_err(|e| err(format!("run ip: {e}")))?;
                if !st.success() {
                    return Err(err(format!("ip link del {} failed ({st})", self.tap)));
                }
            }
            return Ok(());
        }
        let cfg = runtime::network::BridgeConfig {
            name: self.bridge.clone(),
            subnet: self.subnet.parse().map_err(|e| err(format!("{e}")))?,
            state_dir: self.state_dir.clone(),
        };
        runtime::network::disconnect(&cfg, id).map_err(|e| err(e.to_string()))
    }
}

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no VM {0:?} (see vmctl ps)")]
    NotFound(String),
    #[error("VM {0:?} is running: stop it first (vmctl stop {0}) or use vmctl rm -f")]
    Running(String),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

type Result<T> = std::result::Result<T, RegistryError>;

fn io(what: String) -> impl FnOnce(std::io::Error) -> RegistryError {
    move |err| RegistryError::Io { what, err }
}

/// The records' root: `$VMCTL_VM_ROOT`, else `$VMCTL_ROOT/vms` (next to the containers'
/// state, so one `VMCTL_ROOT` gives `vmctl ps` one private world), else [`DEFAULT_ROOT`].
pub fn root() -> PathBuf {
    if let Some(r) = std::env::var_os("VMCTL_VM_ROOT") {
        return r.into();
    }
    match std::env::var_os("VMCTL_ROOT") {
        Some(r) => PathBuf::from(r).join("vms"),
        None => DEFAULT_ROOT.into(),
    }
}

/// Whether `pid` is a live (not zombie) process whose command line mentions `needle`: guards
/// against signalling a recycled pid.
pub fn process_matches(pid: i32, needle: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    if matches!(state, None | Some('Z') | Some('X')) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline)
        .replace('\0', " ")
        .contains(needle)
}

/// When process `pid` started, seconds since the epoch (from /proc: boot time plus its start
/// in clock ticks).
fn started_at(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime) is the 20th after the command's closing parenthesis.
    let ticks: u64 = stat.rsplit_once(") ")?.1.split(' ').nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf with a constant name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as u64)
}

/// How a record's workload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its supervisor is alive.
    Running,
    /// Ended normally (exit code when the workload ran to its end).
    Exited(Option<i32>),
    /// Recorded as running, but its supervisor is gone (it was SIGKILLed).
    Dead,
}

impl Record {
    /// The record's directory.
    pub fn dir(&self) -> PathBuf {
        root().join(&self.id)
    }

    /// Creates the directory (which must not exist) and writes the record.
    pub fn create(&self) -> Result<PathBuf> {
        let dir = self.dir();
        std::fs::create_dir_all(root()).map_err(io(format!("create {}", root().display())))?;
        std::fs::create_dir(&dir).map_err(io(format!("create {}", dir.display())))?;
        self.save()?;
        Ok(dir)
    }

    /// Writes the record atomically.
    pub fn save(&self) -> Result<()> {
        let dir = self.dir();
        let tmp = dir.join(".state.json.tmp");
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join("state.json"))
            .map_err(io(format!("save state in {}", dir.display())))
    }

    /// Whether the supervisor is alive (else a "running" record is stale: it was killed). A
    /// recycled pid is told apart by its start time: the supervisor started before the record.
    pub fn alive(&self) -> bool {
        self.status == "running"
            && process_matches(self.pid, "vmctl")
            && started_at(self.pid).is_none_or(|t| t <= self.created + 1)
    }

    /// Running, exited or dead.
    pub fn state(&self) -> State {
        if self.alive() {
            State::Running
        } else if self.status == "running" {
            State::Dead
        } else {
            State::Exited(self.exit_code)
        }
    }

    /// When the record was last written (its end, for an exited one), seconds since the epoch.
    pub fn updated(&self) -> Option<u64> {
        let m = std::fs::metadata(self.dir().join("state.json")).ok()?;
        m.modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }

    /// Cleans what a dead supervisor left: its VMM (only if that pid still is this VM's VMM,
    /// whose command line names the record's directory) and the sockets.
    pub fn reap(&self) {
        let dir = self.dir();
        if process_matches(self.vmm_pid, &dir.display().to_string()) {
            // SAFETY: kill(2) with integers; the pid was checked to be this VM's VMM.
            unsafe { libc::kill(self.vmm_pid, libc::SIGKILL) };
            let end = std::time::Instant::now() + Duration::from_secs(5);
            while process_matches(self.vmm_pid, &dir.display().to_string())
                && std::time::Instant::now() < end
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n == "agent.sock" || n == "api.sock" || n.starts_with("vsock.sock") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Every record, oldest first.
pub fn list() -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(root()) else {
        return Vec::new();
    };
    let mut v: Vec<Record> = entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    v.sort_by(|a: &Record, b: &Record| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    v
}

/// The record whose id, id prefix (unique) or name is `key`.
pub fn find(key: &str) -> Result<Record> {
    let all = list();
    if let Some(r) = all.iter().find(|r| r.id == key || r.name == key) {
        return Ok(r.clone());
    }
    let mut m = all.into_iter().filter(|r| r.id.starts_with(key));
    match (m.next(), m.next()) {
        (Some(r), None) if !key.is_empty() => Ok(r),
        _ => Err(RegistryError::NotFound(key.into())),
    }
}

/// Stops a running VM like `docker stop`: SIGTERM to the workload (its supervisor forwards
/// it through the agent), SIGKILL to the workload after `grace`, then the supervisor itself if
/// it has not torn the VM down 15 s later; a leftover VMM is killed. Waits until it is all
/// gone. The record stays (exited) unless the run had `--rm`.
pub fn stop(key: &str, grace: Duration) -> Result<()> {
    let r = find(key)?;
    let was_alive = r.alive();
    if was_alive {
        let signal = |s: i32| {
            // SAFETY: kill(2) with integers; `alive` checked the pid is a vmctl process.
            unsafe { libc::kill(r.pid, s) };
        };
        signal(libc::SIGTERM);
        let gone = |d: Duration| {
            let end = std::time::Instant::now() + d;
            loop {
                if !process_matches(r.pid, "vmctl") {
                    return true;
                }
                if std::time::Instant::now() >= end {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        if !gone(grace) {
            signal(crate::session::kill_signal());
            if !gone(Duration::from_secs(15)) {
                signal(libc::SIGKILL);
                gone(Duration::from_secs(5));
            }
        }
    }
    // The supervisor may have removed the record (--rm); one killed here left it "running":
    // it ended as killed.
    if let Ok(mut r) = find(&r.id) {
        if r.state() != State::Running {
            r.reap();
        }
        if r.state() == State::Dead && was_alive {
            r.status = "exited".into();
            r.exit_code = Some(128 + libc::SIGKILL);
            r.save()?;
        }
    }
    Ok(())
}

/// The workload's recorded output.
pub fn logs(key: &str) -> Result<Vec<u8>> {
    let r = find(key)?;
    let p = r.dir().join("output.log");
    std::fs::read(&p).map_err(io(format!("read {}", p.display())))
}

/// Removes a VM's record; a running one only with `force` (stopped first, no grace). A dead
/// supervisor's leftovers (VMM, sockets) are cleaned.
pub fn remove(key: &str, force: bool) -> Result<()> {
    let r = find(key)?;
    if r.alive() {
        if !force {
            return Err(RegistryError::Running(r.name));
        }
        stop(&r.id, Duration::from_secs(0))?;
    }
    r.reap();
    if let Some(n) = &r.network {
        n.release(&r.id)?;
    }
    let dir = r.dir();
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RegistryError::Io {
            what: format!("remove {}", dir.display()),
            err: e,
        }),
        _ => Ok(()),
    }
}

/// A fresh random id: 64 hex digits, like docker's.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        b[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
