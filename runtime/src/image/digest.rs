//! sha256 digests: hashing readers, file hashing and digest-string validation.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::error::{ImageError, IoContext, Result};

/// A reader that hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads the rest of the stream, then returns the digest "sha256:<hex>" of all of it.
    pub(crate) fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{:x}", self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// "sha256:<hex>" of a byte slice.
pub(crate) fn sha256_bytes(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// "sha256:<hex>" and size of a file's content.
pub(crate) fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let f = std::fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut r = HashingReader::new(f);
    let n = io::copy(&mut r, &mut io::sink()).ctx(|| format!("read {}", path.display()))?;
    let d = r.finish().ctx(|| format!("read {}", path.display()))?;
    Ok((d, n))
}

/// Checks that `digest` is "sha256:" followed by 64 lowercase hex digits and returns the hex.
/// Digests name files in the store, so anything else (e.g. "sha256:../x") is refused.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        ImageError::Format(format!(
            "unsupported digest {digest:?}: only sha256:<64 hex digits> is supported"
        ))
    })?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex)
    } else {
        Err(ImageError::Format(format!(
            "malformed digest {digest:?}: expected sha256:<64 lowercase hex digits>"
        )))
    }
}
