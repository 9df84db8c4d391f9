//! The byte stream to the host: a virtio-serial port named `vmctl.agent` (QEMU) or a vsock
//! connection on port 1024 (vmctl's VMM). The protocol code sees only Read + Write.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use guest::protocol::{SERIAL_PORT_NAME, VSOCK_PORT};

/// One connection's two halves.
pub struct Stream {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
    pub kind: &'static str,
}

/// Where the host is.
pub enum Listener {
    Serial(PathBuf),
    Vsock(OwnedFd),
}

/// Finds the transport: `vmctl.transport=serial|vsock` on the command line, else the serial
/// port when one named vmctl.agent exists, else vsock.
pub fn listen(cmdline: &str) -> anyhow::Result<Listener> {
    let forced = crate::init::cmdline_flag(cmdline, "vmctl.transport");
    if forced != Some("vsock") {
        // Virtio probing is done before /init runs, but be lenient with slow device set-up.
        for _ in 0..50 {
            if let Some(dev) = find_serial_port()? {
                return Ok(Listener::Serial(dev));
            }
            if forced != Some("serial") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if forced == Some("serial") {
            anyhow::bail!(
                "no virtio-serial port named {SERIAL_PORT_NAME} (CONFIG_VIRTIO_CONSOLE?)"
            );
        }
    }
    vsock_listen(VSOCK_PORT).map(Listener::Vsock)
}

/// /sys/class/virtio-ports/<dev>/name holds the port name; the node is /dev/<dev>.
fn find_serial_port() -> anyhow::Result<Option<PathBuf>> {
    let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") else {
        return Ok(None);
    };
    for e in dir.flatten() {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == SERIAL_PORT_NAME {
            return Ok(Some(PathBuf::from("/dev").join(e.file_name())));
        }
    }
    Ok(None)
}

fn vsock_listen(port: u32) -> anyhow::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("vsock socket (CONFIG_VIRTIO_VSOCKETS?)");
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; zeroed is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            len,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("bind vsock port {port}"));
    }
    // SAFETY: listen(2) on our socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 4) } != 0 {
        return Err(std::io::Error::last_os_error()).context("listen on vsock");
    }
    Ok(fd)
}

impl Listener {
    /// Waits for the host's next connection.
    pub fn accept(&self) -> anyhow::Result<Stream> {
        match self {
            Listener::Serial(dev) => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(dev)
                    .with_context(|| format!("open {}", dev.display()))?;
                let w = f.try_clone().context("dup the serial port")?;
                Ok(Stream {
                    reader: Box::new(SerialReader {
                        f,
                        seen_host: false,
                    }),
                    writer: Box::new(w),
                    kind: "virtio-serial",
                })
            }
            Listener::Vsock(l) => {
                // SAFETY: accept(2) on our listening socket without an address buffer.
                let fd = unsafe {
                    libc::accept4(
                        l.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error()).context("accept on vsock");
                }
                // SAFETY: a fresh descriptor from accept4 that nobody else owns.
                let f = unsafe { File::from_raw_fd(fd) };
                let w = f.try_clone().context("dup the vsock connection")?;
                Ok(Stream {
                    reader: Box::new(f),
                    writer: Box::new(w),
                    kind: "vsock",
                })
            }
        }
    }

    /// Whether a closed connection may be followed by a new one (vsock), or means the host
    /// went away for good (the serial port's socket is vmctl's).
    pub fn reconnects(&self) -> bool {
        matches!(self, Listener::Vsock(_))
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// A virtio console port reads 0 bytes while no host is connected. Before the host ever
/// connected that means "wait"; afterwards it is the end of the session.
struct SerialReader {
    f: File,
    seen_host: bool,
}

impl Read for SerialReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.f.read(buf)?;
            if n > 0 {
                self.seen_host = true;
                return Ok(n);
            }
            if self.seen_host {
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
