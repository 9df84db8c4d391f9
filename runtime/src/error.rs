//! The runtime library's error type.

use std::path::PathBuf;

/// Everything that can go wrong while creating, running or deleting a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle directory or its config.json is missing.
    #[error(
        "bundle {path}: {reason}; pass --bundle DIR where DIR holds config.json and the rootfs"
    )]
    Bundle { path: PathBuf, reason: String },
    /// The OCI runtime configuration is invalid; `field` is its JSON path.
    #[error("invalid config {path}: field `{field}`: {reason}")]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },
    /// A value handed to the library is invalid.
    #[error("invalid {what} {value:?}: {hint}")]
    Invalid {
        what: &'static str,
        value: String,
        hint: String,
    },
    /// No container with this id exists in the state root.
    #[error("container {id:?} does not exist (state root {root}); `vmctl-runtime list` shows the known ids")]
    NotFound { id: String, root: PathBuf },
    /// A container with this id already exists.
    #[error(
        "container {id:?} already exists (state root {root}); pick another id or delete it first"
    )]
    Exists { id: String, root: PathBuf },
    /// The operation is not allowed in the container's current state.
    #[error("container {id:?} is {status}: cannot {op}")]
    State {
        id: String,
        status: String,
        op: &'static str,
    },
    /// A cgroup operation failed.
    #[error("cgroup {path}: {what}: {source}")]
    Cgroup {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    /// The container process reported a failure while setting itself up.
    #[error("container setup failed: {0}")]
    Setup(String),
    /// A seccomp profile could not be compiled.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error from an `io::Error` with a description of what was attempted.
    pub(crate) fn sys(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Sys {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Attaches "what was being done" to io and nix errors.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(what(), std::io::Error::from(e)))
    }
}
