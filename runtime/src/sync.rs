//! The runtime <-> container-process channel: a SOCK_SEQPACKET socketpair (one message per
//! send, close-on-exec so a successful execve reads as end-of-file on the runtime's side).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// Messages, as their first byte.
pub(crate) const MSG_USERNS: u8 = b'U'; // child -> runtime: unshared userns, write my maps
pub(crate) const MSG_GO: u8 = b'g'; // runtime -> child: cgroup joined, maps written
pub(crate) const MSG_PID: u8 = b'P'; // child -> runtime: the container process' pid (i32 le)
pub(crate) const MSG_READY: u8 = b'R'; // child -> runtime: set up, waiting for start
pub(crate) const MSG_START: u8 = b's'; // runtime -> child: start (socket gate)
pub(crate) const MSG_ERROR: u8 = b'E'; // child -> runtime: error text follows

/// A socketpair `(runtime end, child end)`, both close-on-exec.
pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-int array for socketpair to fill.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(Error::sys("socketpair", std::io::Error::last_os_error()));
    }
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one message.
pub(crate) fn send(fd: BorrowedFd<'_>, tag: u8, body: &[u8]) -> Result<()> {
    let mut buf = Vec::with_capacity(1 + body.len());
    buf.push(tag);
    buf.extend_from_slice(body);
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::sys("send on the sync socket", e));
        }
    }
}

/// Receives one message; `None` at end-of-file (the peer closed or exec'd).
pub(crate) fn recv(fd: BorrowedFd<'_>) -> Result<Option<(u8, Vec<u8>)>> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            buf.truncate(n as usize);
            let tag = buf.remove(0);
            return Ok(Some((tag, buf)));
        }
        if n == 0 {
            return Ok(None);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::sys("receive on the sync socket", e));
        }
    }
}

/// Receives a message that must be `want`; an error message or EOF becomes an error.
pub(crate) fn expect(fd: BorrowedFd<'_>, want: u8) -> Result<Vec<u8>> {
    match recv(fd)? {
        Some((t, body)) if t == want => Ok(body),
        Some((MSG_ERROR, body)) => Err(Error::Setup(String::from_utf8_lossy(&body).into_owned())),
        Some((t, _)) => Err(Error::Setup(format!(
            "unexpected message {:?} from the container process",
            t as char
        ))),
        None => Err(Error::Setup(
            "the container process exited during setup".into(),
        )),
    }
}
