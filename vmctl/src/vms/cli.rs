//! `vmctl vm ...`: the command line of the VM lifecycle subcommands.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Start a detached VMM, configure a microVM over its API and print the VM's id.
    Create(CreateArgs),
    /// Boot a created VM (InstanceStart).
    Start { vm: String },
    /// Pause a running VM's vCPUs.
    Pause { vm: String },
    /// Resume a paused VM.
    Resume { vm: String },
    /// Stop a VM's VMM (SIGTERM, then SIGKILL after the grace period).
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// List VMs: id, name, state, VMM pid, uptime.
    Ps {
        /// Only print ids.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Print a VM's console (and its VMM's messages).
    Logs {
        /// Keep printing until the VMM exits.
        #[arg(short = 'f', long)]
        follow: bool,
        vm: String,
    },
    /// Remove VMs (their directory, console log and socket).
    Rm {
        /// Kill running VMs first.
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(required = true)]
        vms: Vec<String>,
    },
    /// Print a VM's configuration (GET /vm/config) as JSON.
    Inspect { vm: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A unique name for the VM (letters, digits, '_', '.', '-').
    #[arg(long)]
    pub name: Option<String>,
    /// Kernel (ELF vmlinux or bzImage).
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (vmctl adds console and device arguments).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Memory: a bare number is MiB; suffixes k, m, g.
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    /// virtio-blk disk (repeatable), as for `vmctl run --disk`.
    #[arg(long = "disk", value_name = "PATH[,ro]", value_parser = devices::virtio::spec::parse_disk)]
    pub disks: Vec<devices::virtio::block::BlockConfig>,
    /// virtio-net NIC (repeatable), as for `vmctl run --net`.
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]", value_parser = devices::virtio::spec::parse_net)]
    pub nets: Vec<devices::virtio::net::NetConfig>,
    /// virtio-vsock device, as for `vmctl run --vsock`.
    #[arg(long, value_name = "cid=N,uds=PATH", value_parser = devices::virtio::spec::parse_vsock)]
    pub vsock: Option<devices::virtio::vsock::VsockConfig>,
}
