//! Images made from a root filesystem: a directory or a tarball (gzip or plain) becomes a
//! single-layer image.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::digest::sha256_bytes;
use super::error::{ImageError, IoContext, Result};
use super::layers::{diff_id_of, ensure_layer};
use super::store::Record;
use super::{ImageConfig, ImageInfo, ImageStore};

/// The PATH every vmctl-made image gets.
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The OCI config JSON of a single-layer image; its sha256 is the image id.
fn synth_config(diff_id: &str, cfg: &ImageConfig) -> Vec<u8> {
    let mut c = serde_json::Map::new();
    c.insert("Env".into(), cfg.env.clone().into());
    if !cfg.cmd.is_empty() {
        c.insert("Cmd".into(), cfg.cmd.clone().into());
    }
    if !cfg.entrypoint.is_empty() {
        c.insert("Entrypoint".into(), cfg.entrypoint.clone().into());
    }
    if let Some(w) = &cfg.workdir {
        c.insert("WorkingDir".into(), w.clone().into());
    }
    if let Some(u) = &cfg.user {
        c.insert("User".into(), u.clone().into());
    }
    let doc = serde_json::json!({
        "architecture": oci_spec::image::Arch::default().to_string(),
        "os": "linux",
        "config": c,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    doc.to_string().into_bytes()
}

impl ImageStore {
    /// Imports a root filesystem — a directory, or a tarball (plain or gzip) — as a
    /// single-layer image with `PATH` set and no default command.
    pub fn import_rootfs(
        &self,
        dir_or_tar: impl AsRef<Path>,
        name: Option<&str>,
    ) -> Result<ImageInfo> {
        let cfg = ImageConfig {
            env: vec![DEFAULT_PATH.to_string()],
            ..ImageConfig::default()
        };
        let path = dir_or_tar.as_ref();
        let _lock = self.lock()?;
        self.guarded(|| self.import_rootfs_locked(path, name, cfg))
    }

    fn import_rootfs_locked(
        &self,
        path: &Path,
        name: Option<&str>,
        cfg: ImageConfig,
    ) -> Result<ImageInfo> {
        if path.is_dir() {
            let tmp = self.temp_dir("rootfs")?;
            let tar_path = tmp.path().join("rootfs.tar");
            let f = File::create(&tar_path).ctx(|| format!("create {}", tar_path.display()))?;
            let mut b = tar::Builder::new(f);
            b.follow_symlinks(false);
            b.append_dir_all(".", path)
                .ctx(|| format!("pack directory {}", path.display()))?;
            b.into_inner()
                .ctx(|| format!("write {}", tar_path.display()))?;
            self.import_single_layer(&path.display().to_string(), name, cfg, || {
                File::open(&tar_path).ctx(|| format!("open {}", tar_path.display()))
            })
        } else if path.is_file() {
            self.import_single_layer(&path.display().to_string(), name, cfg, || {
                File::open(path)
                    .map(BufReader::new)
                    .ctx(|| format!("open {}", path.display()))
            })
        } else {
            Err(ImageError::Format(format!(
                "{} is neither a directory nor a tarball",
                path.display()
            )))
        }
    }

    /// Imports one layer stream as an image with config `cfg`. Call with the lock held.
    /// The stream is hashed first, so content already in the store is not unpacked again.
    pub(crate) fn import_single_layer<R: Read>(
        &self,
        what: &str,
        name: Option<&str>,
        cfg: ImageConfig,
        open: impl Fn() -> Result<R>,
    ) -> Result<ImageInfo> {
        if let Some(n) = name {
            super::store::normalize_name(n)?;
        }
        let expected = diff_id_of(open()?, what)?;
        let diff_id = ensure_layer(&self.root, Some(&expected), what, open)?;
        let id = sha256_bytes(&synth_config(&diff_id, &cfg));
        let names = name.map(|n| vec![n.to_string()]).unwrap_or_default();
        self.commit(Record::new(id, names, vec![diff_id], cfg))
    }
}
