//! The embedded default image `vmctl/busybox:latest`: Debian's static busybox with its
//! applet links, a minimal /etc and `sh` as the command.

use std::io::Cursor;

use super::error::{IoContext, Result};
use super::rootfs::DEFAULT_PATH;
use super::{Image, ImageConfig, ImageStore};

/// Name of the default image, used when `vmctl run` is given none.
pub const DEFAULT_IMAGE: &str = "vmctl/busybox:latest";

static BUSYBOX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/busybox"));
static APPLETS: &str = include_str!(concat!(env!("OUT_DIR"), "/busybox-applets.txt"));

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

/// The default image's root filesystem as a tar (fixed times, so its digest is stable).
fn rootfs_tar() -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    let dirs = [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("root", 0o700),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("var/tmp", 0o1777),
        ("run", 0o755),
    ];
    for (d, mode) in dirs {
        b.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            d,
            std::io::empty(),
        )?;
    }
    let files: [(&str, u32, &[u8]); 3] = [
        ("bin/busybox", 0o755, BUSYBOX),
        ("etc/passwd", 0o644, PASSWD.as_bytes()),
        ("etc/group", 0o644, GROUP.as_bytes()),
    ];
    for (p, mode, data) in files {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, p, data)?;
    }
    for applet in APPLETS.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet == "bin/busybox" || !applet.contains('/') {
            continue;
        }
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, applet, "/bin/busybox")?;
    }
    b.into_inner()
}

impl ImageStore {
    /// The default image, created from the embedded busybox on first use.
    pub fn ensure_default(&self) -> Result<Image> {
        if let Ok(img) = self.get(DEFAULT_IMAGE) {
            return Ok(img);
        }
        let tar = rootfs_tar().ctx(|| "build the default image's root filesystem".to_string())?;
        let cfg = ImageConfig {
            env: vec![DEFAULT_PATH.to_string()],
            cmd: vec!["sh".to_string()],
            ..ImageConfig::default()
        };
        let info = {
            let _lock = self.lock()?;
            self.guarded(|| {
                self.import_single_layer(
                    "the embedded busybox image",
                    Some(DEFAULT_IMAGE),
                    cfg,
                    || Ok(Cursor::new(tar.as_slice())),
                )
            })?
        };
        self.get(&info.id)
    }
}
