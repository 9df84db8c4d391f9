//! The container's root filesystem, set up inside its own mount namespace: private
//! propagation, the rootfs (a bind of `root.path`, or overlayfs over image layers), the spec's
//! mounts, a minimal /dev, pivot_root, then masked and read-only paths.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceType, Spec};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::mounts::{locked_flags, mount_one, propagation, secure_join};

/// An overlayfs root: read-only image layers (bottom first) under a per-container upper dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    /// Layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// Where the container's writes go.
    pub upper: PathBuf,
    /// overlayfs' work directory (same filesystem as `upper`).
    pub work: PathBuf,
}

impl Overlay {
    /// The mount data string (overlayfs wants the top layer first).
    pub(crate) fn data(&self) -> Result<String> {
        let mut lower = Vec::new();
        for l in self.layers.iter().rev() {
            let s = l
                .to_str()
                .filter(|s| !s.contains([',', ':']))
                .ok_or_else(|| Error::Invalid {
                    what: "image layer path",
                    value: l.display().to_string(),
                    hint: "layer paths must be UTF-8 without ',' or ':'".into(),
                })?;
            lower.push(s.to_string());
        }
        if lower.is_empty() {
            return Err(Error::Invalid {
                what: "image",
                value: "no layers".into(),
                hint: "give at least one layer".into(),
            });
        }
        Ok(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.upper.display(),
            self.work.display()
        ))
    }
}

/// Device nodes every container gets: (path, major, minor).
pub(crate) const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Everything the rootfs setup needs, decided by the runtime before fork.
pub(crate) struct RootfsPlan<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub overlay: Option<&'a Overlay>,
    /// In a new user namespace: device nodes are bind-mounted from the host, not mknod'ed.
    pub userns: bool,
    pub cgroup2: bool,
}

/// Runs in the container process (new mount namespace), before pivot_root.
pub(crate) fn prepare(p: &RootfsPlan<'_>) -> Result<()> {
    let linux = p.spec.linux().as_ref();
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .map(propagation);
    // Nothing mounted from here on may reach the host.
    let root_prop = prop
        .filter(|f| !f.contains(MsFlags::MS_SHARED))
        .unwrap_or(MsFlags::MS_REC | MsFlags::MS_PRIVATE);
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        root_prop | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "make / private".into())?;
    match p.overlay {
        Some(o) => {
            let data = o.data()?;
            mount(
                Some("overlay"),
                p.rootfs,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .ctx(|| format!("mount overlay ({data}) on {}", p.rootfs.display()))?;
        }
        None => mount(
            Some(p.rootfs),
            p.rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| format!("bind rootfs {}", p.rootfs.display()))?,
    }
    for m in p.spec.mounts().iter().flatten() {
        mount_one(p.rootfs, m, p.cgroup2)?;
    }
    devices(p)?;
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        for (k, v) in sysctl {
            let f = p.rootfs.join("proc/sys").join(k.replace('.', "/"));
            std::fs::write(&f, v).ctx(|| format!("sysctl {k}={v}"))?;
        }
    }
    pivot(p.rootfs)?;
    if let Some(l) = linux {
        for path in l.masked_paths().iter().flatten() {
            mask(Path::new(path))?;
        }
        for path in l.readonly_paths().iter().flatten() {
            readonly(Path::new(path))?;
        }
    }
    if prop.is_some_and(|f| f.contains(MsFlags::MS_SHARED)) {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SHARED,
            None::<&str>,
        )
        .ctx(|| "make / shared".into())?;
    }
    if p.spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | locked_flags(Path::new("/"));
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .ctx(|| "remount / read-only".into())?;
    }
    Ok(())
}

/// Minimal /dev: the default nodes and the spec's devices, plus the usual symlinks.
fn devices(p: &RootfsPlan<'_>) -> Result<()> {
    let dev = secure_join(p.rootfs, Path::new("/dev"));
    std::fs::create_dir_all(&dev).ctx(|| "mkdir /dev".into())?;
    let mut nodes: Vec<(PathBuf, SFlag, u64, u64, u32)> = DEFAULT_DEVICES
        .iter()
        .map(|(n, ma, mi)| {
            (
                PathBuf::from("/dev").join(n),
                SFlag::S_IFCHR,
                *ma,
                *mi,
                0o666,
            )
        })
        .collect();
    for d in p
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = d.file_mode().unwrap_or(0o666);
        nodes.push((
            d.path().clone(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            mode,
        ));
    }
    for (path, kind, major, minor, mode) in nodes {
        let target = secure_join(p.rootfs, &path);
        if target.exists() {
            continue;
        }
        if p.userns {
            // mknod is not allowed in a user namespace: bind the host's node.
            crate::mounts::make_target(&target, true)?;
            mount(
                Some(&path),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| format!("bind device {}", path.display()))?;
        } else {
            mknod(
                &target,
                kind,
                Mode::from_bits_truncate(mode),
                makedev(major, minor),
            )
            .ctx(|| format!("mknod {}", path.display()))?;
            // mknod honours the umask; set the mode we were asked for.
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                &target,
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .ctx(|| format!("chmod {}", path.display()))?;
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        let l = dev.join(link);
        if std::fs::symlink_metadata(&l).is_err() {
            symlink(target, &l).ctx(|| format!("symlink /dev/{link}"))?;
        }
    }
    Ok(())
}

/// pivot_root(".", ".") then detach the old root: no temporary directory needed.
fn pivot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".").ctx(|| format!("pivot_root into {}", rootfs.display()))?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detach the old root".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
    Ok(())
}

/// Hides `path`: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let r = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.ctx(|| format!("mask {}", path.display()))
}

/// Makes `path` read-only with a bind remount.
fn readonly(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind {}", path.display()))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(path);
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .ctx(|| format!("make {} read-only", path.display()))
}
