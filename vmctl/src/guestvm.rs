//! What both VM-backed levels (`--isolation microvm` and `--isolation hosted`) share before
//! their VMM starts: the image and its cached disk, the container spec from the command line,
//! the guest kernel and agent initramfs, the VM record, and the timeouts.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use guest::client::Client;
use guest::protocol::{ContainerSpec, Limits, NetworkMode};
use guest::registry::Record;
use guest::session::{self, Signals, Timeouts};

use crate::cli::RunArgs;
use crate::vmnet::VmNet;
use crate::volumes::HostDisk;

/// The guest's device for the image disk (first virtio-blk device).
pub(crate) const IMAGE_DISK: &str = "/dev/vda";
/// Memory the guest needs besides the workload's limit (kernel, agent, page cache), MiB.
pub(crate) const GUEST_OVERHEAD_MIB: u64 = 96;
/// VM memory when --memory is not given, MiB.
pub(crate) const DEFAULT_VM_MIB: u64 = 256;

/// An image ready to become a disk.
pub(crate) struct Image {
    pub id: String,
    pub name: String,
    pub layers: Vec<PathBuf>,
    pub env: Vec<String>,
    /// The image's entrypoint (a given command is appended to it, as docker does).
    pub entrypoint: Vec<String>,
    /// Entrypoint + default command.
    pub cmd: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// Finds the image in the store (`$VMCTL_IMAGE_ROOT` or the default root), the embedded
/// default image when `name` is `None`.
pub(crate) fn resolve_image(name: Option<&str>) -> anyhow::Result<Image> {
    let root = std::env::var_os("VMCTL_IMAGE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| runtime::image::DEFAULT_ROOT.into());
    let img = crate::images::resolve(&crate::cli::StoreArgs { root }, name)?;
    let mut cmd = img.config.entrypoint.clone();
    cmd.extend(img.config.cmd.iter().cloned());
    Ok(Image {
        id: img.id.clone(),
        name: name
            .map(str::to_string)
            .or_else(|| img.names.first().cloned())
            .unwrap_or_else(|| img.id.clone()),
        layers: img.layers,
        env: img.config.env,
        entrypoint: img.config.entrypoint,
        cmd,
        workdir: img.config.workdir,
        user: img.config.user,
    })
}

/// Parses --memory into bytes (a bare number is MiB).
pub(crate) fn memory_bytes(s: &str) -> anyhow::Result<u64> {
    let mib = crate::vmspec::parse_mem_mib(s)?;
    if mib < 4 {
        bail!("--memory {s:?} is too small: give at least 4m");
    }
    Ok(mib << 20)
}

/// The container spec from the command line and the image (docker's precedence).
pub(crate) fn container_spec(
    args: &RunArgs,
    image: &Image,
    id: &str,
    layers: Vec<String>,
) -> anyhow::Result<ContainerSpec> {
    let args_cmd = if args.command.is_empty() {
        image.cmd.clone()
    } else {
        image
            .entrypoint
            .iter()
            .chain(args.command.iter())
            .cloned()
            .collect()
    };
    if args_cmd.is_empty() {
        bail!(
            "no command: give one after `--` (the image {} has none)",
            image.name
        );
    }
    let mut env = image.env.clone();
    for e in &args.env {
        if !e.contains('=') {
            bail!("--env {e:?}: expected KEY=VALUE");
        }
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if let Some(w) = &args.workdir {
        if !w.starts_with('/') {
            bail!("--workdir {w:?} must be an absolute path");
        }
    }
    // `host` is refused by vmnet::plan; `bridge` is the VM's NIC, shared with the container.
    // `none`: the VM has no NIC, so the guest's network namespace holds only loopback, which
    // is all a fresh namespace would hold; sharing it spares the guest kernel creating one
    // (seconds of emulated ring-0 work on nested-PVM hosts, docs/bench.md).
    let network = NetworkMode::Guest;
    Ok(ContainerSpec {
        id: id.to_string(),
        disk: IMAGE_DISK.into(),
        layers,
        args: args_cmd,
        env,
        workdir: args.workdir.clone().or_else(|| image.workdir.clone()),
        user: args.user.clone().or_else(|| image.user.clone()),
        tty: args.tty,
        stdin: args.interactive,
        limits: Limits {
            memory_bytes: args.memory.as_deref().map(memory_bytes).transpose()?,
            cpus: args.cpus,
            pids: args.pids_limit,
        },
        network,
        read_only: args.read_only,
        init: args.init,
        hostname: None,
        volumes: Vec::new(),
    })
}

/// The VM's memory: the workload's limit plus the guest's own needs.
pub(crate) fn vm_mib(spec: &ContainerSpec) -> u64 {
    spec.limits
        .memory_bytes
        .map(|b| (b >> 20) + GUEST_OVERHEAD_MIB)
        .unwrap_or(DEFAULT_VM_MIB)
}

/// vCPUs: enough for the CPU quota, at least one.
pub(crate) fn vm_cpus(spec: &ContainerSpec) -> u32 {
    spec.limits
        .cpus
        .map(|c| c.ceil().max(1.0) as u32)
        .unwrap_or(1)
}

/// Guest kernel: `$VMCTL_GUEST_KERNEL` or the cached build.
pub(crate) fn guest_kernel() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("VMCTL_GUEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| guest::disk::cache_root().join("kernel/current/vmlinux"));
    if !p.is_file() {
        bail!("guest kernel {} not found: build it with scripts/build-kernel.sh (or set VMCTL_GUEST_KERNEL)", p.display());
    }
    Ok(p)
}

/// Refuses a guest kernel whose build config (the `config` file next to it, when there is
/// one) lacks `option`: better than a boot that never answers.
pub(crate) fn require_kernel_option(kernel: &Path, option: &str, why: &str) -> anyhow::Result<()> {
    let Some(cfg) = kernel.parent().map(|d| d.join("config")) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(&cfg) else {
        return Ok(());
    };
    if !text.lines().any(|l| l.trim() == format!("{option}=y")) {
        bail!(
            "guest kernel {} was built without {option}, which {why} needs: add `{option}=y` to \
             guest/kernel/config and rebuild (scripts/build-kernel.sh)",
            kernel.display()
        );
    }
    Ok(())
}

/// Agent initramfs: `$VMCTL_AGENT_INITRD` or the cached build.
pub(crate) fn agent_initrd() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("VMCTL_AGENT_INITRD")
        .map(PathBuf::from)
        .unwrap_or_else(|| guest::disk::cache_root().join("agent/current/initramfs.cpio"));
    if !p.is_file() {
        bail!(
            "guest agent initramfs {} not found: build it with scripts/build-guest-image.sh (or set VMCTL_AGENT_INITRD)",
            p.display()
        );
    }
    Ok(p)
}

/// Seconds to wait for the agent's hello: `$VMCTL_BOOT_TIMEOUT` or `default`.
pub(crate) fn boot_timeout(default: u64) -> anyhow::Result<Duration> {
    match std::env::var("VMCTL_BOOT_TIMEOUT") {
        Ok(v) => Ok(Duration::from_secs(v.parse().with_context(|| {
            format!("VMCTL_BOOT_TIMEOUT={v:?}: expected seconds")
        })?)),
        Err(_) => Ok(Duration::from_secs(default)),
    }
}

/// The protocol version the host claims (tests set `VMCTL_AGENT_PROTOCOL` to check refusal).
pub(crate) fn protocol_version() -> u32 {
    std::env::var("VMCTL_AGENT_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(guest::protocol::VERSION)
}
/// The record of a new VM-backed run, created on disk.
pub(crate) fn new_record(
    args: &RunArgs,
    image: &Image,
    isolation: &str,
    cmd: &[String],
) -> anyhow::Result<Record> {
    let id = guest::registry::new_id();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("vm-{}", &id[..12]));
    if crate::ps::name_in_use(&name) {
        bail!("the name {name:?} is in use: remove it (vmctl rm {name}) or pick another --name");
    }
    let rec = Record {
        id,
        name,
        isolation: isolation.into(),
        image: image.name.clone(),
        command: cmd.to_vec(),
        pid: std::process::id() as i32,
        vmm_pid: 0,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        status: "running".into(),
        exit_code: None,
        network: None,
    };
    rec.create()?;
    Ok(rec)
}

/// Ends a run's record: removed with --rm, else kept as exited (socket removed).
pub(crate) fn finish_record(mut rec: Record, code: Option<i32>, rm: bool) {
    let dir = rec.dir();
    let _ = std::fs::remove_file(dir.join("agent.sock"));
    // The VM's network was released with the VM (vmnet::VmNet): nothing left for `vmctl rm`.
    rec.network = None;
    if rm {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        rec.status = "exited".into();
        rec.exit_code = code;
        let _ = rec.save();
    }
}

/// Last lines of the guest console, for error messages.
pub(crate) fn console_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        return String::new();
    }
    format!(
        "\nlast guest console lines ({}):\n{}",
        path.display(),
        tail.iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// What both VM-backed levels set up before starting their VMM: signal handling, the image and
/// its cached disk, the guest kernel (checked for the agent channel's option), the agent
/// initramfs, the VM record, the container spec, the volume disks and the bridge attachment.
/// On error nothing is left behind.
pub(crate) struct Prepared {
    pub signals: Signals,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: guest::disk::ImageDisk,
    pub rec: Record,
    pub spec: ContainerSpec,
    /// Volume disks, attached after the image disk (the guest's /dev/vdb, /dev/vdc, ...).
    pub volumes: Vec<HostDisk>,
    /// The VM's TAP on the bridge (`--network bridge`); released when dropped.
    pub net: Option<VmNet>,
}

/// Prepares `--isolation level`; `channel_option` is the kernel option the agent's channel needs
/// and `channel` says which channel that is (for the error).
pub(crate) fn prepare(
    args: &RunArgs,
    level: &str,
    channel_option: &str,
    channel: &str,
) -> anyhow::Result<Prepared> {
    let signals = Signals::install().context("block signals")?;
    if args.detach && args.interactive {
        bail!("-i with -d: a detached {level} run has no stdin to keep open; drop -i (or -d)");
    }
    let image = resolve_image(args.image.as_deref())?;
    let kernel = guest_kernel()?;
    require_kernel_option(
        &kernel,
        channel_option,
        &format!("--isolation {level} ({channel})"),
    )?;
    let initrd = agent_initrd()?;
    let netplan = crate::vmnet::plan(args)?;
    let vols = crate::volumes::parse(&args.volumes)?;
    let disk = guest::disk::ensure(&guest::disk::cache_root(), &image.id, &image.layers)?;
    let mut rec = new_record(args, &image, level, &args.command)?;
    let setup = |rec: &Record| -> anyhow::Result<_> {
        let mut spec = container_spec(args, &image, &rec.id[..12], disk.layers.clone())?;
        let (volumes, specs) = crate::volumes::materialise(&vols, &rec.dir(), 'b')?;
        spec.volumes = specs;
        let net = VmNet::attach(&netplan, &rec.id)?;
        Ok((spec, volumes, net))
    };
    match setup(&rec) {
        Ok((spec, volumes, net)) => {
            rec.network = net.as_ref().map(VmNet::record);
            if let Err(e) = rec.save() {
                finish_record(rec, None, true);
                return Err(e.into());
            }
            Ok(Prepared {
                signals,
                kernel,
                initrd,
                disk,
                rec,
                spec,
                volumes,
                net,
            })
        }
        Err(e) => {
            finish_record(rec, None, true);
            Err(e)
        }
    }
}

/// Runs a VM-backed level (`hosted::run_vm`, `microvm::run_vm`) in the foreground, or with
/// `-d` in a detached supervisor.
pub(crate) fn run_level(
    args: RunArgs,
    level: fn(RunArgs, &crate::detach::Notify) -> anyhow::Result<i32>,
) -> anyhow::Result<i32> {
    if args.detach {
        return crate::detach::run(|n| level(args, n));
    }
    level(args, &crate::detach::Notify::none())
}

/// A started VM (our VMM or QEMU) whose guest agent the supervising vmctl talks to.
pub(crate) trait GuestVm {
    /// The VMM process.
    fn vmm_pid(&self) -> i32;
    /// The guest console log, quoted in errors.
    fn console(&self) -> &Path;
    /// Waits for the agent and says hello.
    fn connect(&mut self, timeout: Duration) -> anyhow::Result<Client>;
    /// Ends the VM (after the guest's own shutdown, or by force) and removes what it made.
    fn teardown(&mut self);
}

/// Gives the guest its network configuration when the VM has a NIC, allowing the agent what
/// is left until `deadline` but at least `floor` (interface set-up is guest ring-0 work).
pub(crate) fn configure_network(
    client: &Client,
    net: Option<&VmNet>,
    deadline: Instant,
    floor: Duration,
) -> anyhow::Result<()> {
    if let Some(n) = net {
        let left = deadline.saturating_duration_since(Instant::now());
        client
            .network(n.guest_config(), left.max(floor))
            .context("configure the guest's network")?;
    }
    Ok(())
}

/// Waits up to `grace` for the VMM process to end by itself (the guest shut down), then
/// kills it; either way it is reaped.
pub(crate) fn reap_or_kill(child: &mut Child, grace: Duration) {
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !matches!(child.try_wait(), Ok(Some(_))) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// How long a level waits for what.
pub(crate) struct Waits {
    /// For the agent's hello.
    pub boot: Duration,
    /// For the requests of the run.
    pub requests: Timeouts,
    /// For the guest's shutdown after the workload ended.
    pub shutdown: Duration,
}

/// Supervises a launched VM to the end of its workload: records the VMM, tells a waiting
/// `vmctl run -d` the VM is launched, runs the session, tears the VM down and ends the record.
pub(crate) fn supervise(
    vm: &mut impl GuestVm,
    mut rec: Record,
    spec: ContainerSpec,
    signals: &Signals,
    notify: &crate::detach::Notify,
    rm: bool,
    waits: Waits,
) -> anyhow::Result<i32> {
    rec.vmm_pid = vm.vmm_pid();
    let _ = rec.save();
    signals.booting(rec.vmm_pid);
    notify.launched(&rec);
    let result = drive(vm, spec, signals, &rec, waits);
    vm.teardown();
    let code = result.as_ref().ok().copied();
    finish_record(rec, code, rm);
    result
}

fn drive(
    vm: &mut impl GuestVm,
    spec: ContainerSpec,
    signals: &Signals,
    rec: &Record,
    waits: Waits,
) -> anyhow::Result<i32> {
    let client = vm.connect(waits.boot).map_err(|e| {
        if signals.interrupted() {
            anyhow::anyhow!("interrupted while the guest was booting")
        } else {
            anyhow::anyhow!(
                "{e:#}; the VM was stopped{}",
                console_tail(vm.console(), 15)
            )
        }
    })?;
    tracing::info!(agent = client.agent(), "guest agent ready");
    // -it on a terminal: keys (Ctrl-C too) go to the workload's pty as they are typed.
    let _raw = (spec.tty && spec.stdin).then(crate::container::term::raw_stdin);
    let code = session::run(
        &client,
        spec,
        signals,
        Some(&rec.dir().join("output.log")),
        waits.requests,
    )
    .map_err(|e| anyhow::anyhow!("{e}{}", console_tail(vm.console(), 15)))?;
    let _ = client.shutdown(false, waits.shutdown);
    Ok(code)
}
