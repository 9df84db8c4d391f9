//! `vmctl bench`: start latency, memory overhead, density (and, once virtio-blk lands, I/O) of
//! the same image and kernel as a container, a microVM on vmctl's VMM and a VM under a hosted
//! hypervisor, with peers (crun, runc, QEMU) measured in the same run. Writes a JSON file with
//! every raw sample and an SVG plot; prints a table and the targets.

mod bundle;
mod cgview;
mod container;
mod density;
mod env;
mod io;
mod isolated;
mod model;
mod plot;
mod proc;
mod report;
mod stats;
mod suite;
mod suite_vm;
mod vm;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

/// Every measurement group, in the order they run.
pub const LEVELS: &[&str] = &[
    "container",
    "microvm",
    "hosted",
    "container-in-microvm",
    "memory",
    "density",
    "io",
];
/// Every peer.
pub const PEERS: &[&str] = &["crun", "runc", "qemu-kvm", "qemu-tcg"];

/// `vmctl bench` options.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Measured runs per container subject.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Measured boots per VM subject (VM boots are slow on nested KVM: scripts/bench.sh
    /// asks for fewer).
    #[arg(long, default_value_t = 5)]
    pub vm_runs: usize,
    /// Warm-up runs per container subject (not counted).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Warm-up boots per VM subject (not counted).
    #[arg(long, default_value_t = 0)]
    pub vm_warmup: usize,
    /// What to measure, comma separated: container, microvm, hosted, container-in-microvm,
    /// memory, density, io.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "container,microvm,hosted,container-in-microvm,memory,density,io"
    )]
    pub levels: Vec<String>,
    /// Peers to measure beside vmctl, comma separated: crun, runc, qemu-kvm, qemu-tcg
    /// (`--peers ''` for none).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "crun,runc,qemu-kvm,qemu-tcg"
    )]
    pub peers: Vec<String>,
    /// Time budget of each density measurement, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub density_budget: f64,
    /// At most this many instances per density measurement.
    #[arg(long, default_value_t = 50)]
    pub density_max: usize,
    /// Directory for bench.json and bench.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// An earlier bench.json to compare this run against.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Guest kernel for the VM levels (default: the cached build, as scripts/build-kernel.sh).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs for the VM levels (default: the cached scripts/build-initramfs.sh build).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Extra subjects: vmctl's VMM with its guest RAM backed otherwise (`VMCTL_GUEST_MEM`
    /// values, comma separated: thp, prefault, thp+prefault).
    #[arg(long, value_delimiter = ',')]
    pub vmm_mem: Vec<String>,
    /// Guest memory of every VM, MiB.
    #[arg(long, default_value_t = 256)]
    pub vm_memory: u64,
    /// MiB read and written sequentially in the guest (and on the host) for the I/O level.
    #[arg(long, default_value_t = 16)]
    pub io_mib: u64,
    /// Give up on one VM boot after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub vm_timeout: u64,
    /// vmctl's OCI runtime (default: vmctl-runtime next to this binary, else on PATH).
    #[arg(long)]
    pub runtime: Option<PathBuf>,
    /// crun binary.
    #[arg(long, default_value = "/usr/bin/crun")]
    pub crun: PathBuf,
    /// runc binary.
    #[arg(long, default_value = "/usr/sbin/runc")]
    pub runc: PathBuf,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// Image store directory (the default busybox image is taken from it).
    #[arg(long = "image-root", env = "VMCTL_IMAGE_ROOT", default_value = runtime::image::DEFAULT_ROOT)]
    pub image_root: PathBuf,
}

fn clock() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A progress line on stderr.
pub(crate) fn progress(msg: &str) {
    eprintln!("[bench {:>7.1}s] {msg}", clock().elapsed().as_secs_f64());
}

/// Runs the bench; the exit status is 0 unless the bench itself could not run.
pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    for l in &args.levels {
        anyhow::ensure!(
            LEVELS.contains(&l.as_str()),
            "--levels {l:?}: unknown; choose from {}",
            LEVELS.join(",")
        );
    }
    for p in args.peers.iter().filter(|p| !p.is_empty()) {
        anyhow::ensure!(
            PEERS.contains(&p.as_str()),
            "--peers {p:?}: unknown; choose from {}",
            PEERS.join(",")
        );
    }
    anyhow::ensure!(
        args.runs >= 1 && args.vm_runs >= 1,
        "--runs {} / --vm-runs {}: need at least 1",
        args.runs,
        args.vm_runs
    );
    let old = match &args.compare {
        Some(p) => Some(report::load(p)?),
        None => None,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    clock();
    proc::become_subreaper();
    let mut r = suite::Suite::new(&args)?.run();
    r.targets = report::targets(&r);
    let json = args.out.join("bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = args.out.join("bench.svg");
    if let Err(e) = plot::latency_svg(&r, &svg) {
        progress(&format!("plot not written: {e:#}"));
    }
    print!("{}", report::table(&r));
    if let Some(old) = old {
        print!("{}", report::compare(&old, &r));
    }
    println!("raw samples: {}", json.display());
    println!("plot: {}", svg.display());
    Ok(0)
}
