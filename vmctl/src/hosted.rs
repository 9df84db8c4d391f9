//! `vmctl run --isolation hosted`: the workload's container runs inside a Linux guest (the
//! project kernel, the agent initramfs, the image as a read-only virtio-blk disk) under QEMU
//! `-M microvm`, with the agent reached over virtio-serial. KVM is used when it helps, TCG
//! otherwise (`VMCTL_ACCEL=kvm|tcg|auto`): on a host whose KVM is nested through PVM a guest
//! kernel is ~1500x slower in ring 0 and TCG boots in seconds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use guest::client::Client;
use guest::session::Timeouts;

use crate::cli::RunArgs;
use crate::guestvm::{
    boot_timeout, configure_network, finish_record, prepare, protocol_version, reap_or_kill,
    supervise, vm_cpus, vm_mib, GuestVm, Prepared, Waits,
};
use crate::vmnet::VmNet;
use crate::volumes::HostDisk;

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

/// Runs the workload in a VM of this level (`notify` tells a waiting `vmctl run -d`).
pub(crate) fn run_vm(args: RunArgs, notify: &crate::detach::Notify) -> anyhow::Result<i32> {
    let Prepared {
        signals,
        kernel,
        initrd,
        disk,
        rec,
        spec,
        volumes,
        net,
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
        &volumes,
        net,
    ) {
        Ok(vm) => vm,
        Err(e) => {
            finish_record(rec, None, true);
            return Err(e);
        }
    };
    let waits = Waits {
        boot: boot_timeout(if vm.accel == Accel::Kvm { 300 } else { 60 })?,
        requests: Timeouts::default(),
        shutdown: Duration::from_secs(5),
    };
    supervise(&mut vm, rec, spec, &signals, notify, args.rm, waits)
}

/// A running QEMU.
struct Qemu {
    child: Child,
    sock: PathBuf,
    console: PathBuf,
    accel: Accel,
    /// The NIC's bridge attachment, released at teardown.
    net: Option<VmNet>,
}

impl Qemu {
    #[allow(clippy::too_many_arguments)] // the VM's parts, each used once
    fn start(
        dir: &Path,
        kernel: &Path,
        initrd: &Path,
        disk: &Path,
        mem_mib: u64,
        cpus: u32,
        volumes: &[HostDisk],
        net: Option<VmNet>,
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
            // Nested PVM refuses IA32_ARCH_CAPABILITIES (MSR 0x10a), which QEMU sets for
            // `-cpu host` (the bench's QEMU runs the same way).
            Accel::Kvm if pvm => cmd.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
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
            .args(["-device", "virtio-blk-device,drive=image"]);
        for (i, v) in volumes.iter().enumerate() {
            cmd.arg("-drive")
                .arg(format!(
                    "id=volume{i},file={},format=raw,if=none{}",
                    v.path.display(),
                    if v.read_only { ",readonly=on" } else { "" }
                ))
                .args(["-device", &format!("virtio-blk-device,drive=volume{i}")]);
        }
        if let Some(n) = &net {
            cmd.arg("-netdev")
                .arg(format!(
                    "tap,id=n0,ifname={},script=no,downscript=no",
                    n.tap
                ))
                .args([
                    "-device",
                    &format!(
                        "virtio-net-device,netdev=n0,mac={}",
                        api::types::MacAddr(n.mac)
                    ),
                ]);
        }
        cmd.stdin(Stdio::null())
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
            net,
        })
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut s);
        }
        s.trim().to_string()
    }
}

impl GuestVm for Qemu {
    fn vmm_pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn console(&self) -> &Path {
        &self.console
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
        configure_network(
            &client,
            self.net.as_ref(),
            deadline,
            Duration::from_secs(10),
        )?;
        Ok(client)
    }

    /// Waits briefly for the guest's own power-off, then kills QEMU and releases the NIC.
    fn teardown(&mut self) {
        reap_or_kill(&mut self.child, Duration::from_secs(5));
        drop(self.net.take());
    }
}
