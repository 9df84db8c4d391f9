//! Creating the API's Unix socket: mode 0600, stale sockets replaced, live ones refused.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};

/// Why the API socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on the socket.
    #[error(
        "API socket {0} is in use by a running process; stop that VMM or choose another \
         --api-sock path"
    )]
    InUse(PathBuf),
    /// Something other than a socket is at the path.
    #[error("{0} exists and is not a socket; remove it or choose another --api-sock path")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("API socket {path}: {what}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Removes a socket file left behind by a dead process; refuses a live one.
fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!("removing stale API socket {}", path.display());
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(path, "remove stale")(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(io_err(path, "probe existing socket")(e)),
    }
}

/// Binds a listening Unix socket at `path` with mode 0600.
///
/// The mode is set between `bind` and `listen`, so no client can connect while the file has
/// the umask's permissions.
pub fn bind_api_socket(path: &Path) -> Result<UnixListener, SocketError> {
    clear_stale(path)?;
    let errno = |what: &'static str| move |e: nix::Error| io_err(path, what)(e.into());
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(errno("socket"))?;
    let addr = UnixAddr::new(path).map_err(errno("address (paths are limited to 107 bytes)"))?;
    bind(fd.as_raw_fd(), &addr).map_err(errno("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(path, "chmod 0600"))?;
    let backlog = Backlog::new(1024).unwrap_or(Backlog::MAXCONN);
    listen(&fd, backlog).map_err(errno("listen"))?;
    Ok(UnixListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_stale_live_and_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api.sock");
        let l = bind_api_socket(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind_api_socket(&p), Err(SocketError::InUse(_))));
        drop(l); // the file stays: now stale
        assert!(p.exists());
        let _l2 = bind_api_socket(&p).unwrap();
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(matches!(
            bind_api_socket(&f),
            Err(SocketError::NotASocket(_))
        ));
        let long = dir.path().join("x".repeat(200));
        assert!(bind_api_socket(&long)
            .unwrap_err()
            .to_string()
            .contains("107"));
    }
}
