//! The command line, shared by every isolation level.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "vmctl",
    version,
    about = "Containers, microVMs and hosted VMs from one image"
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); VMCTL_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Command {
    /// Run a workload (an image and command, or a raw kernel with --kernel).
    Run(RunArgs),
    /// List local images.
    Images(StoreArgs),
    /// Manage local images (import, rm).
    #[command(subcommand)]
    Image(ImageCommand),
    /// List containers, microVMs and hosted VMs, with their isolation level.
    Ps {
        /// Show stopped ones too.
        #[arg(short = 'a', long)]
        all: bool,
        /// Only print ids.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Print the output of a detached container or VM.
    Logs {
        /// Keep printing until it stops.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Container or VM id, id prefix or name.
        container: String,
    },
    /// Stop containers and VMs (SIGTERM, then SIGKILL after the grace period).
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long, default_value_t = 10)]
        time: u64,
        /// Container or VM ids, id prefixes or names.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers and VMs.
    Rm {
        /// Kill running ones first.
        #[arg(short = 'f', long)]
        force: bool,
        /// Container or VM ids, id prefixes or names.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Manage detached microVMs (create, start, pause, resume, stop, ps, logs, rm, inspect).
    #[command(subcommand)]
    Vm(crate::vms::cli::VmCommand),
    /// Measure start latency, memory and density of containers, microVMs and hosted VMs
    /// side by side (JSON, table, SVG plot).
    Bench(crate::bench::BenchArgs),
    /// Internal: the VMM process of `--isolation microvm`, configured through the
    /// Firecracker-compatible API on --api-sock (what `vmctl-vmm --api-sock` does).
    #[command(hide = true)]
    Vmm {
        /// Unix socket to serve the API on.
        #[arg(long, value_name = "PATH")]
        api_sock: PathBuf,
        /// Instance id reported by `GET /`.
        #[arg(long, default_value = "anonymous-instance")]
        id: String,
    },
}

/// Where the image store lives.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Image store directory.
    #[arg(long = "image-root", env = "VMCTL_IMAGE_ROOT", default_value = runtime::image::DEFAULT_ROOT)]
    pub root: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import an OCI image layout (directory or tar), a `docker save` tar, or a root
    /// filesystem (directory or tarball, gzip or plain).
    Import {
        /// The directory or file to import.
        path: PathBuf,
        /// Name for the image (e.g. myapp:1.0); also picks the image in a multi-image source.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove images (by name or id); unused layers are deleted.
    Rm {
        /// Names or ids.
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User (uid[:gid]) to run as.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Container id or name.
    pub container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// A container on the host (namespaces, cgroups, overlayfs).
    Container,
    /// A Linux guest on vmctl's own KVM VMM; the workload runs in a container inside it.
    Microvm,
    /// The same guest under QEMU (KVM when it works, TCG otherwise).
    Hosted,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Isolation level.
    #[arg(long, value_enum, default_value = "container")]
    pub isolation: Isolation,

    // ---- raw VM boot (microvm without an image) ----
    /// Boot this kernel (ELF vmlinux with or without a PVH note, or bzImage) directly.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for --kernel (vmctl adds console and device arguments).
    #[arg(long, requires = "kernel")]
    pub cmdline: Option<String>,
    /// Number of vCPUs of the VM.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Serve the Firecracker-compatible API on this Unix socket while the VM runs (pause,
    /// resume, metrics, GET /vm/config).
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub api_sock: Option<PathBuf>,

    // ---- virtio devices of the VM ----
    /// Attach a virtio-blk disk backed by a raw image (repeatable; the first is /dev/vda, and
    /// `root` on it adds root=/dev/vda to the kernel command line):
    /// PATH[,ro][,root][,id=ID][,bw=BYTES_PER_SEC][,iops=OPS_PER_SEC].
    #[arg(long = "disk", value_name = "PATH[,ro]", value_parser = devices::virtio::spec::parse_disk)]
    pub disks: Vec<devices::virtio::block::BlockConfig>,
    /// Attach a virtio-net NIC on a host TAP, created if missing (repeatable):
    /// tap=NAME[,mac=aa:bb:cc:dd:ee:ff][,bw=BYTES_PER_SEC].
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]", value_parser = devices::virtio::spec::parse_net)]
    pub nets: Vec<devices::virtio::net::NetConfig>,
    /// Attach a virtio-vsock device: cid=N,uds=PATH (guest CID N >= 3; host processes connect
    /// to PATH and send "CONNECT <port>\n"; guest connections to port P go to PATH_P).
    #[arg(long, value_name = "cid=N,uds=PATH", value_parser = devices::virtio::spec::parse_vsock)]
    pub vsock: Option<devices::virtio::vsock::VsockConfig>,

    // ---- resources, shared by all levels ----
    /// Memory: VM size for VMs, cgroup limit for containers. A bare number is MiB; suffixes
    /// k, m, g (e.g. 512m, 1g).
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    /// CPU quota in CPUs (e.g. 0.5, 2).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes in the container.
    #[arg(long)]
    pub pids_limit: Option<i64>,

    // ---- docker habits ----
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run in the background and print the id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Bind mount HOST:CONTAINER[:ro] (repeatable).
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User (uid[:gid]) to run as.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Network: bridge (own netns on the --bridge with NAT), none (loopback only) or host.
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// Bridge device of --network bridge, created if missing.
    #[arg(long, env = "VMCTL_BRIDGE", default_value = "vmctl0")]
    pub bridge: String,
    /// Subnet of --bridge (the bridge gets its first address); used when the bridge is created.
    #[arg(long, env = "VMCTL_SUBNET", default_value = "10.88.0.0/16")]
    pub subnet: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Publish a port [HOST_IP:]HOST:CONTAINER[/tcp|udp] (repeatable; --network bridge).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Name of the container or VM.
    #[arg(long)]
    pub name: Option<String>,
    /// Run an init as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,

    /// Image (name or id); the embedded default image when left out.
    pub image: Option<String>,
    /// Command and arguments (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}
