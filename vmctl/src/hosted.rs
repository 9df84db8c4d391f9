//! `vmctl run --isolation hosted`: the workload's container runs inside a Linux guest (the
//! project kernel, the agent initramfs, the image as a read-only virtio-blk disk) under QEMU
//! `-M microvm`, with the agent reached over virtio-serial. KVM is used when it helps, TCG
//! otherwise (`VMCTL_ACCEL=kvm|tcg|auto`): on a host whose KVM is nested through PVM a guest
//! kernel is ~1500x slower in ring 0 and TCG boots in seconds.
//!
//! The parts shared with `--isolation microvm` (image, disk, spec, record) are `pub(crate)`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use guest::client::Client;
use guest::protocol::{ContainerSpec, Limits, NetworkMode};
use guest::registry::Record;
use guest::session::{self, Signals, Timeouts};

use crate::cli::RunArgs;

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
    let network = match args.network.as_str() {
        "none" => NetworkMode::None,
        "bridge" | "host" => NetworkMode::Guest,
        other => bail!("--network {other:?}: expected none, host or bridge"),
    };
    if !args.volumes.is_empty() {
        bail!("--volume is not supported with VM isolation yet");
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

/// `VMCTL_ACCEL`: kvm, tcg or auto (KVM when /dev/kvm opens and is not nested through PVM).
fn accel() -> anyhow::Result<Accel> {
    let v = std::env::var("VMCTL_ACCEL").unwrap_or_else(|_| "auto".into());
    match v.as_str() {
        "kvm" => Ok(Accel::Kvm),
        "tcg" => Ok(Accel::Tcg),
        "auto" | "" => {
            let kvm = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
            Ok(if kvm && !vmm::cmdline::host_is_pvm() {
                Accel::Kvm
            } else {
                Accel::Tcg
            })
        }
        other => bail!("VMCTL_ACCEL={other:?}: expected kvm, tcg or auto"),
    }
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
    if guest::registry::find(&name).is_ok() {
        bail!("the name {name:?} is in use by another VM: remove it (vmctl rm {name}) or pick another --name");
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
    };
    rec.create()?;
    Ok(rec)
}

/// Ends a run's record: removed with --rm, else kept as exited (socket removed).
pub(crate) fn finish_record(mut rec: Record, code: Option<i32>, rm: bool) {
    let dir = rec.dir();
    let _ = std::fs::remove_file(dir.join("agent.sock"));
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
/// initramfs, the VM record and the container spec. On error nothing is left behind.
pub(crate) struct Prepared {
    pub signals: Signals,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: guest::disk::ImageDisk,
    pub rec: Record,
    pub spec: ContainerSpec,
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
    if args.detach {
        bail!("--detach is not supported with --isolation {level} yet");
    }
    let image = resolve_image(args.image.as_deref())?;
    let kernel = guest_kernel()?;
    require_kernel_option(
        &kernel,
        channel_option,
        &format!("--isolation {level} ({channel})"),
    )?;
    let initrd = agent_initrd()?;
    let disk = guest::disk::ensure(&guest::disk::cache_root(), &image.id, &image.layers)?;
    let rec = new_record(args, &image, level, &args.command)?;
    match container_spec(args, &image, &rec.id[..12], disk.layers.clone()) {
        Ok(spec) => Ok(Prepared {
            signals,
            kernel,
            initrd,
            disk,
            rec,
            spec,
        }),
        Err(e) => {
            finish_record(rec, None, true);
            Err(e)
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let Prepared {
        signals,
        kernel,
        initrd,
        disk,
        rec,
        spec,
    } = prepare(
        &args,
        "hosted",
        "CONFIG_VIRTIO_CONSOLE",
        "the agent's virtio-serial channel",
    )?;
    let mut vm = match Qemu::start(
        &rec.dir(),
        &kernel,
        &initrd,
        &disk.path,
        vm_mib(&spec),
        vm_cpus(&spec),
    ) {
        Ok(vm) => vm,
        Err(e) => {
            finish_record(rec, None, true);
            return Err(e);
        }
    };
    let mut rec = rec;
    rec.vmm_pid = vm.child.id() as i32;
    let _ = rec.save();
    signals.booting(rec.vmm_pid);
    let result = drive(&mut vm, spec, &signals, &rec);
    vm.teardown();
    let code = result.as_ref().ok().copied();
    finish_record(rec, code, args.rm);
    result
}

fn drive(
    vm: &mut Qemu,
    spec: ContainerSpec,
    signals: &Signals,
    rec: &Record,
) -> anyhow::Result<i32> {
    let timeout = boot_timeout(if vm.accel == Accel::Kvm { 300 } else { 60 })?;
    let client = vm.connect(timeout).map_err(|e| {
        if signals.interrupted() {
            anyhow::anyhow!("interrupted while the guest was booting")
        } else {
            anyhow::anyhow!("{e:#}; the VM was stopped{}", console_tail(&vm.console, 15))
        }
    })?;
    tracing::info!(agent = client.agent(), "guest agent ready");
    let code = session::run(
        &client,
        spec,
        signals,
        Some(&rec.dir().join("output.log")),
        Timeouts::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}{}", console_tail(&vm.console, 15)))?;
    let _ = client.shutdown(false, Duration::from_secs(5));
    Ok(code)
}

/// A running QEMU.
struct Qemu {
    child: Child,
    sock: PathBuf,
    console: PathBuf,
    accel: Accel,
}

impl Qemu {
    fn start(
        dir: &Path,
        kernel: &Path,
        initrd: &Path,
        disk: &Path,
        mem_mib: u64,
        cpus: u32,
    ) -> anyhow::Result<Qemu> {
        let accel = accel()?;
        let sock = dir.join("agent.sock");
        let console = dir.join("console.log");
        let pvm = accel == Accel::Kvm && vmm::cmdline::host_is_pvm();
        // QEMU's microvm has no i8042: a triple fault is the restart that makes `-no-reboot`
        // end QEMU (the agent restarts the guest to end it).
        let mut cmdline = vmm::cmdline::compose(Some("quiet reboot=t"), pvm);
        if let Ok(extra) = std::env::var("VMCTL_GUEST_CMDLINE") {
            cmdline = format!("{cmdline} {extra}");
        }
        let qemu = std::env::var("VMCTL_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let mut cmd = Command::new(&qemu);
        cmd.args(["-M", "microvm,acpi=off,x-option-roms=off,rtc=off"]);
        match accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
        cmd.args(["-m", &format!("{mem_mib}M"), "-smp", &cpus.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", &cmdline])
            .args(["-device", "virtio-serial-device"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=agent,path={},server=on,wait=off",
                sock.display()
            ))
            .args([
                "-device",
                &format!(
                    "virtserialport,chardev=agent,name={}",
                    guest::protocol::SERIAL_PORT_NAME
                ),
            ])
            .arg("-drive")
            .arg(format!(
                "id=image,file={},format=raw,if=none,readonly=on",
                disk.display()
            ))
            .args(["-device", "virtio-blk-device,drive=image"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl with integer arguments between fork and exec: QEMU dies with us.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        tracing::debug!("starting {cmd:?}");
        let child = cmd.spawn().with_context(|| {
            format!("start {qemu} (install it: apt-get install qemu-system-x86)")
        })?;
        Ok(Qemu {
            child,
            sock,
            console,
            accel,
        })
    }

    /// Waits for the agent socket and the agent's hello.
    fn connect(&mut self, timeout: Duration) -> anyhow::Result<Client> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "QEMU exited ({st}) before the guest came up: {}",
                    self.stderr()
                );
            }
            match std::os::unix::net::UnixStream::connect(&self.sock) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => bail!(
                    "QEMU did not open the agent socket {}: {e}",
                    self.sock.display()
                ),
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let client =
            Client::handshake_version(stream, left, protocol_version()).map_err(|e| match self
                .child
                .try_wait()
            {
                Ok(Some(st)) => anyhow::anyhow!("{e} (QEMU exited: {st})"),
                _ => anyhow::Error::new(e),
            })?;
        Ok(client)
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut s);
        }
        s.trim().to_string()
    }

    /// Waits briefly for the guest's own power-off, then kills QEMU.
    fn teardown(&mut self) {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
