//! cgroup v2: one directory in the unified hierarchy; controllers enabled top-down.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::{read, read_key, read_u64, write, Stats};
use crate::error::{Error, Result};

const CONTROLLERS: [&str; 5] = ["cpu", "cpuset", "memory", "pids", "io"];

pub(super) fn create(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        // Enable the controllers this level offers for its children.
        let offered = std::fs::read_to_string(cur.join("cgroup.controllers")).unwrap_or_default();
        let enabled =
            std::fs::read_to_string(cur.join("cgroup.subtree_control")).unwrap_or_default();
        for c in CONTROLLERS {
            let has = |list: &str| list.split_whitespace().any(|x| x == c);
            if has(&offered) && !has(&enabled) {
                if let Err(e) = write(&cur.join("cgroup.subtree_control"), &format!("+{c}")) {
                    tracing::debug!("cannot enable {c}: {e}");
                }
            }
        }
        cur.push(comp);
        match std::fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(Error::Cgroup {
                    path: cur,
                    what: "create".into(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Writes a controller file, naming the controller when it is not enabled here.
fn set(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        let ctrl = file.split('.').next().unwrap_or(file);
        return Err(Error::Invalid {
            what: "cgroup v2 controller",
            value: ctrl.into(),
            hint: format!(
                "{} lacks {file}: enable `{ctrl}` in the parent's cgroup.subtree_control",
                dir.display()
            ),
        });
    }
    write(&path, value)
}

/// cpu.shares (v1, 2..262144) to cpu.weight (v2, 1..10000), as the OCI runtimes convert it.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262144) - 2) * 9999) / 262142
}

pub(super) fn apply(dir: &Path, res: &LinuxResources) -> Result<()> {
    let max = |v: i64| {
        if v < 0 {
            "max".to_string()
        } else {
            v.to_string()
        }
    };
    if let Some(mem) = res.memory() {
        if let Some(limit) = mem.limit() {
            set(dir, "memory.max", &max(limit))?;
            // OCI's swap is memory+swap (the v1 meaning); v2 limits swap alone.
            if let Some(swap) = mem.swap() {
                let only_swap = if swap < 0 || limit < 0 {
                    -1
                } else {
                    (swap - limit).max(0)
                };
                if dir.join("memory.swap.max").exists() {
                    set(dir, "memory.swap.max", &max(only_swap))?;
                } else {
                    tracing::debug!("no swap accounting in this kernel; memory.swap ignored");
                }
            }
        }
        if let Some(r) = mem.reservation() {
            set(dir, "memory.low", &max(r))?;
        }
    }
    if let Some(cpu) = res.cpu() {
        if let Some(shares) = cpu.shares() {
            set(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let period = cpu.period().unwrap_or(100_000);
            let quota = cpu.quota().filter(|q| *q > 0).map(|q| q.to_string());
            set(
                dir,
                "cpu.max",
                &format!("{} {period}", quota.as_deref().unwrap_or("max")),
            )?;
        }
        if let Some(cpus) = cpu.cpus() {
            set(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = cpu.mems() {
            set(dir, "cpuset.mems", mems)?;
        }
    }
    if let Some(pids) = res.pids() {
        set(
            dir,
            "pids.max",
            &max(if pids.limit() > 0 { pids.limit() } else { -1 }),
        )?;
    }
    if res.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        tracing::debug!(
            "cgroup v2 device rules need eBPF; not applied (nodes are still limited to /dev's)"
        );
    }
    Ok(())
}

pub(super) fn stats(dir: &Path) -> Result<Stats> {
    Ok(Stats {
        memory_usage: read_u64(&dir.join("memory.current")).unwrap_or(0),
        memory_limit: read_u64(&dir.join("memory.max")),
        oom_kills: read_key(&dir.join("memory.events"), "oom_kill").unwrap_or(0),
        pids_current: read_u64(&dir.join("pids.current")).unwrap_or_else(|| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .map(|s| s.lines().count() as u64)
                .unwrap_or(0)
        }),
        cpu_usage_ns: read_key(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
    })
}

pub(super) fn freeze(dir: &Path, frozen: bool) -> Result<()> {
    write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    for _ in 0..1000 {
        if read_key(&dir.join("cgroup.events"), "frozen") == Some(u64::from(frozen)) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = read(&dir.join("cgroup.events"))?;
    Err(Error::Cgroup {
        path: dir.to_path_buf(),
        what: "freeze".into(),
        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
    })
}

pub(super) fn is_frozen(dir: &Path) -> bool {
    read_key(&dir.join("cgroup.events"), "frozen") == Some(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shares_convert_like_other_runtimes() {
        assert_eq!(super::shares_to_weight(2), 1);
        assert_eq!(super::shares_to_weight(1024), 39);
        assert_eq!(super::shares_to_weight(262144), 10000);
        assert_eq!(super::shares_to_weight(0), 100);
    }
}
