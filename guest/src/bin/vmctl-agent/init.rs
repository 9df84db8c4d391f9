//! PID 1 duties: the early mounts, the boot-time marker, power-off.

use std::path::Path;

use anyhow::Context;
use nix::mount::{mount, MsFlags};

/// Physical address of the VMM's boot-time marker device (docs/architecture.md).
const MARKER_ADDR: i64 = 0xc000_0000;
/// The byte that logs the boot time.
const MARKER_BYTE: u8 = 123;

fn mnt(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("mkdir {target}"))?;
    match mount(Some(src), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("mount {fstype} on {target}")),
    }
}

/// Set in the environment of the agent re-executed on its tmpfs root.
const STAGE2: &str = "VMCTL_AGENT_STAGE2";

/// First thing as PID 1: the boot-time marker (it needs /proc and /dev/mem). Then, on the
/// initramfs' rootfs, move to a tmpfs root and re-execute: pivot_root(2), which the container
/// runtime uses, refuses to work when the caller's root is the initramfs rootfs.
pub fn stage1() -> anyhow::Result<()> {
    if std::env::var_os(STAGE2).is_some() {
        return Ok(());
    }
    proc_and_dev()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline_flag(&cmdline, "vmctl.boot_marker") == Some("1") {
        if let Err(e) = boot_marker() {
            eprintln!("vmctl-agent: boot marker: {e:#}");
        }
    }
    let _ = nix::mount::umount("/dev");
    let _ = nix::mount::umount("/proc");
    switch_root().context("move the agent to a tmpfs root")
}

/// Mounts /proc and /dev (devtmpfs): the first mounts of both stages.
fn proc_and_dev() -> anyhow::Result<()> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nosuid, None)?;
    mnt(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
}

/// Makes a new tmpfs the root (MS_MOVE + chroot) with /init bind-mounted into it, and execs
/// /init there. A bind mount, not a copy: copying the multi-MiB agent is emulated ring-0 work
/// on nested-PVM hosts (seconds there), and it saves no memory: the agent runs from the
/// initramfs' pages of /init instead of from a copy of them.
fn switch_root() -> anyhow::Result<()> {
    let new = "/newroot";
    mnt("tmpfs", new, "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    for d in ["dev", "proc", "sys", "run", "tmp", "mnt"] {
        std::fs::create_dir_all(format!("{new}/{d}"))?;
    }
    let init = format!("{new}/init");
    std::fs::File::create(&init).with_context(|| format!("create {init}"))?;
    mount(
        Some("/init"),
        init.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("bind-mount /init into the tmpfs root")?;
    nix::unistd::chdir(new)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("move the tmpfs to /")?;
    nix::unistd::chroot(".").context("chroot")?;
    nix::unistd::chdir("/")?;
    let e = std::os::unix::process::CommandExt::exec(
        std::process::Command::new("/init").env(STAGE2, "1"),
    );
    Err(e).context("exec /init on the tmpfs root")
}

/// The mounts a guest needs.
pub fn early() -> anyhow::Result<()> {
    proc_and_dev()?;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("sysfs", "/sys", "sysfs", nosuid, None)?;
    mnt(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mnt("tmpfs", "/dev/shm", "tmpfs", nosuid, Some("mode=1777"))?;
    mnt("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, None)?;
    mnt(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    mnt(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    // Let child cgroups use the controllers the limits need.
    let _ = std::fs::write(
        "/sys/fs/cgroup/cgroup.subtree_control",
        "+memory +pids +cpu",
    );
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    let _ = nix::unistd::sethostname("vmctl");
    Ok(())
}

/// The value of `key=value` on the kernel command line.
pub fn cmdline_flag<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Writes the marker byte to the marker device's page through /dev/mem.
fn boot_marker() -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open("/dev/mem")
        .context("open /dev/mem (CONFIG_DEVMEM)")?;
    // SAFETY: maps one page of device memory shared; the pointer is only used below, while
    // the mapping exists, and unmapped before returning.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            MARKER_ADDR,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mmap 0xc0000000 from /dev/mem");
    }
    // SAFETY: `p` is a valid, writable mapping of at least one byte; a volatile write is the
    // MMIO access the device expects.
    unsafe {
        std::ptr::write_volatile(p as *mut u8, MARKER_BYTE);
        libc::munmap(p, 4096);
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

/// Syncs and powers off (or reboots). Never returns.
pub fn power_off(reboot: bool) -> ! {
    nix::unistd::sync();
    // Without ACPI a power-off only halts; the VMMs end the VM on the i8042 reset that
    // `reboot=k` makes a restart do. So a restart is the reliable way out either way.
    let how = if reboot || !Path::new("/sys/firmware/acpi").exists() {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: reboot(2) with a constant command; it does not return on success.
    unsafe { libc::reboot(how) };
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::cmdline_flag;

    #[test]
    fn flags_are_found_by_exact_key() {
        let c = "console=ttyS0 vmctl.boot_marker=1 vmctl.boot_markerx=2 reboot=k";
        assert_eq!(cmdline_flag(c, "vmctl.boot_marker"), Some("1"));
        assert_eq!(cmdline_flag(c, "reboot"), Some("k"));
        assert_eq!(cmdline_flag(c, "vmctl.transport"), None);
    }
}
