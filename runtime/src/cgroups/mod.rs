//! Control groups behind one interface: v1 (one hierarchy per controller, as on hybrid hosts)
//! and v2 (the unified hierarchy, as in the guest VM). The layout is detected at run time from
//! /proc/self/mountinfo.

mod v1;
mod v2;

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// cgroup v1: each entry is a hierarchy's mount point and the controllers bound to it.
    V1 {
        hierarchies: Vec<(PathBuf, Vec<String>)>,
    },
    /// cgroup v2: the unified hierarchy's mount point.
    V2 { root: PathBuf },
}

/// Resource usage of a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// The memory limit, bytes (`None`: unlimited).
    pub memory_limit: Option<u64>,
    /// How many times the OOM killer killed a process of this cgroup.
    pub oom_kills: u64,
    /// Processes (tasks) in the cgroup.
    pub pids_current: u64,
    /// CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
}

impl Layout {
    /// Detects the layout of this machine: v2 when cgroup2 is mounted at /sys/fs/cgroup, v1
    /// when v1 controller hierarchies are mounted (hybrid hosts: v1 wins, it has the
    /// controllers), else v2 wherever cgroup2 is mounted.
    pub fn detect() -> Result<Layout> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::sys("read /proc/self/mountinfo", e))?;
        let mut v1 = Vec::new();
        let mut v2: Option<PathBuf> = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            let mut r = right.split(' ');
            let (fstype, _src, opts) = (r.next(), r.next(), r.next().unwrap_or_default());
            match fstype {
                Some("cgroup2") if v2.is_none() || mount_point == "/sys/fs/cgroup" => {
                    v2 = Some(PathBuf::from(mount_point));
                }
                Some("cgroup") => {
                    let ctrls: Vec<String> = opts
                        .split(',')
                        .filter(|o| !o.starts_with("name=") && !matches!(*o, "rw" | "ro"))
                        .filter(|o| !o.contains('=') && *o != "clone_children")
                        .filter(|o| !matches!(*o, "noprefix" | "xattr" | "cpuset_v2_mode"))
                        .map(str::to_string)
                        .collect();
                    if !ctrls.is_empty() {
                        v1.push((PathBuf::from(mount_point), ctrls));
                    }
                }
                _ => {}
            }
        }
        match v2 {
            Some(root) if root == Path::new("/sys/fs/cgroup") => Ok(Layout::V2 { root }),
            _ if !v1.is_empty() => Ok(Layout::V1 { hierarchies: v1 }),
            Some(root) => Ok(Layout::V2 { root }),
            None => Err(Error::Invalid {
                what: "cgroup layout",
                value: "none".into(),
                hint: "mount cgroup2 at /sys/fs/cgroup or the v1 controllers".into(),
            }),
        }
    }
}

impl Layout {
    /// On v1, the hierarchies a container with `res` needs: memory, pids, cpu, cpuacct,
    /// freezer (pause) and devices always, cpuset only when asked for. Joining a v1 hierarchy
    /// costs an RCU grace period (the cgroup.procs write), so fewer is faster.
    pub fn for_resources(&self, res: Option<&LinuxResources>) -> Layout {
        let Layout::V1 { hierarchies } = self else {
            return self.clone();
        };
        let cpuset = res
            .and_then(|r| r.cpu().as_ref())
            .is_some_and(|c| c.cpus().is_some() || c.mems().is_some());
        let wanted = |c: &str| {
            matches!(
                c,
                "memory" | "pids" | "cpu" | "cpuacct" | "freezer" | "devices"
            ) || (cpuset && c == "cpuset")
        };
        let hierarchies = hierarchies
            .iter()
            .filter(|(_, cs)| cs.iter().any(|c| wanted(c)))
            .cloned()
            .collect();
        Layout::V1 { hierarchies }
    }
}

/// One container's cgroup (in every v1 hierarchy, or the v2 one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    layout: Layout,
    /// Path relative to each hierarchy's root, e.g. `vmctl/abc`.
    rel: PathBuf,
}

impl Cgroup {
    /// A handle on the cgroup at `path` (relative to the hierarchy root; a leading `/` is
    /// ignored). Nothing is created yet.
    pub fn new(layout: Layout, path: &Path) -> Result<Cgroup> {
        let rel: PathBuf = path
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        if rel.as_os_str().is_empty()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(Error::Invalid {
                what: "cgroupsPath",
                value: path.display().to_string(),
                hint: "use a path below the hierarchy root such as /vmctl/ID, without `..`".into(),
            });
        }
        Ok(Cgroup { layout, rel })
    }

    /// The path relative to the hierarchy root.
    pub fn path(&self) -> &Path {
        &self.rel
    }

    /// The layout this cgroup lives in.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The directories this cgroup occupies (one per v1 hierarchy, one for v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1 { hierarchies } => {
                hierarchies.iter().map(|(m, _)| m.join(&self.rel)).collect()
            }
            Layout::V2 { root } => vec![root.join(&self.rel)],
        }
    }

    /// Creates the cgroup directories (and missing parents).
    pub fn create(&self) -> Result<()> {
        match &self.layout {
            Layout::V1 { hierarchies } => v1::create(hierarchies, &self.rel),
            Layout::V2 { root } => v2::create(root, &self.rel),
        }
    }

    /// Applies memory, cpu, pids (and on v1 devices) limits.
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        match &self.layout {
            Layout::V1 { hierarchies } => v1::apply(hierarchies, &self.rel, res),
            Layout::V2 { root } => v2::apply(&root.join(&self.rel), res),
        }
    }

    /// Moves process `pid` into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.dirs() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>> {
        let dir = self.dirs().into_iter().next().unwrap_or_default();
        let text = read(&dir.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Resource usage.
    pub fn stats(&self) -> Result<Stats> {
        match &self.layout {
            Layout::V1 { hierarchies } => v1::stats(hierarchies, &self.rel),
            Layout::V2 { root } => v2::stats(&root.join(&self.rel)),
        }
    }

    /// Freezes (`true`) or thaws (`false`) every process of the cgroup.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        match &self.layout {
            Layout::V1 { hierarchies } => v1::freeze(hierarchies, &self.rel, frozen),
            Layout::V2 { root } => v2::freeze(&root.join(&self.rel), frozen),
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        match &self.layout {
            Layout::V1 { hierarchies } => v1::is_frozen(hierarchies, &self.rel),
            Layout::V2 { root } => v2::is_frozen(&root.join(&self.rel)),
        }
    }

    /// Sends `signal` to every process of the cgroup.
    pub fn signal_all(&self, signal: i32) {
        if let Ok(pids) = self.procs() {
            for pid in pids {
                // SAFETY: kill(2) with plain integers has no memory effects.
                unsafe { libc::kill(pid, signal) };
            }
        }
    }

    /// Kills what is left in the cgroup and removes its directories. Missing directories are
    /// not an error.
    pub fn remove(&self) -> Result<()> {
        let dirs = self.dirs();
        if !dirs.iter().any(|d| d.exists()) {
            return Ok(());
        }
        if self.is_frozen() {
            let _ = self.freeze(false);
        }
        let mut last = None;
        for attempt in 0..200 {
            self.signal_all(libc::SIGKILL);
            last = None;
            for dir in &dirs {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => last = Some((dir.clone(), e)),
                }
            }
            if last.is_none() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(if attempt < 20 {
                1
            } else {
                10
            }));
        }
        let (path, source) = last.expect("set in the loop");
        Err(Error::Cgroup {
            path,
            what: "remove".into(),
            source,
        })
    }
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Cgroup {
        path: path.to_path_buf(),
        what: format!("write {value:?}"),
        source,
    })
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Cgroup {
        path: path.to_path_buf(),
        what: "read".into(),
        source,
    })
}

/// Reads a single integer file; `max` reads as `None`.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` lines).
pub(crate) fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}
