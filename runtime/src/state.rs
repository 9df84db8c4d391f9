//! Container state on disk: `<root>/<id>/state.json`, written atomically; the status is
//! derived from the live process (OCI: creating, created, running, paused, stopped).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use crate::rootfs::Overlay;

/// OCI container status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_string(self).unwrap_or_default();
        f.pad(s.trim_matches('"'))
    }
}

/// What the runtime remembers about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub bundle: PathBuf,
    /// Host pid of the container process (0 while creating).
    pub pid: i32,
    /// Its start time (/proc/PID/stat field 22), to detect pid reuse.
    pub pid_start: u64,
    /// Whether start has been called.
    pub started: bool,
    /// Unix time of creation.
    pub created: u64,
    pub cgroup: Option<Cgroup>,
    pub overlay: Option<Overlay>,
    /// Directories owned by the container, removed on delete (overlay upper/work, rootfs).
    pub owned_dirs: Vec<PathBuf>,
    pub annotations: std::collections::HashMap<String, String>,
    /// Whether the spec has hooks (so start and delete need not read it otherwise).
    #[serde(default)]
    pub hooks: bool,
}

/// The directory of container `id` under `root`, refusing ids that are not plain names.
pub(crate) fn dir(root: &Path, id: &str) -> Result<PathBuf> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        && id != "."
        && id != "..";
    if !ok {
        return Err(Error::Invalid {
            what: "container id",
            value: id.into(),
            hint: "use letters, digits, '-', '_', '.' and '+' only".into(),
        });
    }
    Ok(root.join(id))
}

impl State {
    pub(crate) fn path(root: &Path, id: &str) -> Result<PathBuf> {
        Ok(dir(root, id)?.join("state.json"))
    }

    /// Loads the state of `id`.
    pub fn load(root: &Path, id: &str) -> Result<State> {
        let p = State::path(root, id)?;
        let text = std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                id: id.into(),
                root: root.into(),
            },
            _ => Error::sys(format!("read {}", p.display()), e),
        })?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::sys(format!("parse {}", p.display()), std::io::Error::other(e)))
    }

    /// Writes the state atomically (temp file + rename).
    pub fn save(&self, root: &Path) -> Result<()> {
        let p = State::path(root, &self.id)?;
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_vec(self)
            .map_err(|e| Error::sys("serialize state", std::io::Error::other(e)))?;
        std::fs::write(&tmp, text).ctx(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).ctx(|| format!("rename {}", p.display()))
    }

    /// Whether the container process still exists (not a zombie, not a reused pid).
    pub fn alive(&self) -> bool {
        self.pid > 0
            && proc_start(self.pid)
                .is_some_and(|(start, state)| start == self.pid_start && state != 'Z')
    }

    /// The current status.
    pub fn status(&self) -> Status {
        if self.pid == 0 {
            Status::Creating
        } else if !self.alive() {
            Status::Stopped
        } else if !self.started {
            Status::Created
        } else if self.cgroup.as_ref().is_some_and(|c| c.is_frozen()) {
            Status::Paused
        } else {
            Status::Running
        }
    }
}

/// (start time, state letter) of a process from /proc/PID/stat.
pub(crate) fn proc_start(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parens: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    Some((fields.get(19)?.parse().ok()?, state))
}
