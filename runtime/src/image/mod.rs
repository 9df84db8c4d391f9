//! Local image store: OCI image layouts, `docker save` archives and root filesystems are
//! imported into content-addressed, unpacked layer directories ready for overlayfs.
//!
//! Layout under the store root:
//! - `layers/<diff-id hex>/`: one unpacked layer (overlayfs whiteouts applied), shared;
//! - `images/<id hex>.json`: an image record (names, layer diff ids, run config);
//! - `tmp/`: unpack and import scratch space (cleaned on failure and on open);
//! - `lock`: serialises importers and removers.
//!
//! No registry is contacted: every source is a local file or directory.

mod default;
mod detect;
mod digest;
mod docker;
mod error;
mod inuse;
mod layers;
mod oci;
mod rootfs;
mod store;
mod unpack;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use default::DEFAULT_IMAGE;
pub use detect::{detect, SourceKind};
pub use error::{ImageError, Result};

/// Default root of the store.
pub const DEFAULT_ROOT: &str = "/var/lib/vmctl/images";

/// The image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// Run configuration of an image (from its OCI config).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// Environment, "KEY=VALUE".
    pub env: Vec<String>,
    /// Default command (arguments of the entrypoint when there is one).
    pub cmd: Vec<String>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User, as "uid[:gid]" or a name.
    pub user: Option<String>,
}

impl ImageConfig {
    fn from_oci(c: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(cfg) = c.config() else {
            return Self::default();
        };
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Self {
            env: cfg.env().clone().unwrap_or_default(),
            cmd: cfg.cmd().clone().unwrap_or_default(),
            entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
            workdir: nonempty(cfg.working_dir()),
            user: nonempty(cfg.user()),
        }
    }
}

/// An image ready to run: its unpacked layers and run configuration.
#[derive(Clone, Debug)]
pub struct Image {
    /// "sha256:<hex>" of its config.
    pub id: String,
    /// Names such as "vmctl/busybox:latest".
    pub names: Vec<String>,
    /// Unpacked layer directories, bottom first (overlayfs wants them top first in
    /// `lowerdir=`, so reverse them there).
    pub layers: Vec<PathBuf>,
    /// Run configuration.
    pub config: ImageConfig,
}

/// A summary of a stored image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// "sha256:<hex>" of its config.
    pub id: String,
    /// Names such as "vmctl/busybox:latest".
    pub names: Vec<String>,
    /// Layer diff ids ("sha256:<hex>" of each uncompressed layer tar), bottom first.
    pub layers: Vec<String>,
    /// Import time, seconds since the epoch.
    pub created: u64,
}

impl ImageInfo {
    /// The first 12 hex digits of the id, as `docker images` shows it.
    pub fn short_id(&self) -> &str {
        let hex = self.id.trim_start_matches("sha256:");
        &hex[..hex.len().min(12)]
    }
}
