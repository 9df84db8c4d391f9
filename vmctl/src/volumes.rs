//! `-v HOST_PATH:GUEST_PATH[:ro]` for VM-backed runs. A VM has no shared filesystem device,
//! so every volume is a virtio-blk disk with an ext4 filesystem that the guest agent mounts
//! and binds into the container:
//! - a directory becomes an ext4 image (`mkfs.ext4 -d`, no mounts on the host) in the VM's
//!   record directory, attached read-only; a read-write directory is refused (writes could
//!   not reach the host);
//! - a regular file (an ext4 image) or a block device is attached as it is, read-write unless
//!   `:ro`.
//!
//! Everything is checked by [`parse`] before any VM or file is created.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use guest::protocol::Volume;

/// Volumes per VM (each is a virtio-mmio device besides the image, agent channel and NIC).
pub(crate) const MAX_VOLUMES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Image,
}

/// A checked `-v` value.
#[derive(Debug, Clone)]
pub(crate) struct VolumeArg {
    value: String,
    host: PathBuf,
    kind: Kind,
    target: String,
    read_only: bool,
}

/// A disk to attach to the VM, in order after the image disk.
#[derive(Debug, Clone)]
pub(crate) struct HostDisk {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Checks every `-v` value (host path exists and is usable, guest path absolute, count).
pub(crate) fn parse(values: &[String]) -> anyhow::Result<Vec<VolumeArg>> {
    if values.len() > MAX_VOLUMES {
        bail!(
            "{} volumes given: a VM takes at most {MAX_VOLUMES}; combine directories into one \
             volume",
            values.len()
        );
    }
    values.iter().map(|v| parse_one(v)).collect()
}

fn parse_one(v: &str) -> anyhow::Result<VolumeArg> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, target, read_only) = match parts.as_slice() {
        [h, t] => (*h, *t, false),
        [h, t, "ro"] => (*h, *t, true),
        [h, t, "rw"] => (*h, *t, false),
        _ => bail!("-v {v:?}: expected HOST_PATH:GUEST_PATH[:ro]"),
    };
    if !target.starts_with('/') || target.split('/').any(|c| c == "..") || target == "/" {
        bail!("-v {v:?}: the guest path {target:?} must be absolute, not / and without '..'");
    }
    let host_path = std::fs::canonicalize(host)
        .with_context(|| format!("-v {v:?}: the host path {host:?} must exist"))?;
    let meta = std::fs::metadata(&host_path)
        .with_context(|| format!("-v {v:?}: stat {}", host_path.display()))?;
    let kind = if meta.is_dir() {
        if !read_only {
            bail!(
                "-v {v:?}: a directory can only be a read-only volume of a VM (there is no \
                 shared filesystem device, so the guest's writes could not reach the host): \
                 add :ro, or give an ext4 image file, which is attached read-write"
            );
        }
        Kind::Dir
    } else if meta.is_file() {
        if !is_ext4(&host_path) {
            bail!(
                "-v {v:?}: {} is not an ext4 image: a file volume of a VM is a disk image \
                 (make one with mkfs.ext4 FILE SIZE), or give a directory with :ro",
                host_path.display()
            );
        }
        Kind::Image
    } else if meta.file_type().is_block_device() {
        Kind::Image
    } else {
        bail!("-v {v:?}: {host:?} is not a directory, an ext4 image file or a block device");
    };
    Ok(VolumeArg {
        value: v.to_string(),
        host: host_path,
        kind,
        target: target.to_string(),
        read_only,
    })
}

/// The ext4 superblock magic (0xEF53 at byte 1080).
fn is_ext4(p: &Path) -> bool {
    let mut b = [0u8; 2];
    std::fs::File::open(p)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(1080))?;
            f.read_exact(&mut b)
        })
        .is_ok()
        && b == [0x53, 0xef]
}

/// Builds the disks of `vols` (directory images under `dir`) and the agent's view of them:
/// the first volume is the guest's `/dev/vd<first>`, the next one the letter after it.
pub(crate) fn materialise(
    vols: &[VolumeArg],
    dir: &Path,
    first: char,
) -> anyhow::Result<(Vec<HostDisk>, Vec<Volume>)> {
    let mut disks = Vec::new();
    let mut specs = Vec::new();
    for (i, v) in vols.iter().enumerate() {
        let path = match v.kind {
            Kind::Image => v.host.clone(),
            Kind::Dir => {
                let img = dir.join(format!("volume{i}.ext4"));
                dir_image(&v.host, &img).with_context(|| format!("-v {:?}", v.value))?;
                img
            }
        };
        disks.push(HostDisk {
            path,
            read_only: v.read_only,
        });
        let letter = (first as u8 + i as u8) as char;
        specs.push(Volume {
            disk: format!("/dev/vd{letter}"),
            target: v.target.clone(),
            read_only: v.read_only,
        });
    }
    Ok((disks, specs))
}

/// An ext4 image of directory `src` at `img`, sized for its contents.
fn dir_image(src: &Path, img: &Path) -> anyhow::Result<()> {
    let bytes = du(src)?;
    let size_mib = (bytes + bytes / 4) / (1 << 20) + 16;
    let f = std::fs::File::create(img).with_context(|| format!("create {}", img.display()))?;
    f.set_len(size_mib << 20)
        .with_context(|| format!("size {}", img.display()))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal,^metadata_csum", "-d"])
        .arg(src)
        .arg(img)
        .output()
        .context("run mkfs.ext4 (apt-get install e2fsprogs)")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(img);
        bail!(
            "mkfs.ext4 -d {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn du(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
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
    fn bad_values_are_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let dp = d.path().to_str().unwrap();
        let e = |v: &str| format!("{:#}", parse(&[v.to_string()]).unwrap_err());
        assert!(e(&format!("{dp}:/data")).contains("add :ro"));
        assert!(e(&format!("{dp}:data:ro")).contains("must be absolute"));
        assert!(e("/no/such/dir:/data:ro").contains("must exist"));
        assert!(e(dp).contains("expected HOST_PATH:GUEST_PATH"));
        let f = d.path().join("plain");
        std::fs::write(&f, "x").unwrap();
        assert!(e(&format!("{}:/f", f.display())).contains("not an ext4 image"));
        let many: Vec<String> = (0..=MAX_VOLUMES)
            .map(|i| format!("{dp}:/v{i}:ro"))
            .collect();
        assert!(format!("{:#}", parse(&many).unwrap_err()).contains("at most"));
        let ok = parse(&[format!("{dp}:/data:ro")]).unwrap();
        assert_eq!(ok[0].kind, Kind::Dir);
    }
}
