//! Content-addressed layer directories: `root/layers/<diff-id hex>/`, unpacked once into a
//! temporary directory and renamed into place, shared between images.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::digest::{sha256_hex, HashingReader};
use super::error::{ImageError, IoContext, Result};
use super::unpack::{unpack, Whiteouts};

/// A directory under `root/tmp` that is removed when dropped unless kept.
pub(crate) struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `root/tmp/<prefix>-<pid>-<n>`.
    pub(crate) fn new(root: &Path, prefix: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = tmp.join(format!("{prefix}-{}-{n}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).ctx(|| format!("remove stale {}", path.display()))?;
        }
        fs::create_dir(&path).ctx(|| format!("create {}", path.display()))?;
        Ok(Self { path, keep: false })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Hands the directory over (it is no longer removed on drop).
    fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                tracing::warn!("could not remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Removes leftovers of importers that died (their pid is gone) from `root/tmp`.
pub(crate) fn clean_stale_tmp(root: &Path) {
    let Ok(rd) = fs::read_dir(root.join("tmp")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .split('-')
            .rev()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A regular file named by a manifest, resolved (symlinks included: old `docker save` links
/// repeated layers) and checked to stay inside `base`. Devices, FIFOs and paths that leave
/// `base` are refused.
pub(crate) fn file_inside(base: &Path, rel: &str) -> Result<PathBuf> {
    let canon_base = base
        .canonicalize()
        .ctx(|| format!("resolve {}", base.display()))?;
    let p = canon_base
        .join(rel)
        .canonicalize()
        .ctx(|| format!("find {rel:?} in {}", base.display()))?;
    let unsafe_entry = |reason: &str| ImageError::UnsafeEntry {
        what: base.display().to_string(),
        entry: PathBuf::from(rel),
        reason: reason.to_string(),
    };
    if !p.starts_with(&canon_base) {
        return Err(unsafe_entry("it resolves outside the image directory"));
    }
    if !p.is_file() {
        return Err(unsafe_entry("it is not a regular file"));
    }
    Ok(p)
}

/// The directory of layer `diff_id` ("sha256:<hex>").
pub(crate) fn layer_dir(root: &Path, diff_id: &str) -> Result<PathBuf> {
    Ok(root.join("layers").join(sha256_hex(diff_id)?))
}

/// Wraps a layer stream in the right decompressor, sniffed from its first bytes.
fn decompress<'a, R: Read + 'a>(reader: R, what: &str) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 * 1024, reader);
    let head = br.fill_buf().ctx(|| format!("read {what}"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(br)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(ImageError::Format(format!(
            "{what} is zstd-compressed, which vmctl does not support yet; \
             re-export the image with gzip or uncompressed layers"
        )))
    } else {
        Ok(Box::new(br))
    }
}

/// The diff id of a layer stream (compressed or not), read without unpacking it.
pub(crate) fn diff_id_of<R: Read>(reader: R, what: &str) -> Result<String> {
    HashingReader::new(decompress(reader, what)?)
        .finish()
        .ctx(|| format!("read {what}"))
}

/// Makes sure the layer whose (possibly compressed) tar stream `open` yields is unpacked in
/// the store and returns its diff id. When `expected` is given and already present, the
/// stream is not read at all; otherwise the uncompressed stream must hash to `expected`.
pub(crate) fn ensure_layer<R: Read>(
    root: &Path,
    expected: Option<&str>,
    what: &str,
    open: impl FnOnce() -> Result<R>,
) -> Result<String> {
    if let Some(exp) = expected {
        if layer_dir(root, exp)?.is_dir() {
            tracing::debug!("layer {exp} already unpacked");
            return Ok(exp.to_string());
        }
    }
    let tmp = TempDir::new(root, "layer")?;
    let mut hashed = HashingReader::new(decompress(open()?, what)?);
    let n = unpack(&mut hashed, tmp.path(), what, Whiteouts::Overlay)?;
    let actual = hashed.finish().ctx(|| format!("read {what}"))?;
    if let Some(exp) = expected {
        if exp != actual {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed {what} (diff id)"),
                expected: exp.to_string(),
                actual,
            });
        }
    }
    let dest = layer_dir(root, &actual)?;
    if dest.is_dir() {
        return Ok(actual); // same content imported from another source: tmp is dropped
    }
    fs::create_dir_all(root.join("layers")).ctx(|| "create layers directory".to_string())?;
    let src = tmp.keep();
    if let Err(e) = fs::rename(&src, &dest) {
        let _ = fs::remove_dir_all(&src);
        return Err(e).ctx(|| format!("move layer into {}", dest.display()));
    }
    tracing::info!("unpacked layer {actual} ({n} entries) from {what}");
    Ok(actual)
}
