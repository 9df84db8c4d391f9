//! cgroup v1: one directory per hierarchy; limits go to the hierarchy of their controller.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{read, read_key, read_u64, write, Stats};
use crate::error::{Error, Result};

type Hierarchies = [(PathBuf, Vec<String>)];

/// The directory of `rel` in the hierarchy that holds `controller`.
fn dir(h: &Hierarchies, rel: &Path, controller: &str) -> Option<PathBuf> {
    h.iter()
        .find(|(_, c)| c.iter().any(|x| x == controller))
        .map(|(m, _)| m.join(rel))
}

fn need(h: &Hierarchies, rel: &Path, controller: &str) -> Result<PathBuf> {
    dir(h, rel, controller).ok_or_else(|| Error::Invalid {
        what: "cgroup v1 controller",
        value: controller.into(),
        hint: format!("mount the {controller} hierarchy under /sys/fs/cgroup or drop that limit"),
    })
}

pub(super) fn create(h: &Hierarchies, rel: &Path) -> Result<()> {
    for (mount, ctrls) in h {
        let mut cur = mount.clone();
        for comp in rel.components() {
            let parent = cur.clone();
            cur.push(comp);
            match std::fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::Cgroup {
                        path: cur,
                        what: "create".into(),
                        source,
                    })
                }
            }
            // A new cpuset cgroup starts with no CPUs and memory nodes: inherit the parent's.
            if ctrls.iter().any(|c| c == "cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = read(&parent.join(f))?;
                    write(&cur.join(f), v.trim())?;
                }
            }
        }
    }
    Ok(())
}

pub(super) fn apply(h: &Hierarchies, rel: &Path, res: &LinuxResources) -> Result<()> {
    if let Some(mem) = res.memory() {
        let d = need(h, rel, "memory")?;
        if let Some(limit) = mem.limit() {
            write(&d.join("memory.limit_in_bytes"), &limit.to_string())?;
        }
        if let Some(swap) = mem.swap() {
            let f = d.join("memory.memsw.limit_in_bytes");
            if f.exists() {
                write(&f, &swap.to_string())?;
            } else {
                tracing::warn!("swap accounting is off on this host; memory.swap ignored");
            }
        }
        if let Some(r) = mem.reservation() {
            write(&d.join("memory.soft_limit_in_bytes"), &r.to_string())?;
        }
        if let Some(s) = mem.swappiness() {
            write(&d.join("memory.swappiness"), &s.to_string())?;
        }
    }
    if let Some(cpu) = res.cpu() {
        let d = need(h, rel, "cpu")?;
        if let Some(shares) = cpu.shares() {
            write(&d.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(period) = cpu.period() {
            write(&d.join("cpu.cfs_period_us"), &period.to_string())?;
        }
        if let Some(quota) = cpu.quota() {
            write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let Some(cpus) = cpu.cpus() {
            write(&need(h, rel, "cpuset")?.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = cpu.mems() {
            write(&need(h, rel, "cpuset")?.join("cpuset.mems"), mems)?;
        }
    }
    if let Some(pids) = res.pids() {
        let v = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".into()
        };
        write(&need(h, rel, "pids")?.join("pids.max"), &v)?;
    }
    if let (Some(rules), Some(d)) = (res.devices(), dir(h, rel, "devices")) {
        for r in rules {
            let typ = r
                .typ()
                .map(|t| t.as_str().to_string())
                .unwrap_or_else(|| "a".into());
            let major = r
                .major()
                .map(|m| m.to_string())
                .unwrap_or_else(|| "*".into());
            let minor = r
                .minor()
                .map(|m| m.to_string())
                .unwrap_or_else(|| "*".into());
            let access = r.access().clone().unwrap_or_else(|| "rwm".into());
            let rule = if typ == "a" {
                "a".to_string()
            } else {
                format!("{typ} {major}:{minor} {access}")
            };
            let file = if r.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(&d.join(file), &rule)?;
        }
        // The nodes every container gets (see rootfs::DEFAULT_DEVICES), as runc allows them.
        for rule in [
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
            "c 10:200 rwm",
        ] {
            write(&d.join("devices.allow"), rule)?;
        }
    }
    Ok(())
}

pub(super) fn stats(h: &Hierarchies, rel: &Path) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some(d) = dir(h, rel, "memory") {
        s.memory_usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
        s.memory_limit = read_u64(&d.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
        s.oom_kills = read_key(&d.join("memory.oom_control"), "oom_kill").unwrap_or(0);
    }
    if let Some(d) = dir(h, rel, "pids") {
        s.pids_current = read_u64(&d.join("pids.current")).unwrap_or(0);
    }
    if let Some(d) = dir(h, rel, "cpuacct") {
        s.cpu_usage_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
    }
    Ok(s)
}

pub(super) fn freeze(h: &Hierarchies, rel: &Path, frozen: bool) -> Result<()> {
    let d = need(h, rel, "freezer")?;
    write(
        &d.join("freezer.state"),
        if frozen { "FROZEN" } else { "THAWED" },
    )?;
    for _ in 0..1000 {
        let state = read(&d.join("freezer.state"))?;
        if (state.trim() == "FROZEN") == frozen {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(Error::Cgroup {
        path: d,
        what: "freeze".into(),
        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
    })
}

pub(super) fn is_frozen(h: &Hierarchies, rel: &Path) -> bool {
    dir(h, rel, "freezer")
        .and_then(|d| std::fs::read_to_string(d.join("freezer.state")).ok())
        .is_some_and(|s| s.trim() == "FROZEN")
}
