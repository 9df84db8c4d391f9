//! The guest's network from the host's instructions, with the classic ioctls (no busybox,
//! no netlink library): address, netmask, link up, default route; loopback up.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context};
use guest::protocol::NetConfig;

fn socket() -> anyhow::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_INET)");
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> anyhow::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("bad interface name {name:?}");
    }
    // SAFETY: ifreq is plain old data; all zeroes is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the API is used.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    fd: &OwnedFd,
    req: libc::c_ulong,
    arg: *mut libc::c_void,
    what: &str,
) -> anyhow::Result<()> {
    // SAFETY: `arg` points to the struct `req` expects, alive across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| what.to_string());
    }
    Ok(())
}

fn link_up(fd: &OwnedFd, name: &str) -> anyhow::Result<()> {
    let mut r = ifreq(name)?;
    ioctl(
        fd,
        libc::SIOCGIFFLAGS,
        &mut r as *mut _ as *mut _,
        &format!("get flags of {name} (does it exist?)"),
    )?;
    // SAFETY: reading the union member SIOCGIFFLAGS filled in.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(
        fd,
        libc::SIOCSIFFLAGS,
        &mut r as *mut _ as *mut _,
        &format!("bring {name} up"),
    )
}

/// Brings loopback up (done at boot: containers sharing the guest network want it).
pub fn loopback() -> anyhow::Result<()> {
    link_up(&socket()?, "lo")
}

/// Applies `cfg`.
pub fn configure(cfg: &NetConfig) -> anyhow::Result<()> {
    let ip: Ipv4Addr = cfg
        .address
        .parse()
        .with_context(|| format!("bad address {:?}", cfg.address))?;
    if cfg.prefix > 32 {
        bail!("bad prefix length {}", cfg.prefix);
    }
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(cfg.prefix))
            .unwrap_or(0),
    );
    let fd = socket()?;
    let name = cfg.interface.as_str();
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_addr = sockaddr(ip);
    ioctl(
        &fd,
        libc::SIOCSIFADDR,
        &mut r as *mut _ as *mut _,
        &format!("set address {ip} on {name}"),
    )?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_netmask = sockaddr(mask);
    ioctl(
        &fd,
        libc::SIOCSIFNETMASK,
        &mut r as *mut _ as *mut _,
        &format!("set netmask {mask} on {name}"),
    )?;
    link_up(&fd, name)?;
    if let Some(gw) = &cfg.gateway {
        let gw: Ipv4Addr = gw.parse().with_context(|| format!("bad gateway {gw:?}"))?;
        // SAFETY: rtentry is plain old data; all zeroes is valid.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        ioctl(
            &fd,
            libc::SIOCADDRT,
            &mut rt as *mut _ as *mut _,
            &format!("add default route via {gw}"),
        )?;
    }
    Ok(())
}
