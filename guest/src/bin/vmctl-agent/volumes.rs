//! Volumes of a container (`-v` of a VM-backed run): each is a guest block device with an
//! ext4 filesystem, mounted at `/run/vmctl/volumes/<container>/<n>` (read-only when asked)
//! and bind-mounted at its target in the container.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use guest::protocol::{ContainerSpec, Volume};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use runtime::oci_spec::runtime::Mount;

/// Where volume disks are mounted in the guest.
const VOLUMES: &str = "/run/vmctl/volumes";

fn dir_of(id: &str) -> PathBuf {
    Path::new(VOLUMES).join(id)
}

fn check(v: &Volume) -> anyhow::Result<()> {
    let dev_ok = v
        .disk
        .strip_prefix("/dev/")
        .is_some_and(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'));
    if !dev_ok {
        bail!("volume disk {:?} is not a /dev/NAME device", v.disk);
    }
    let t = Path::new(&v.target);
    if !t.is_absolute() || t.components().any(|c| c == std::path::Component::ParentDir) {
        bail!(
            "volume target {:?} must be an absolute path without '..'",
            v.target
        );
    }
    Ok(())
}

/// Mounts the volumes of `spec`; returns the container's bind mounts for them. On error the
/// volumes mounted so far are unmounted.
pub fn mount_all(spec: &ContainerSpec) -> anyhow::Result<Vec<Mount>> {
    let mut binds = Vec::new();
    for (n, v) in spec.volumes.iter().enumerate() {
        match mount_one(&spec.id, n, v) {
            Ok(m) => binds.push(m),
            Err(e) => {
                unmount_all(&spec.id);
                return Err(e);
            }
        }
    }
    Ok(binds)
}

fn mount_one(id: &str, n: usize, v: &Volume) -> anyhow::Result<Mount> {
    check(v)?;
    let at = dir_of(id).join(n.to_string());
    std::fs::create_dir_all(&at).with_context(|| format!("mkdir {}", at.display()))?;
    let (flags, data) = if v.read_only {
        // noload: no journal replay, which would write to a read-only device.
        (MsFlags::MS_RDONLY, Some("noload"))
    } else {
        (MsFlags::empty(), None)
    };
    mount(Some(v.disk.as_str()), &at, Some("ext4"), flags, data).with_context(|| {
        format!(
            "mount volume disk {} (ext4{}) for {}",
            v.disk,
            if v.read_only { ", read-only" } else { "" },
            v.target
        )
    })?;
    let mut opts = vec!["rbind", "rprivate"];
    if v.read_only {
        opts.push("ro");
    }
    Ok(serde_json::from_value(serde_json::json!({
        "destination": v.target,
        "type": "bind",
        "source": at,
        "options": opts,
    }))?)
}

/// Unmounts the volumes of container `id` (best effort; data is synced first).
pub fn unmount_all(id: &str) {
    let dir = dir_of(id);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        if let Err(err) = umount2(&e.path(), MntFlags::empty()) {
            if err != nix::errno::Errno::EINVAL {
                eprintln!("vmctl-agent: unmount {}: {err}", e.path().display());
                let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
    let _ = std::fs::remove_dir(&dir);
}
