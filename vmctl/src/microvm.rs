//! `vmctl run --isolation microvm`: the workload's container runs inside a Linux guest on
//! vmctl's own KVM VMM: the project kernel, the agent initramfs, the image as a read-only
//! virtio-blk disk, volumes as more disks, a virtio-net NIC on the bridge, and the agent
//! reached over virtio-vsock (Firecracker's Unix socket protocol: `CONNECT 1024`).
//!
//! The VMM is a bare child process (`vmctl-vmm --api-sock DIR/api.sock` when installed next to
//! vmctl, else `vmctl vmm`, the same code) that this process configures through the
//! Firecracker-compatible REST API exactly as a Firecracker user would: PUT /boot-source,
//! /machine-config, /drives/ID, /vsock, /network-interfaces/eth0, then PUT /actions
//! InstanceStart. This process supervises
//! it exactly as it supervises QEMU for `--isolation hosted`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use api::types as wire;
use api::ApiClient;
use guest::client::{self, Client, ClientError};
use guest::protocol::{ContainerSpec, VSOCK_PORT};
use guest::registry::Record;
use guest::session::Timeouts;

use crate::cli::RunArgs;
use crate::guestvm::{
    boot_timeout, configure_network, console_tail, finish_record, prepare, protocol_version,
    reap_or_kill, supervise, vm_cpus, vm_mib, GuestVm, Prepared, Waits,
};
use crate::vmnet::VmNet;
use crate::vmspec::path_str;
use crate::volumes::HostDisk;

/// The guest's vsock context id (any value >= 3; each VM has its own device).
const GUEST_CID: u32 = 3;

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
        "microvm",
        "CONFIG_VIRTIO_VSOCKETS",
        "the agent's vsock channel",
    )?;
    let parts = Parts {
        kernel: &kernel,
        initrd: &initrd,
        disk: &disk.path,
        volumes: &volumes,
    };
    let mut vm = match Microvm::start(&rec, parts, &spec, net) {
        Ok(vm) => vm,
        Err(e) => {
            finish_record(rec, None, true);
            return Err(e);
        }
    };
    // Guest ring 0 is emulated on nested-PVM hosts: boots take tens of seconds there, and
    // container set-up is ring-0 work too (minutes on a loaded nested-PVM host).
    let boot = boot_timeout(if vmm::cmdline::host_is_pvm() { 600 } else { 60 })?;
    let waits = Waits {
        boot,
        requests: Timeouts {
            create: boot,
            start: boot,
        },
        shutdown: Duration::from_secs(10),
    };
    supervise(&mut vm, rec, spec, &signals, notify, args.rm, waits)
}

/// The VMM process of `--isolation microvm` (hidden `vmctl vmm`): a bare VMM serving the
/// Firecracker-compatible API on `api_sock`, guest console on stdout; the same code as the
/// `vmctl-vmm` binary.
pub fn serve_vmm(api_sock: PathBuf, id: String) -> anyhow::Result<i32> {
    let opts = api::runner::VmmOptions {
        id,
        api_sock: Some(api_sock),
        ..api::runner::VmmOptions::new()
    };
    let backend =
        vmm::api_backend::KvmBackend::new(Some(Arc::new(Mutex::new(std::io::stdout()))), false);
    Ok(api::runner::run_vmm(opts, backend)?)
}

/// The standalone `vmctl-vmm` installed next to the vmctl at `exe`, if there is one: a smaller
/// binary than vmctl, so less resident text per VM (docs/bench.md); without it the microVM
/// runs vmctl's hidden `vmm` subcommand, the same code.
pub(crate) fn standalone_vmm(exe: &Path) -> Option<PathBuf> {
    let vmm = exe.with_file_name("vmctl-vmm");
    vmm.is_file().then_some(vmm)
}

/// The host files of a microVM.
struct Parts<'a> {
    kernel: &'a Path,
    initrd: &'a Path,
    disk: &'a Path,
    volumes: &'a [HostDisk],
}

/// A running VMM child process.
struct Microvm {
    child: Child,
    uds: PathBuf,
    api_sock: PathBuf,
    console: PathBuf,
    /// The NIC's bridge attachment, released at teardown.
    net: Option<VmNet>,
}

/// The guest kernel command line (the VMM adds console, device and PVM arguments).
fn guest_cmdline() -> String {
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
    cmdline
}

/// `PUT path` with a JSON body; an API error reads as the VMM's `fault_message`.
fn put(api: &ApiClient, path: &str, body: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_value(body)?;
    api.put(path, &json).map_err(|e| match e {
        api::ClientError::Api { message, .. } => {
            anyhow::anyhow!("the VMM refused PUT {path}: {message}")
        }
        e => anyhow::anyhow!("PUT {path}: {e}"),
    })
}

impl Microvm {
    /// Starts the bare VMM, configures it through its API and boots it. On error the VMM is
    /// killed (and `net` released) before returning.
    fn start(
        rec: &Record,
        parts: Parts,
        spec: &ContainerSpec,
        net: Option<VmNet>,
    ) -> anyhow::Result<Microvm> {
        let dir = rec.dir();
        let uds = dir.join("vsock.sock");
        let api_sock = dir.join("api.sock");
        let console = dir.join("console.log");
        let log = std::fs::File::create(&console)
            .with_context(|| format!("create {}", console.display()))?;
        let exe = std::env::current_exe().context("find the vmctl executable")?;
        let mut cmd = match standalone_vmm(&exe) {
            Some(vmm) => Command::new(vmm),
            None => {
                let mut c = Command::new(exe);
                c.arg("vmm");
                c
            }
        };
        cmd.arg("--api-sock")
            .arg(&api_sock)
            .args(["--id", &rec.name])
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
        let child = cmd
            .spawn()
            .context("start the VMM (vmctl-vmm / vmctl vmm)")?;
        let mut vm = Microvm {
            child,
            uds,
            api_sock,
            console,
            net,
        };
        if let Err(e) = vm.configure(&parts, spec) {
            vm.kill();
            return Err(e.context("the VM was stopped"));
        }
        Ok(vm)
    }

    /// Waits for the API socket, then configures and boots the VM through it.
    fn configure(&mut self, parts: &Parts, spec: &ContainerSpec) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.api_sock).is_err() {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "the VMM exited ({st}) before serving its API{}",
                    console_tail(&self.console, 15)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the VMM did not open its API socket {}",
                    self.api_sock.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // InstanceStart loads the kernel and starts the vCPUs: slow on a loaded nested host.
        let api = ApiClient::new(&self.api_sock).with_timeout(Duration::from_secs(300));
        put(
            &api,
            "/boot-source",
            &wire::BootSourceConfig {
                kernel_image_path: path_str(parts.kernel)?,
                initrd_path: Some(path_str(parts.initrd)?),
                boot_args: Some(guest_cmdline()),
            },
        )?;
        put(
            &api,
            "/machine-config",
            &wire::MachineConfig {
                vcpu_count: vm_cpus(spec).min(u32::from(u8::MAX)) as u8,
                mem_size_mib: vm_mib(spec) as usize,
                ..Default::default()
            },
        )?;
        let drives = std::iter::once(("image".to_string(), parts.disk, true)).chain(
            parts
                .volumes
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("volume{i}"), v.path.as_path(), v.read_only)),
        );
        for (id, path, ro) in drives {
            put(
                &api,
                &format!("/drives/{id}"),
                &wire::BlockDeviceConfig {
                    drive_id: id.clone(),
                    path_on_host: path_str(path)?,
                    is_root_device: false,
                    is_read_only: ro,
                    ..Default::default()
                },
            )?;
        }
        put(
            &api,
            "/vsock",
            &wire::VsockConfig {
                vsock_id: None,
                guest_cid: GUEST_CID,
                uds_path: path_str(&self.uds)?,
            },
        )?;
        if let Some(n) = &self.net {
            put(
                &api,
                "/network-interfaces/eth0",
                &wire::NetworkInterfaceConfig {
                    iface_id: "eth0".into(),
                    host_dev_name: n.tap.clone(),
                    guest_mac: Some(wire::MacAddr(n.mac)),
                    rx_rate_limiter: None,
                    tx_rate_limiter: None,
                },
            )?;
        }
        put(
            &api,
            "/actions",
            &wire::InstanceActionInfo {
                action_type: wire::ActionType::InstanceStart,
            },
        )
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.cleanup();
    }

    /// Removes the sockets and releases the NIC (the VMM is gone).
    fn cleanup(&mut self) {
        drop(self.net.take());
        let _ = std::fs::remove_file(&self.api_sock);
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

impl GuestVm for Microvm {
    fn vmm_pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn console(&self) -> &Path {
        &self.console
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
            let client = Client::handshake_version(stream, left, protocol_version())?;
            configure_network(
                &client,
                self.net.as_ref(),
                deadline,
                Duration::from_secs(30),
            )?;
            return Ok(client);
        }
    }

    /// Waits for the guest's own reset, then kills the VMM.
    fn teardown(&mut self) {
        reap_or_kill(&mut self.child, Duration::from_secs(10));
        self.cleanup();
    }
}
