//! A host TAP interface opened through /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::ioctl_iow_nr;

const TUNTAP: u32 = 0x54;
ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, ::std::os::raw::c_int);
ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, ::std::os::raw::c_uint);
ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, ::std::os::raw::c_int);

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;
/// Size of `struct virtio_net_hdr_v1` (with `num_buffers`), the header the TAP exchanges.
pub const VNET_HDR_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "TAP name {0:?} is {len} bytes; Linux interface names are 1 to 15 bytes, choose a \
         shorter name",
        len = .0.len()
    )]
    BadName(String),
    #[error("cannot open /dev/net/tun: {0}; load the tun module (modprobe tun)")]
    OpenTun(io::Error),
    #[error(
        "TAP {0:?} is busy: another process (or device) has it open; stop that user or pick \
         another name"
    )]
    Busy(String),
    #[error(
        "not allowed to create or attach TAP {0:?}: run with CAP_NET_ADMIN, or create it first \
         with `ip tuntap add dev {0} mode tap user $USER`"
    )]
    Permission(String),
    #[error(
        "cannot attach TAP {name:?}: {source}; if an interface of that name exists and is not a \
         TAP (or lacks vnet_hdr support), pick another name"
    )]
    Attach { name: String, source: io::Error },
    #[error("TAP {name:?}: {what} failed: {source}")]
    Setup {
        name: String,
        what: &'static str,
        source: io::Error,
    },
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// An attached TAP queue (non-blocking).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to TAP `name`, creating it if it does not exist. The TAP carries a 12-byte
    /// virtio-net header before each frame, and has all offloads off.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains(['/', '\0', ' ']) {
            return Err(TapError::BadName(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `IfReq` has its layout and size
        // (40 bytes) and lives for the call. The return value is checked.
        let r = unsafe { ioctl_with_mut_ref(&file, TUNSETIFF(), &mut req) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => TapError::Busy(name.into()),
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission(name.into()),
                _ => TapError::Attach {
                    name: name.into(),
                    source: e,
                },
            });
        }
        let end = req.name.iter().position(|&b| b == 0).unwrap_or(16);
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which is valid for the call.
        if unsafe { ioctl_with_ref(&file, TUNSETVNETHDRSZ(), &hdr_len) } < 0 {
            return Err(TapError::Setup {
                name,
                what: "TUNSETVNETHDRSZ",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value; 0 turns every offload off, so the
        // TAP never hands us GSO or partially-checksummed frames the guest did not negotiate.
        if unsafe { ioctl_with_val(&file, TUNSETOFFLOAD(), 0) } < 0 {
            return Err(TapError::Setup {
                name,
                what: "TUNSETOFFLOAD",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self { file, name })
    }

    /// The interface name (as the kernel knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (with its vnet header); `WouldBlock` when none is queued.
    pub fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes one frame (with its vnet header).
    pub fn write_frame(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
