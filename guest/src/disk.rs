//! Host side: the image disk a guest mounts read-only. One ext4 file per image id with one
//! directory per layer (`layers/0` bottom, `layers/1`, ...), built with `mkfs.ext4 -d`
//! (no mounting, no root needed) and cached under `<cache>/disks/<image-id>.ext4`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors building an image disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("invalid image id {0:?}: expected [sha256:]<hex>")]
    BadId(String),
    #[error("image layer {0} does not exist or is not a directory")]
    MissingLayer(PathBuf),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error(
        "{cmd} failed ({status}): {stderr} (is e2fsprogs installed? apt-get install e2fsprogs)"
    )]
    Tool {
        cmd: String,
        status: String,
        stderr: String,
    },
}

type Result<T> = std::result::Result<T, DiskError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DiskError {
    let what = what.into();
    move |err| DiskError::Io { what, err }
}

/// An image disk: its file and the layer directories in it (bottom first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDisk {
    pub path: PathBuf,
    pub layers: Vec<String>,
}

/// The default cache directory: `$VMCTL_CACHE` or `~/.cache/vmctl`.
pub fn cache_root() -> PathBuf {
    if let Some(c) = std::env::var_os("VMCTL_CACHE") {
        return PathBuf::from(c);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache/vmctl")
}

fn layer_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("layers/{i}")).collect()
}

/// Returns the cached disk of image `id` with `layers` (bottom first), building it first
/// when missing. Concurrent builders each build to a temporary file and rename; the result is
/// the same.
pub fn ensure(cache: &Path, id: &str, layers: &[PathBuf]) -> Result<ImageDisk> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.is_empty() || hex.len() > 128 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DiskError::BadId(id.to_string()));
    }
    let dir = cache.join("disks");
    let path = dir.join(format!("{hex}.ext4"));
    let disk = ImageDisk {
        path: path.clone(),
        layers: layer_names(layers.len()),
    };
    if path.is_file() {
        return Ok(disk);
    }
    for l in layers {
        if !l.is_dir() {
            return Err(DiskError::MissingLayer(l.clone()));
        }
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let stage = tempdir_in(&dir, ".stage")?;
    let result = build(&stage, layers, &dir, &path);
    let _ = std::fs::remove_dir_all(&stage);
    result.map(|_| disk)
}

fn tempdir_in(dir: &Path, prefix: &str) -> Result<PathBuf> {
    for n in 0..1000u32 {
        let p = dir.join(format!("{prefix}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("create {}", p.display()))(e)),
        }
    }
    Err(io("create a staging directory")(
        std::io::ErrorKind::AlreadyExists.into(),
    ))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(io(format!("run {cmd:?}")))?;
    if !out.status.success() {
        return Err(DiskError::Tool {
            cmd: format!("{cmd:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn build(stage: &Path, layers: &[PathBuf], dir: &Path, path: &Path) -> Result<()> {
    let root = stage.join("root");
    for (i, l) in layers.iter().enumerate() {
        let dest = root.join(format!("layers/{i}"));
        std::fs::create_dir_all(&dest).map_err(io(format!("create {}", dest.display())))?;
        // cp -a keeps owners, modes, links, device nodes (overlayfs whiteouts) and xattrs.
        let mut src = l.clone().into_os_string();
        src.push("/.");
        run(Command::new("cp").arg("-a").arg(&src).arg(&dest))?;
    }
    let bytes = du(&root)?;
    // Room for metadata: 25% plus 16 MiB, rounded to MiB.
    let size_mib = (bytes + bytes / 4) / (1 << 20) + 16;
    let tmp = stage.join("disk.ext4");
    let f = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    f.set_len(size_mib << 20)
        .map_err(io("size the disk file"))?;
    drop(f);
    // No journal and no metadata checksums: less work for a guest kernel that is slow here.
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            "vmctl-image",
            "-O",
            "^has_journal,^metadata_csum",
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(&root)
        .arg(&tmp))?;
    let _ = dir;
    std::fs::rename(&tmp, path).map_err(io(format!("move the disk to {}", path.display())))
}

fn du(dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(format!("read {}", d.display())))? {
            let e = e.map_err(io("read a directory entry"))?;
            let m = e.path().symlink_metadata().map_err(io("stat"))?;
            total += m.len().max(4096);
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_once_and_keeps_layers_apart() {
        let t = tempfile::tempdir().unwrap();
        let (l0, l1) = (t.path().join("l0"), t.path().join("l1"));
        std::fs::create_dir_all(l0.join("etc")).unwrap();
        std::fs::write(l0.join("etc/hello"), "bottom").unwrap();
        std::fs::create_dir_all(&l1).unwrap();
        std::fs::write(l1.join("top"), "top").unwrap();
        let cache = t.path().join("cache");
        let d = ensure(&cache, "sha256:abc123", &[l0.clone(), l1.clone()]).unwrap();
        assert_eq!(d.layers, vec!["layers/0", "layers/1"]);
        let listing = Command::new("debugfs")
            .args(["-R", "ls -p /layers/1"])
            .arg(&d.path)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listing.stdout).contains("/top/"),
            "{listing:?}"
        );
        let cat = Command::new("debugfs")
            .args(["-R", "cat /layers/0/etc/hello"])
            .arg(&d.path)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&cat.stdout), "bottom");
        // Cached: a second call does not rebuild (the layers are gone now).
        let mtime = std::fs::metadata(&d.path).unwrap().modified().unwrap();
        std::fs::remove_dir_all(&l0).unwrap();
        let again = ensure(&cache, "sha256:abc123", &[l0, l1]).unwrap();
        assert_eq!(
            std::fs::metadata(&again.path).unwrap().modified().unwrap(),
            mtime
        );
        assert_eq!(
            std::fs::read_dir(cache.join("disks")).unwrap().count(),
            1,
            "no staging left"
        );
    }

    #[test]
    fn bad_ids_and_missing_layers_are_refused() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            ensure(t.path(), "../etc", &[]),
            Err(DiskError::BadId(_))
        ));
        let missing = t.path().join("nope");
        assert!(matches!(
            ensure(t.path(), "abcd", &[missing]),
            Err(DiskError::MissingLayer(_))
        ));
    }
}
