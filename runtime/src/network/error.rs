//! Errors of container networking.

/// Everything that can go wrong while setting up or tearing down container networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A helper command (ip, iptables, nsenter) failed.
    #[error("`{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    /// An I/O operation failed; `context` says what was being done.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    /// A user-supplied value is not valid; the message names it and the expected form.
    #[error("{0}")]
    Invalid(String),
    /// The subnet has no free address left.
    #[error("no free address left in {0}; detach unused containers or use a larger subnet")]
    Exhausted(String),
    /// A conflicting attachment or port mapping exists.
    #[error("{0}")]
    Conflict(String),
    /// The IPAM state file could not be parsed or written.
    #[error("network state {path}: {cause}")]
    State {
        path: String,
        cause: serde_json::Error,
    },
}

/// Result alias of the network module.
pub type Result<T> = std::result::Result<T, NetError>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let context = context.into();
    move |cause| NetError::Io { context, cause }
}
