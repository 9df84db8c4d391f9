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
}

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no VM {0:?} (see vmctl ps)")]
    NotFound(String),
    #[error("VM {0:?} is still running: stop it first (vmctl stop {0})")]
    Running(String),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

type Result<T> = std::result::Result<T, RegistryError>;

fn io(what: String) -> impl FnOnce(std::io::Error) -> RegistryError {
    move |err| RegistryError::Io { what, err }
}

/// The records' root: `$VMCTL_VM_ROOT` or [`DEFAULT_ROOT`].
pub fn root() -> PathBuf {
    std::env::var_os("VMCTL_VM_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_ROOT.into())
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

    /// Whether the supervisor is alive (else a "running" record is stale: it was killed).
    pub fn alive(&self) -> bool {
        self.status == "running" && Path::new(&format!("/proc/{}", self.pid)).exists()
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

/// Stops a running VM like `docker stop`: SIGTERM to the workload (through its supervisor),
/// SIGKILL after `grace`; waits until the supervisor has torn the VM down.
pub fn stop(key: &str, grace: Duration) -> Result<Record> {
    let r = find(key)?;
    if !r.alive() {
        return Ok(r);
    }
    let signal = |s: i32| {
        // SAFETY: kill(2) with integers.
        unsafe { libc::kill(r.pid, s) };
    };
    signal(libc::SIGTERM);
    let gone = |d: Duration| {
        let end = std::time::Instant::now() + d;
        while std::time::Instant::now() < end {
            if !Path::new(&format!("/proc/{}", r.pid)).exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    if !gone(grace) {
        signal(crate::session::kill_signal());
        if !gone(Duration::from_secs(15)) {
            signal(libc::SIGKILL);
            gone(Duration::from_secs(5));
        }
    }
    find(&r.id)
}

/// The workload's recorded output.
pub fn logs(key: &str) -> Result<Vec<u8>> {
    let r = find(key)?;
    let p = r.dir().join("output.log");
    std::fs::read(&p).map_err(io(format!("read {}", p.display())))
}

/// Removes a stopped VM's record (with `force`, stops it first).
pub fn remove(key: &str, force: bool) -> Result<()> {
    let mut r = find(key)?;
    if r.alive() {
        if !force {
            return Err(RegistryError::Running(r.id));
        }
        r = stop(&r.id, Duration::from_secs(0))?;
    }
    let dir = r.dir();
    std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))
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
