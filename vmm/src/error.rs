//! The VMM's error type. Messages name the bad value and, where there is one, the fix.

use std::path::PathBuf;

/// Everything that can stop a VM from being built or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("/dev/kvm does not exist: load the KVM module (modprobe kvm_intel or kvm_amd) or run on a host with virtualization enabled")]
    KvmMissing,
    #[error("no permission to open /dev/kvm: run as root or add your user to the group owning /dev/kvm (usually `kvm`)")]
    KvmPermission,
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(#[source] kvm_ioctls::Error),
    #[error("KVM {what} failed: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("--vcpus 0: a VM needs at least 1 vCPU")]
    NoVcpus,
    #[error(
        "--vcpus {requested}: at most {max} vCPUs are supported here ({why}); use fewer vCPUs"
    )]
    TooManyVcpus {
        requested: u8,
        max: usize,
        why: &'static str,
    },
    #[error("--memory {mib} MiB is too small: a VM needs at least {min} MiB")]
    MemoryTooSmall { mib: u64, min: u64 },
    #[error(
        "--memory {mib} MiB is more than this host's {host_mib} MiB of RAM; use a smaller size"
    )]
    MemoryTooLarge { mib: u64, host_mib: u64 },
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    MemoryAlloc { mib: u64, reason: String },
    #[error("cannot read kernel {path}: {source}; check the --kernel path")]
    KernelRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {path} is neither an x86_64 ELF vmlinux nor a bzImage ({elf}; {bzimage}); pass an uncompressed vmlinux or a bzImage")]
    KernelFormat {
        path: PathBuf,
        elf: String,
        bzimage: String,
    },
    #[error("cannot load ELF kernel {path} into {mem_mib} MiB of guest memory: {reason}; check that it is an x86_64 vmlinux linked at or above 1 MiB, or raise --memory")]
    KernelLoad {
        path: PathBuf,
        reason: String,
        mem_mib: u64,
    },
    #[error("kernel {path} ({size} bytes) does not fit in {mem_mib} MiB of guest memory; raise --memory")]
    KernelTooBig {
        path: PathBuf,
        size: u64,
        mem_mib: u64,
    },
    #[error("cannot read initrd {path}: {source}; check the --initrd path")]
    InitrdRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("initrd {path} ({size} bytes) does not fit in guest memory between the kernel end {kernel_end:#x} and {limit:#x}; raise --memory (to at least {need_mib} MiB)")]
    InitrdTooBig {
        path: PathBuf,
        size: u64,
        kernel_end: u64,
        limit: u64,
        need_mib: u64,
    },
    #[error("kernel command line is {len} bytes, more than the {max} allowed; shorten --cmdline")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line {cmdline:?}: {reason}")]
    Cmdline { cmdline: String, reason: String },
    #[error("cannot write boot structures to guest memory: {0}")]
    BootSetup(String),
    #[error("device set-up failed: {0}")]
    Device(String),
    #[error("all {0} virtio-mmio slots are in use")]
    NoMmioSlot(u32),
    #[error("event loop: {0}")]
    EventLoop(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { what, source }
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
