//! Test helpers: run code in a fresh network namespace and talk to a TAP from the host side
//! with an AF_PACKET socket. All traffic stays inside the namespace, which disappears with the
//! thread and its sockets.
#![allow(dead_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Runs `f` on a thread that has its own, new network namespace.
pub fn in_new_netns<F: FnOnce() + Send + 'static>(f: F) {
    let t = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        );
        // Quieten the namespace: no IPv6 autoconfiguration chatter on new interfaces.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        f();
    });
    if let Err(p) = t.join() {
        std::panic::resume_unwind(p);
    }
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Sets interface `name` up and returns its index.
pub fn link_up(name: &str) -> i32 {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(s >= 0);
    // SAFETY: `s` is a fresh fd we own.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = IfReqFlags {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write a struct ifreq, which `req` matches.
    unsafe {
        assert_eq!(libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req), 0);
        req.flags |= libc::IFF_UP as i16;
        assert_eq!(libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req), 0);
    }
    let c = CString::new(name).unwrap();
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(idx > 0);
    idx as i32
}

/// An AF_PACKET socket bound to one interface.
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    pub fn bind(ifindex: i32) -> Self {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: the pointer and length describe `sll`.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval, which `tv` is.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Self(fd)
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: the pointer and length describe `frame`.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            io::Error::last_os_error()
        );
    }

    /// Receives frames until one satisfies `pred` or `timeout` passes.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        pred: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 70000];
        while std::time::Instant::now() < deadline {
            // SAFETY: the pointer and length describe `buf`.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && pred(&buf[..n as usize]) {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }
}

/// An Ethernet frame with the local-experimental ethertype 0x88b5.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f
}
