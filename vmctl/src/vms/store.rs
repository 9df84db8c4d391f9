//! Where detached VMs live: one directory per VM under the VM root (`/run/vmctl/vms`, or
//! `$VMCTL_VM_ROOT`) holding `vm.json` (id, name, pid, creation time), `config.json` (the
//! configuration sent to the VMM), `api.sock`, `console.log`, `vmm.pid` and `metrics.json`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Default VM root.
pub const DEFAULT_ROOT: &str = "/run/vmctl/vms";

/// The record of one VM.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmRecord {
    pub id: String,
    pub name: String,
    /// Pid of its `vmctl-vmm` process.
    pub pid: i32,
    /// Seconds since the Unix epoch when it was created.
    pub created: u64,
}

/// The VM root directory.
pub fn root() -> PathBuf {
    std::env::var_os("VMCTL_VM_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// One VM's directory.
#[derive(Clone, Debug)]
pub struct VmDir(pub PathBuf);

impl VmDir {
    pub fn sock(&self) -> PathBuf {
        self.0.join("api.sock")
    }
    pub fn console(&self) -> PathBuf {
        self.0.join("console.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.0.join("vmm.pid")
    }
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.json")
    }
    fn record_path(&self) -> PathBuf {
        self.0.join("vm.json")
    }

    pub fn read(&self) -> anyhow::Result<VmRecord> {
        let p = self.record_path();
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", p.display()))
    }

    pub fn write(&self, rec: &VmRecord) -> anyhow::Result<()> {
        let p = self.record_path();
        let tmp = self.0.join("vm.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(rec)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
        std::fs::write(self.pid_file(), format!("{}\n", rec.pid))
            .with_context(|| format!("writing {}", self.pid_file().display()))
    }

    /// Whether this VM's VMM process is alive: the pid exists, is not a zombie, and is the
    /// `vmctl-vmm` serving this directory's socket (so a reused pid does not count).
    pub fn alive(&self, pid: i32) -> bool {
        if pid <= 0 {
            return false;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        if matches!(state, None | Some("Z") | Some("X")) {
            return false;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let sock = self.sock();
        cmdline
            .split(|b| *b == 0)
            .any(|arg| Path::new(OsStr::from_bytes(arg)) == sock)
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new random id: 12 hex digits.
pub fn new_id() -> anyhow::Result<String> {
    let mut b = [0u8; 6];
    let f = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut &f, &mut b).context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Every VM with a readable record, oldest first.
pub fn list() -> anyhow::Result<Vec<(VmDir, VmRecord)>> {
    let root = root();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let dir = VmDir(e.path());
        if let Ok(rec) = dir.read() {
            out.push((dir, rec));
        }
    }
    out.sort_by(|a, b| (a.1.created, &a.1.id).cmp(&(b.1.created, &b.1.id)));
    Ok(out)
}

/// Finds a VM by id, name or unique id prefix.
pub fn find(key: &str) -> anyhow::Result<(VmDir, VmRecord)> {
    let all = list()?;
    if let Some(hit) = all.iter().find(|(_, r)| r.id == key || r.name == key) {
        return Ok(hit.clone());
    }
    let prefixed: Vec<_> = all.iter().filter(|(_, r)| r.id.starts_with(key)).collect();
    match prefixed.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no VM with id or name {key:?}; `vmctl vm ps` lists the VMs"),
        _ => bail!("{key:?} matches several VM ids; give more of the id or the name"),
    }
}

/// Checks that `name` is well formed and not taken.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("--name {name:?}: use 1 to 64 letters, digits, '_', '.' or '-'");
    }
    if let Some((_, r)) = list()?.iter().find(|(_, r)| r.name == name) {
        bail!(
            "--name {name:?} is already used by VM {}; pick another name or `vmctl vm rm {name}`",
            r.id
        );
    }
    Ok(())
}
