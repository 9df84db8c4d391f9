//! The container's terminal: a pty from the container's own devpts, the master sent over the
//! console socket with SCM_RIGHTS (as runc does), the slave as stdio and controlling terminal.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::error::{Context, Error, Result};

/// Creates the pty inside the container (after pivot_root), hands the master to
/// `socket`, and makes the slave the caller's stdio and controlling terminal.
pub(crate) fn setup(socket: BorrowedFd<'_>, size: Option<(u16, u16)>) -> Result<()> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
    )
    .ctx(|| "open /dev/ptmx".into())?;
    grantpt(&master).ctx(|| "grantpt".into())?;
    unlockpt(&master).ctx(|| "unlockpt".into())?;
    let name = ptsname_r(&master).ctx(|| "ptsname".into())?;
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .ctx(|| format!("open {name}"))?
        .into();
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    // /dev/console is the terminal too, as in runc.
    let console = Path::new("/dev/console");
    if crate::mounts::make_target(console, true).is_ok() {
        let _ = nix::mount::mount(
            Some(name.as_str()),
            console,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
    }
    send_fd(socket, master.as_raw_fd(), name.as_bytes())?;
    drop(master);
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    // SAFETY: TIOCSCTTY on an open tty fd with an integer argument.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::sys(
            "make the pty the controlling terminal",
            std::io::Error::last_os_error(),
        ));
    }
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; `slave` stays open across the calls.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(Error::sys("dup2 the pty", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Sends `fd` with the message `name` over a unix socket.
pub fn send_fd(socket: BorrowedFd<'_>, fd: RawFd, name: &[u8]) -> Result<()> {
    let fds = [fd];
    let iov = [IoSlice::new(name)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "send the pty master over the console socket".into())?;
    Ok(())
}

/// Receives a file descriptor sent with [`send_fd`] (the other end of a console socket).
pub fn recv_fd(socket: BorrowedFd<'_>) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ctx(|| "receive the pty master".into())?;
    for c in msg.cmsgs().ctx(|| "read control message".into())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this fd for us; nobody else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::Setup(
        "no file descriptor on the console socket".into(),
    ))
}
