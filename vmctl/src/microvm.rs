//! `vmctl run --isolation microvm`: the workload's container runs inside a Linux guest on
//! vmctl's own KVM VMM: the project kernel, the agent initramfs, the image as a read-only
//! virtio-blk disk, and the agent reached over virtio-vsock (Firecracker's Unix socket
//! protocol: `CONNECT 1024`). The VMM runs as a child process (`vmctl run --kernel ...`), so
//! this process supervises it exactly as it supervises QEMU for `--isolation hosted`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use guest::client::{self, Client, ClientError};
use guest::protocol::{ContainerSpec, VSOCK_PORT};
use guest::registry::Record;
use guest::session::{self, Signals, Timeouts};

use crate::cli::RunArgs;
use crate::hosted::{
    boot_timeout, console_tail, finish_record, prepare, protocol_version, vm_cpus, vm_mib, Prepared,
};

/// The guest's vsock context id (any value >= 3; each VM has its own device).
const GUEST_CID: u32 = 3;

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let Prepared {
        signals,
        kernel,
        initrd,
        disk,
        mut rec,
        spec,
    } = prepare(
        &args,
        "microvm",
        "CONFIG_VIRTIO_VSOCKETS",
        "the agent's vsock channel",
    )?;
    let mut vm = match Microvm::start(&rec.dir(), &kernel, &initrd, &disk.path, &spec) {
        Ok(vm) => vm,
        Err(e) => {
            finish_record(rec, None, true);
            return Err(e);
        }
    };
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
    vm: &mut Microvm,
    spec: ContainerSpec,
    signals: &Signals,
    rec: &Record,
) -> anyhow::Result<i32> {
    // Guest ring 0 is emulated on nested-PVM hosts: boots take tens of seconds there.
    let timeout = boot_timeout(if vmm::cmdline::host_is_pvm() { 600 } else { 60 })?;
    let client = vm.connect(timeout).map_err(|e| {
        if signals.interrupted() {
            anyhow::anyhow!("interrupted while the guest was booting")
        } else {
            anyhow::anyhow!("{e:#}; the VM was stopped{}", console_tail(&vm.console, 15))
        }
    })?;
    tracing::info!(agent = client.agent(), "guest agent ready");
    // Container set-up is ring-0 work too: minutes on a loaded nested-PVM host.
    let timeouts = Timeouts {
        create: timeout,
        start: timeout,
    };
    let code = session::run(
        &client,
        spec,
        signals,
        Some(&rec.dir().join("output.log")),
        timeouts,
    )
    .map_err(|e| anyhow::anyhow!("{e}{}", console_tail(&vm.console, 15)))?;
    let _ = client.shutdown(false, Duration::from_secs(10));
    Ok(code)
}

/// A running VMM child process.
struct Microvm {
    child: Child,
    uds: PathBuf,
    console: PathBuf,
}

impl Microvm {
    fn start(
        dir: &Path,
        kernel: &Path,
        initrd: &Path,
        disk: &Path,
        spec: &ContainerSpec,
    ) -> anyhow::Result<Microvm> {
        let uds = dir.join("vsock.sock");
        let console = dir.join("console.log");
        let log = std::fs::File::create(&console)
            .with_context(|| format!("create {}", console.display()))?;
        let mut cmdline = "quiet vmctl.boot_marker=1 vmctl.transport=vsock".to_string();
        if vmm::cmdline::host_is_pvm() {
            // Workaround seen only on KVM nested through PVM: with glibc's rseq registration on,
            // the agent intermittently found 8 bytes of a fresh heap buffer zeroed (the shape of
            // the kernel's rseq cpu_id_start/cpu_id update landing on stale memory), e.g. a
            // cgroup path read as "\0\0\0\0\0\0\0\0cgroup/...". The kernel hands unknown
            // `KEY=VALUE` arguments to init as environment, so this turns rseq off in the agent.
            cmdline.push_str(" GLIBC_TUNABLES=glibc.pthread.rseq=0");
        }
        if let Ok(extra) = std::env::var("VMCTL_GUEST_CMDLINE") {
            cmdline = format!("{cmdline} {extra}");
        }
        let exe = std::env::current_exe().context("find the vmctl executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(["run", "--kernel"])
            .arg(kernel)
            .arg("--initrd")
            .arg(initrd)
            .args(["--cmdline", &cmdline])
            .args([
                "--memory",
                &vm_mib(spec).to_string(),
                "--vcpus",
                &vm_cpus(spec).to_string(),
            ])
            .arg("--disk")
            .arg(format!("{},ro", disk.display()))
            .arg("--vsock")
            .arg(format!("cid={GUEST_CID},uds={}", uds.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl with integer arguments between fork and exec: the VMM dies with us.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().context("start the VMM (vmctl run --kernel)")?;
        Ok(Microvm {
            child,
            uds,
            console,
        })
    }

    /// Connects to the agent through the VMM's vsock socket, retrying until the agent
    /// listens, and says hello.
    fn connect(&mut self, timeout: Duration) -> anyhow::Result<Client> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!("the VMM exited ({st}) before the guest agent answered");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    what: "the hello".into(),
                    secs: timeout.as_secs(),
                }
                .into());
            }
            let stream = match client::connect_vsock(
                &self.uds,
                VSOCK_PORT,
                left.min(Duration::from_secs(5)),
            ) {
                Ok(s) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            return Ok(Client::handshake_version(stream, left, protocol_version())?);
        }
    }

    /// Waits for the guest's own reset, then kills the VMM.
    fn teardown(&mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.uds);
        // Per-port sockets the VMM made for guest-initiated connections: `<uds>_<port>`.
        if let (Some(dir), Some(name)) = (self.uds.parent(), self.uds.file_name()) {
            let prefix = format!("{}_", name.to_string_lossy());
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}
