//! VM levels: boots of the same kernel and initramfs on vmctl's VMM (the standalone
//! `vmctl-vmm --no-api --config-file`, what `--isolation microvm` runs, or `vmctl run
//! --kernel` where vmctl-vmm is not installed next to vmctl) and on QEMU `-M microvm` (KVM and
//! TCG), timed from process start to the guest's boot marker, to the kernel's "Run /init" line
//! and to the first workload output (`VMCTL-GUEST-READY`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::isolated::parse_boot_line;
use super::model::MemSample;
use super::proc::{self, ProcMem, Stream};

/// The line the test initramfs' /init prints first.
pub const READY_LINE: &str = "VMCTL-GUEST-READY";
/// What /init prints once its shell (vmctl.shell=1) is about to start: the guest is idle.
const SHELL_LINE: &str = "vmctl-guest: shell";
/// How long to wait after the ready line for the shell line before reading memory.
const SHELL_WAIT: Duration = Duration::from_secs(20);
/// With I/O: how long to wait for the shell, and for each dd.
const IO_SHELL_WAIT: Duration = Duration::from_secs(300);

/// Our VMM's subject name: the standalone `vmctl-vmm` ...
pub const OURS_STANDALONE: &str = "vmctl-vmm";
/// ... or, where it is not installed next to vmctl, the same VMM inside `vmctl`.
pub const OURS_IN_VMCTL: &str = "vmctl run --kernel";

/// Which VMM boots the guest.
#[derive(Clone, Debug)]
pub enum Vmm {
    /// Ours: `vmctl-vmm --no-api --config-file` when `standalone`, else `vmctl run --kernel`
    /// (`exe` is that binary); `VMCTL_GUEST_MEM` set to `mem` when given (guest RAM backing:
    /// thp, prefault).
    Ours {
        exe: PathBuf,
        standalone: bool,
        mem: Option<String>,
    },
    /// `qemu-system-x86_64 -M microvm -accel ACCEL`.
    Qemu { path: PathBuf, accel: &'static str },
}

/// The guest every VMM boots.
#[derive(Clone, Debug)]
pub struct Guest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub mem_mib: u64,
    pub timeout: Duration,
    /// A raw disk attached as virtio-blk (/dev/vda), for the I/O level.
    pub disk: Option<PathBuf>,
    /// MiB the guest reads and writes of it.
    pub io_mib: u64,
}

/// Guest command line arguments of the bench: /init starts an idle shell after its ready line.
pub const GUEST_ARGS: &str = "vmctl.shell=1";

/// The full guest command line QEMU gets: what vmctl composes for its own guests.
pub fn full_cmdline() -> String {
    vmm::cmdline::compose(Some(GUEST_ARGS), vmm::cmdline::host_is_pvm())
}

/// One boot, times from process start.
#[derive(Clone, Debug, Default)]
pub struct BootSample {
    pub first_output: Option<Duration>,
    pub run_init: Option<Duration>,
    /// When the VMM's boot-time line arrived (ours only).
    pub marker_seen: Option<Duration>,
    pub ready: Duration,
    /// VMM process start until the VM started (vCPUs about to run), as the VMM reports it.
    pub vmm_setup_ms: Option<f64>,
    /// VM start until the guest's boot marker, as the VMM reports it.
    pub kernel_ms: Option<f64>,
    pub mem: Option<ProcMem>,
    /// Every console and VMM line with its arrival time (ms since process start).
    pub log: Vec<(f64, String)>,
    /// Guest sequential read/write through virtio-blk, or why it failed.
    pub io: Option<Result<super::io::Throughput, String>>,
}

impl Vmm {
    /// Ours for `vmctl` at `vmctl`: the standalone VMM installed next to it when there is one.
    pub fn ours(vmctl: &Path, mem: Option<String>) -> Vmm {
        match crate::microvm::standalone_vmm(vmctl) {
            Some(exe) => Vmm::Ours {
                exe,
                standalone: true,
                mem,
            },
            None => Vmm::Ours {
                exe: vmctl.to_path_buf(),
                standalone: false,
                mem,
            },
        }
    }

    /// The subject's name in the report.
    pub fn name(&self) -> String {
        match self {
            Vmm::Ours {
                standalone, mem, ..
            } => {
                let base = if *standalone {
                    OURS_STANDALONE
                } else {
                    OURS_IN_VMCTL
                };
                match mem {
                    Some(m) => format!("{base} (mem={m})"),
                    None => base.to_string(),
                }
            }
            Vmm::Qemu { accel, .. } => format!("qemu-{accel}"),
        }
    }

    /// The command that boots `g`, and the directory holding its configuration file (kept
    /// until the VMM has exited).
    fn command(&self, g: &Guest) -> anyhow::Result<(Command, Option<tempfile::TempDir>)> {
        Ok(match self {
            Vmm::Ours {
                exe,
                standalone,
                mem,
            } => {
                let mut c = Command::new(exe);
                if let Some(m) = mem {
                    c.env(vmm::vstate::memory::BACKING_ENV, m);
                }
                if *standalone {
                    let dir = tempfile::Builder::new()
                        .prefix("vmctl-bench-vmm-")
                        .tempdir()?;
                    let cfg = dir.path().join("config.json");
                    std::fs::write(&cfg, serde_json::to_vec(&vmm_config(g)?)?)
                        .with_context(|| format!("write {}", cfg.display()))?;
                    c.arg("--no-api").arg("--config-file").arg(&cfg);
                    (c, Some(dir))
                } else {
                    c.arg("run")
                        .arg("--kernel")
                        .arg(&g.kernel)
                        .arg("--initrd")
                        .arg(&g.initrd)
                        .args(["--vcpus", "1", "--memory", &g.mem_mib.to_string()])
                        .args(["--cmdline", GUEST_ARGS]);
                    if let Some(d) = &g.disk {
                        c.arg("--disk").arg(d);
                    }
                    (c, None)
                }
            }
            Vmm::Qemu { path, accel } => {
                let mut c = Command::new(path);
                // No ACPI (the guest kernel has none): QEMU then announces virtio-mmio devices on
                // the command line, as vmctl does.
                c.args(["-M", "microvm,acpi=off", "-accel", accel]);
                if *accel == "kvm" {
                    // Nested PVM refuses IA32_ARCH_CAPABILITIES (MSR 0x10a), which QEMU sets
                    // for `-cpu host`; our VMM does not set it either.
                    let cpu = if vmm::cmdline::host_is_pvm() {
                        "host,-arch-capabilities"
                    } else {
                        "host"
                    };
                    c.args(["-cpu", cpu]);
                }
                c.args(["-m", &g.mem_mib.to_string(), "-smp", "1"])
                    .args(["-nodefaults", "-no-user-config", "-display", "none"])
                    .args(["-serial", "stdio", "-no-reboot"])
                    .arg("-kernel")
                    .arg(&g.kernel)
                    .arg("-initrd")
                    .arg(&g.initrd)
                    .arg("-append")
                    .arg(full_cmdline());
                if let Some(d) = &g.disk {
                    let drive = format!("id=d0,file={},format=raw,if=none", d.display());
                    c.args(["-drive", &drive, "-device", "virtio-blk-device,drive=d0"]);
                }
                (c, None)
            }
        })
    }
}

/// The `vmctl-vmm --config-file` configuration for `g`: the same flags-to-API conversion
/// `vmctl run --kernel` uses.
fn vmm_config(g: &Guest) -> anyhow::Result<api::VmResources> {
    let disks = g.disk.iter().map(|d| devices::virtio::block::BlockConfig {
        path: d.clone(),
        read_only: false,
        id: "disk0".into(),
        rate_limiter: None,
        root: false,
    });
    crate::vmspec::VmFlags {
        kernel: g.kernel.clone(),
        initrd: Some(g.initrd.clone()),
        cmdline: Some(GUEST_ARGS.into()),
        vcpus: 1,
        memory: Some(g.mem_mib.to_string()),
        disks: disks.collect(),
        nets: Vec::new(),
        vsock: None,
    }
    .build_resources()
}

/// Boots `guest` on `vmm` once, until the ready line; with `mem`, waits until the guest idles
/// in its shell and reads the VMM process' memory; with `io` (and a disk), then runs the
/// sequential dd pair in the guest. The VM is killed afterwards.
pub fn boot_once(vmm: &Vmm, g: &Guest, mem: bool, io: bool) -> anyhow::Result<BootSample> {
    let io = io && g.disk.is_some();
    let shell_wait = if io { IO_SHELL_WAIT } else { SHELL_WAIT };
    let (mut cmd, _cfg_dir) = vmm.command(g)?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut stdin = child.stdin.take(); // kept open: the guest shell waits on it
    let rx = proc::watch_lines(&mut child);
    let deadline = t0 + g.timeout;
    let mut s = BootSample::default();
    let mut ready = None;
    let mut shell = false;
    let mut tail: Vec<String> = Vec::new();
    let mut open_streams = 2;
    let result = loop {
        let wait_for = if ready.is_some() && (mem || io) {
            // After ready: a little more for the idle shell (memory is read either way).
            ready.unwrap_or(t0) + shell_wait
        } else {
            deadline
        };
        let left = wait_for.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, stream, Some(line))) => {
                let since = at.duration_since(t0);
                let tag = if stream == Stream::Stdout {
                    ""
                } else {
                    "[vmm] "
                };
                s.log
                    .push((since.as_secs_f64() * 1000.0, format!("{tag}{line}")));
                if stream == Stream::Stdout && s.first_output.is_none() {
                    s.first_output = Some(since);
                }
                if line.contains("Run /init") && s.run_init.is_none() {
                    s.run_init = Some(since);
                }
                if let Some((proc_ms, vm_ms)) = parse_boot_line(&line) {
                    s.marker_seen = Some(since);
                    s.vmm_setup_ms = Some(proc_ms - vm_ms);
                    s.kernel_ms = Some(vm_ms);
                }
                if line.trim() == READY_LINE && ready.is_none() {
                    ready = Some(at);
                    s.ready = since;
                    if !mem && !io {
                        break Ok(());
                    }
                }
                if line.contains(SHELL_LINE) {
                    shell = true;
                    break Ok(());
                }
                tail.push(line);
                if tail.len() > 15 {
                    tail.remove(0);
                }
            }
            Ok((_, _, None)) => {
                open_streams -= 1;
                if open_streams == 0 {
                    break Err("the VMM exited");
                }
            }
            Err(RecvTimeoutError::Timeout) if ready.is_some() => break Ok(()),
            Err(_) => break Err("timed out"),
        }
    };
    if result.is_ok() && mem {
        if shell {
            std::thread::sleep(Duration::from_millis(300));
        }
        s.mem = proc::proc_mem(child.id() as i32, Some(g.mem_mib * 1024)).ok();
    }
    if result.is_ok() && io {
        s.io = Some(match (shell, stdin.as_mut()) {
            (true, Some(i)) => {
                super::io::in_guest(i, &rx, g.io_mib, Instant::now() + IO_SHELL_WAIT)
                    .map_err(|e| format!("{e:#}"))
            }
            _ => Err("the guest shell did not start".to_string()),
        });
    }
    proc::kill_child(&mut child);
    match result {
        Ok(()) => Ok(s),
        Err(why) if ready.is_some() => {
            tracing::warn!("after the ready line: {why}");
            Ok(s)
        }
        Err(why) => bail!(
            "{why} before {READY_LINE} after {:.1} s; last output:\n  | {}",
            t0.elapsed().as_secs_f64(),
            tail.join("\n  | ")
        ),
    }
}

/// A VM left running idle (its guest shell waits on the open stdin); killed on drop.
pub struct IdleVm {
    child: std::process::Child,
    _stdin: Option<std::process::ChildStdin>,
    _cfg_dir: Option<tempfile::TempDir>,
}

impl Drop for IdleVm {
    fn drop(&mut self) {
        proc::kill_child(&mut self.child);
    }
}

/// Starts a VM and returns once its guest printed the ready line, or fails at `deadline`.
pub fn start_idle(vmm: &Vmm, g: &Guest, deadline: Instant) -> anyhow::Result<IdleVm> {
    let (mut cmd, cfg_dir) = vmm.command(g)?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let stdin = child.stdin.take();
    let rx = proc::watch_lines(&mut child);
    let mut vm = IdleVm {
        child,
        _stdin: stdin,
        _cfg_dir: cfg_dir,
    };
    let mut open_streams = 2;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, _, Some(line))) if line.trim() == READY_LINE => return Ok(vm),
            Ok((_, _, Some(_))) => {}
            Ok((_, _, None)) => {
                open_streams -= 1;
                if open_streams == 0 {
                    let status = vm.child.wait().ok();
                    bail!("the VMM exited before the guest was ready ({status:?})");
                }
            }
            Err(_) => bail!("not ready within the budget"),
        }
    }
}

/// A memory sample of a VMM from a boot's reading.
pub fn mem_sample(subject: &str, g: &Guest, m: &ProcMem) -> MemSample {
    let guest = m.guest_rss_kib.unwrap_or(0);
    let guest_pss = m.guest_pss_kib.unwrap_or(0);
    MemSample {
        subject: subject.into(),
        what: format!(
            "VMM process with an idle guest ({} MiB RAM){}",
            g.mem_mib,
            if m.guest_rss_kib.is_none() {
                "; guest RAM mapping not found, overhead = whole process"
            } else {
                ""
            }
        ),
        rss_kib: m.rss_kib,
        pss_kib: m.pss_kib,
        guest_rss_kib: m.guest_rss_kib,
        guest_mib: Some(g.mem_mib),
        overhead_rss_kib: m.rss_kib.saturating_sub(guest),
        overhead_pss_kib: m.pss_kib.saturating_sub(guest_pss),
    }
}

/// The default guest kernel and initramfs (as tests/src/linux.rs and scripts/lib.sh find them).
pub fn default_artefacts() -> (PathBuf, PathBuf) {
    let cache = std::env::var_os("VMCTL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                        .join(".cache")
                });
            base.join("vmctl")
        });
    let kernel = std::env::var_os("VMCTL_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("kernel/current/vmlinux"));
    let initrd = std::env::var_os("VMCTL_INITRD")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("initramfs/current/initramfs.cpio"));
    (kernel, initrd)
}
