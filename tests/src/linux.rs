//! The project's guest kernel and test initramfs, as built by scripts/build-kernel.sh and
//! scripts/build-initramfs.sh.

use std::path::PathBuf;

/// The vmctl cache directory: $VMCTL_CACHE, else $XDG_CACHE_HOME/vmctl, else ~/.cache/vmctl
/// (as scripts/lib.sh).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VMCTL_CACHE") {
        return d.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("vmctl")
}

/// The guest kernel ($VMCTL_KERNEL, else <cache>/kernel/current/vmlinux) and initramfs
/// ($VMCTL_INITRD, else <cache>/initramfs/current/initramfs.cpio); Err says what is missing
/// and how to build it.
pub fn artefacts() -> Result<(PathBuf, PathBuf), String> {
    let kernel = std::env::var_os("VMCTL_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("kernel/current/vmlinux"));
    let initrd = std::env::var_os("VMCTL_INITRD")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("initramfs/current/initramfs.cpio"));
    if !kernel.exists() {
        return Err(format!(
            "guest kernel {} not found: run scripts/build-kernel.sh or set VMCTL_KERNEL",
            kernel.display()
        ));
    }
    if !initrd.exists() {
        return Err(format!(
            "initramfs {} not found: run scripts/build-initramfs.sh or set VMCTL_INITRD",
            initrd.display()
        ));
    }
    Ok((kernel, initrd))
}
