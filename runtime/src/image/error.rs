//! Errors of the image store.

use std::path::PathBuf;

/// Everything that can go wrong while importing, reading or removing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O operation failed; `context` says what was being done.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    /// A layer or archive entry would escape its directory or is otherwise unsafe.
    #[error(
        "unsafe entry {entry:?} in {what}: {reason}; the archive was rejected and nothing was kept"
    )]
    UnsafeEntry {
        what: String,
        entry: PathBuf,
        reason: String,
    },
    /// A blob's content does not match the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; the source is corrupt or was tampered with")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// The input is not in a format we understand.
    #[error("{0}")]
    Format(String),
    /// No image with that name or id.
    #[error(
        "no image named {0:?}; `vmctl images` lists the images, `vmctl image import PATH` adds one"
    )]
    NotFound(String),
    /// A layer was named for removal; layers go with the last image that uses them.
    #[error("{0} is a layer, not an image; it is used by {1}: remove those images and it is deleted with the last of them")]
    LayerInUse(String, String),
    /// The image's layers are mounted (a container uses it).
    #[error("image {0} is in use ({1}); stop the container using it first")]
    InUse(String, String),
    /// A name or id matches more than one image.
    #[error("{0:?} matches more than one image ({1}); use a longer id")]
    Ambiguous(String, String),
    /// An image name is not valid.
    #[error("invalid image name {0:?}: use letters, digits and . _ - / : @ (e.g. myapp:1.0)")]
    InvalidName(String),
    /// An OCI document could not be parsed.
    #[error("invalid OCI document {what}: {cause}")]
    Oci {
        what: String,
        cause: oci_spec::OciSpecError,
    },
    /// A JSON document could not be parsed or written.
    #[error("invalid JSON in {what}: {cause}")]
    Json {
        what: String,
        cause: serde_json::Error,
    },
}

/// Result alias of the image store.
pub type Result<T> = std::result::Result<T, ImageError>;

/// Adds context to I/O errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|cause| ImageError::Io {
            context: f(),
            cause,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| ImageError::Io {
            context: f(),
            cause: std::io::Error::from(e),
        })
    }
}
