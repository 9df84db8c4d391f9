//! One OCI mount: option parsing, a symlink-safe destination inside the rootfs, and the mount
//! calls (bind + remount for bind options, propagation as a separate call).

use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;

use crate::error::{Context, Result};

/// Mount flags and the leftover data string of an OCI options list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: String,
}

pub(crate) fn parse_options(opts: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: String::new(),
    };
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                o.propagation |= propagation(p);
                continue;
            }
            data => {
                if !o.data.is_empty() {
                    o.data.push(',');
                }
                o.data.push_str(data);
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
    }
    o
}

/// A propagation name (`rprivate`, `slave`...) as flags.
pub(crate) fn propagation(name: &str) -> MsFlags {
    let rec = if name.starts_with('r') {
        MsFlags::MS_REC
    } else {
        MsFlags::empty()
    };
    rec | match name.trim_start_matches('r') {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => MsFlags::MS_PRIVATE,
    }
}

/// `path` resolved inside `root`, following symlinks as if `root` were `/`, so a symlink in
/// the image cannot point a mount at the host.
pub(crate) fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        let mut comps: Vec<Component> = p.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir => out = root.to_path_buf(),
                Component::ParentDir if out != root => {
                    out.pop();
                }
                Component::Normal(name) => {
                    let next = out.join(name);
                    match std::fs::read_link(&next) {
                        Ok(target) if hops < 40 => {
                            hops += 1;
                            let rest: PathBuf = comps.iter().rev().collect();
                            if target.is_absolute() {
                                out = root.to_path_buf();
                            }
                            pending.push(rest);
                            pending.push(target);
                            comps.clear();
                        }
                        _ => out = next,
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Creates the mount point: a file when binding a non-directory, a directory otherwise.
pub(crate) fn make_target(dest: &Path, source_is_file: bool) -> Result<()> {
    if dest.exists() {
        return Ok(());
    }
    if source_is_file {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        std::fs::File::create(dest).ctx(|| format!("create mount point {}", dest.display()))?;
    } else {
        std::fs::create_dir_all(dest).ctx(|| format!("mkdir {}", dest.display()))?;
    }
    Ok(())
}

/// Mounts `m` under `rootfs` (before pivot_root). `cgroup2` tells whether a `cgroup` mount
/// can be a cgroup2 mount (v2 hosts); on v1 it is skipped.
pub(crate) fn mount_one(rootfs: &Path, m: &Mount, cgroup2: bool) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let is_bind = opts.flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let dest = secure_join(rootfs, m.destination());
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    if typ == "cgroup" && !cgroup2 {
        tracing::debug!("cgroup v1 mount at {} skipped", m.destination().display());
        return Ok(());
    }
    make_target(&dest, is_bind && !source.is_dir())?;
    let what = || {
        format!(
            "mount {} ({typ}) on {}",
            source.display(),
            m.destination().display()
        )
    };
    if is_bind {
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(Some(&source), &dest, None::<&str>, flags, None::<&str>).ctx(what)?;
        let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked_flags(&dest);
            mount(None::<&str>, &dest, None::<&str>, flags, None::<&str>).ctx(what)?;
        }
    } else {
        let typ = if typ == "cgroup" { "cgroup2" } else { typ };
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        let r = mount(Some(&source), &dest, Some(typ), opts.flags, data);
        match (r, typ) {
            (Ok(()), _) => {}
            // sysfs needs a network namespace of our own user namespace: bind the host's.
            (Err(_), "sysfs") => {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                mount(Some("/sys"), &dest, None::<&str>, flags, None::<&str>).ctx(what)?;
                let flags = MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | locked_flags(&dest);
                mount(None::<&str>, &dest, None::<&str>, flags, None::<&str>).ctx(what)?;
            }
            (Err(e), "mqueue") => tracing::warn!("{}: {e}; skipped", what()),
            (Err(e), _) => return Err(e).ctx(what),
        }
    }
    if !opts.propagation.is_empty() {
        mount(
            None::<&str>,
            &dest,
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )
        .ctx(what)?;
    }
    Ok(())
}

/// The flags of the mount at `path` a bind remount must keep (the kernel refuses to clear
/// nosuid/nodev/noexec set by a more privileged user namespace).
pub(crate) fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (a, b) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(a) {
            out |= b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_flags_and_data() {
        let o = parse_options(&[
            "nosuid".into(),
            "mode=755".into(),
            "ro".into(),
            "size=1k".into(),
            "rslave".into(),
        ]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_RDONLY);
        assert_eq!(o.data, "mode=755,size=1k");
        assert_eq!(o.propagation, MsFlags::MS_REC | MsFlags::MS_SLAVE);
    }

    #[test]
    fn secure_join_stays_inside_root() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", d.path().join("up")).unwrap();
        assert_eq!(
            secure_join(d.path(), Path::new("/evil/passwd")),
            d.path().join("etc/passwd")
        );
        assert_eq!(
            secure_join(d.path(), Path::new("/up/x")),
            d.path().join("x")
        );
        assert_eq!(
            secure_join(d.path(), Path::new("/a/../../b")),
            d.path().join("b")
        );
    }
}
