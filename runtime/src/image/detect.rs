//! Import of any supported source, its kind detected from its content.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path};

use super::error::{IoContext, Result};
use super::{ImageInfo, ImageStore};

/// What a path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory with `oci-layout`.
    OciLayout,
    /// A tar with `manifest.json` (docker save) or `oci-layout` at its top.
    Archive,
    /// Any other directory or tarball: a root filesystem.
    Rootfs,
}

/// Whether the tar at `path` (plain or gzip) has `manifest.json` or `oci-layout` at its top.
fn is_image_archive(path: &Path) -> Result<bool> {
    let f = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut br = BufReader::new(f);
    let gz = br
        .fill_buf()
        .ctx(|| format!("read {}", path.display()))?
        .starts_with(&[0x1f, 0x8b]);
    let r: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(br))
    } else {
        Box::new(br)
    };
    let mut ar = tar::Archive::new(r);
    let entries = ar
        .entries()
        .ctx(|| format!("read tar {}", path.display()))?;
    for e in entries {
        let e = e.ctx(|| format!("read tar {}", path.display()))?;
        let p = e.path().ctx(|| format!("read tar {}", path.display()))?;
        let parts: Vec<Component> = p.components().filter(|c| *c != Component::CurDir).collect();
        if let [Component::Normal(n)] = parts.as_slice() {
            if *n == "manifest.json" || *n == "oci-layout" {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Tells what `path` holds.
pub fn detect(path: &Path) -> Result<SourceKind> {
    if path.is_dir() {
        Ok(if path.join("oci-layout").is_file() {
            SourceKind::OciLayout
        } else {
            SourceKind::Rootfs
        })
    } else if is_image_archive(path)? {
        Ok(SourceKind::Archive)
    } else {
        Ok(SourceKind::Rootfs)
    }
}

impl ImageStore {
    /// Imports `path` whatever it is: an OCI layout directory, an image archive (OCI or
    /// `docker save`), or a root filesystem directory or tarball.
    pub fn import(&self, path: impl AsRef<Path>, name: Option<&str>) -> Result<ImageInfo> {
        let path = path.as_ref();
        match detect(path)? {
            SourceKind::OciLayout => self.import_oci_layout(path, name),
            SourceKind::Archive => self.import_archive(path, name),
            SourceKind::Rootfs => self.import_rootfs(path, name),
        }
    }
}
