//! The KVM side of the REST API: [`KvmBackend`] implements [`api::VmmBackend`] for this VMM.
//!
//! `start` builds the VM from the API's configuration (kernel, memory, vCPUs, virtio drives,
//! network interfaces and vsock) and runs it ([`Vmm::run`]) on its own thread, so the API keeps
//! being served while the guest runs. Pause and resume go through [`VcpuControl`]; the exit
//! status is collected when the VM thread ends.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use api::metrics::VmmMetrics;
use api::types::NetworkInterfaceUpdateConfig;
use api::types::{self as wire, BlockDeviceUpdateConfig, LoggerConfig};
use api::{VmResources, VmmBackend};
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::counters::{self, get};
use devices::virtio::net::{Net, NetConfig};
use devices::virtio::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
use devices::virtio::vsock::{Vsock, VsockConfig};
use devices::virtio::VirtioMmioDevice;
use vm_memory::GuestMemoryMmap;

use crate::{ConsoleOutput, ExitReason, StopHandle, VcpuControl, VmBuilder, VmConfig, Vmm};

/// How long `PATCH /vm {"state": "Paused"}` waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of a drive id the guest sees as the disk serial (virtio-blk GET_ID).
const DISK_SERIAL_LEN: usize = 20;

struct Running {
    control: VcpuControl,
    stop: StopHandle,
    boot_timer: devices::legacy::BootTimer,
    console: ConsoleOutput,
    memory: GuestMemoryMmap,
    devices: Devices,
    thread: Option<JoinHandle<crate::Result<ExitReason>>>,
}

/// Handles on the attached devices, for metrics and post-boot updates.
#[derive(Default)]
struct Devices {
    drives: Vec<(String, Arc<Mutex<Block>>, Arc<counters::BlockCounters>)>,
    nets: Vec<(String, Arc<Mutex<Net>>, Arc<counters::NetCounters>)>,
    vsock: Option<Arc<counters::VsockCounters>>,
}

/// How the VM run by a [`KvmBackend`] ended: its exit reason (or the error that ended it) and
/// its console, for callers that report the end themselves (`vmctl run --kernel`).
#[derive(Clone)]
pub struct VmEnd {
    /// The exit reason, or why the VM thread failed.
    pub result: std::result::Result<ExitReason, String>,
    /// The guest console (kept copy).
    pub console: ConsoleOutput,
}

/// Shared slot filled once the VM has ended; see [`KvmBackend::end_slot`].
pub type EndSlot = Arc<Mutex<Option<VmEnd>>>;

/// [`api::VmmBackend`] backed by KVM.
pub struct KvmBackend {
    console: Option<Arc<Mutex<dyn Write + Send>>>,
    stdin_input: bool,
    running: Option<Running>,
    exit: Option<i32>,
    end: EndSlot,
    serials: std::collections::HashMap<String, String>,
}

impl KvmBackend {
    /// A backend whose guest console goes to `console` (e.g. stdout) besides the kept copy;
    /// `stdin_input` feeds this process's stdin to the guest UART.
    pub fn new(console: Option<Arc<Mutex<dyn Write + Send>>>, stdin_input: bool) -> Self {
        Self {
            console,
            stdin_input,
            running: None,
            exit: None,
            end: EndSlot::default(),
            serials: Default::default(),
        }
    }

    /// Disk serials (virtio-blk GET_ID) to use instead of the drive id, by drive id: for
    /// callers whose disk names are not valid API drive ids (`vmctl run --disk ...,id=a-b`).
    pub fn set_disk_serials(&mut self, serials: std::collections::HashMap<String, String>) {
        self.serials = serials;
    }

    /// A slot the backend fills when the VM ends (read it after [`api::run_vmm`] returned).
    pub fn end_slot(&self) -> EndSlot {
        self.end.clone()
    }

    /// The guest console of the started VM.
    pub fn console(&self) -> Option<ConsoleOutput> {
        self.running.as_ref().map(|r| r.console.clone())
    }

    /// Guest memory of the started VM.
    pub fn guest_memory(&self) -> Option<GuestMemoryMmap> {
        self.running.as_ref().map(|r| r.memory.clone())
    }

    fn running(&self) -> Result<&Running, String> {
        self.running
            .as_ref()
            .ok_or_else(|| "the microVM is not running".to_string())
    }
}

fn bucket(b: &wire::TokenBucketConfig) -> TokenBucketConfig {
    TokenBucketConfig {
        size: b.size,
        one_time_burst: b.one_time_burst.unwrap_or(0),
        refill_time_ms: b.refill_time,
    }
}

fn limiter(r: &Option<wire::RateLimiterConfig>) -> Option<RateLimiterConfig> {
    r.as_ref().map(|r| RateLimiterConfig {
        bandwidth: r.bandwidth.as_ref().map(bucket),
        ops: r.ops.as_ref().map(bucket),
    })
}

/// The guest command line: vmctl's base arguments, the boot_args, and the root device.
fn cmdline(r: &VmResources, boot_args: Option<&str>) -> String {
    let mut line = crate::cmdline::compose(boot_args, crate::cmdline::host_is_pvm());
    if let Some(root) = r.drives.iter().find(|d| d.is_root_device) {
        if !line.split(' ').any(|a| a.starts_with("root=")) {
            match &root.partuuid {
                Some(uuid) => line.push_str(&format!(" root=PARTUUID={uuid}")),
                None => line.push_str(" root=/dev/vda"),
            }
            line.push_str(if root.is_read_only { " ro" } else { " rw" });
        }
    }
    line
}

fn attach(b: &mut VmBuilder, dev: VirtioMmioDevice) -> Result<(), String> {
    let irq = dev
        .interrupt_evt()
        .try_clone()
        .map_err(|e| format!("eventfd: {e}"))?;
    let ioevents = dev.ioevents().map_err(|e| format!("ioeventfds: {e}"))?;
    b.add_mmio_device(dev.transport.clone(), ioevents, irq)
        .map_err(|e| e.to_string())?;
    b.add_subscriber(dev.subscriber.clone());
    Ok(())
}

/// Attaches the drives (root device first, so it is /dev/vda), then the network interfaces,
/// then vsock.
fn attach_devices(
    b: &mut VmBuilder,
    r: &VmResources,
    serials: &std::collections::HashMap<String, String>,
) -> Result<Devices, String> {
    let mut handles = Devices::default();
    let mut drives: Vec<_> = r.drives.iter().collect();
    drives.sort_by_key(|d| !d.is_root_device);
    for d in drives {
        let cfg = BlockConfig {
            path: PathBuf::from(&d.path_on_host),
            read_only: d.is_read_only,
            id: serials
                .get(&d.drive_id)
                .unwrap_or(&d.drive_id)
                .chars()
                .take(DISK_SERIAL_LEN)
                .collect(),
            rate_limiter: limiter(&d.rate_limiter),
            root: d.is_root_device,
        };
        let block = Block::new(cfg).map_err(|e| format!("drive '{}': {e}", d.drive_id))?;
        let counters = block.counters();
        let block = Arc::new(Mutex::new(block));
        handles
            .drives
            .push((d.drive_id.clone(), block.clone(), counters));
        let dev = VirtioMmioDevice::new_shared(b.guest_memory().clone(), block)
            .map_err(|e| format!("drive '{}': {e}", d.drive_id))?;
        attach(b, dev)?;
    }
    for n in &r.network_interfaces {
        let cfg = NetConfig {
            tap_name: n.host_dev_name.clone(),
            mac: n.guest_mac.map(|m| m.0),
            rx_rate_limiter: limiter(&n.rx_rate_limiter),
            tx_rate_limiter: limiter(&n.tx_rate_limiter),
        };
        let net = Net::new(cfg).map_err(|e| format!("network interface '{}': {e}", n.iface_id))?;
        let counters = net.counters();
        let net = Arc::new(Mutex::new(net));
        handles
            .nets
            .push((n.iface_id.clone(), net.clone(), counters));
        let dev = VirtioMmioDevice::new_shared(b.guest_memory().clone(), net)
            .map_err(|e| format!("network interface '{}': {e}", n.iface_id))?;
        attach(b, dev)?;
    }
    if let Some(v) = &r.vsock {
        let cfg = VsockConfig {
            guest_cid: u64::from(v.guest_cid),
            uds_path: PathBuf::from(&v.uds_path),
        };
        let vsock = Vsock::new(cfg).map_err(|e| format!("vsock: {e}"))?;
        handles.vsock = Some(vsock.counters());
        let dev = VirtioMmioDevice::new(b.guest_memory().clone(), vsock)
            .map_err(|e| format!("vsock: {e}"))?;
        attach(b, dev)?;
    }
    Ok(handles)
}

impl VmmBackend for KvmBackend {
    fn start(&mut self, r: &VmResources) -> Result<(), String> {
        let boot = r.boot_source.as_ref().ok_or("no boot source")?;
        let mut cfg = VmConfig::new(&boot.kernel_image_path);
        cfg.initrd = boot.initrd_path.as_ref().map(PathBuf::from);
        cfg.cmdline = cmdline(r, boot.boot_args.as_deref());
        cfg.vcpus = r.machine_config.vcpu_count;
        cfg.mem_mib = r.machine_config.mem_size_mib as u64;
        cfg.console = self.console.clone();
        cfg.stdin_input = self.stdin_input;
        // VMCTL_SAMPLE_RIP=1: log every vCPU's RIP once a second, named from VMCTL_SYSTEM_MAP or
        // the System.map next to the kernel.
        cfg.sample_rip = std::env::var("VMCTL_SAMPLE_RIP").is_ok_and(|v| v == "1");
        cfg.system_map = std::env::var_os("VMCTL_SYSTEM_MAP").map(Into::into);
        let mut builder = VmBuilder::new(cfg).map_err(|e| e.to_string())?;
        let devices = attach_devices(&mut builder, r, &self.serials)?;
        let mut vmm: Vmm = builder.build().map_err(|e| e.to_string())?;
        let running = Running {
            control: vmm.vcpu_control(),
            stop: vmm.stop_handle().map_err(|e| e.to_string())?,
            boot_timer: vmm.boot_timer(),
            console: vmm.console(),
            memory: vmm.guest_memory().clone(),
            devices,
            thread: None,
        };
        let thread = std::thread::Builder::new()
            .name("vmm".into())
            .spawn(move || vmm.run())
            .map_err(|e| format!("starting the VM thread: {e}"))?;
        self.running = Some(Running {
            thread: Some(thread),
            ..running
        });
        Ok(())
    }

    fn pause(&mut self) -> Result<(), String> {
        self.running()?.control.pause(PAUSE_TIMEOUT)
    }

    fn resume(&mut self) -> Result<(), String> {
        self.running()?.control.resume();
        Ok(())
    }

    fn send_ctrl_alt_del(&mut self) -> Result<(), String> {
        Err(
            "SendCtrlAltDel is not supported: vmctl's guest kernel has no keyboard driver or \
             virtual terminal, so it could not act on Ctrl+Alt+Del scancodes from the i8042; \
             stop the microVM with `vmctl vm stop ID` (SIGTERM to the VMM) instead"
                .into(),
        )
    }

    fn patch_drive(&mut self, update: &BlockDeviceUpdateConfig) -> Result<(), String> {
        let (_, block, _) = self
            .running()?
            .devices
            .drives
            .iter()
            .find(|(id, _, _)| *id == update.drive_id)
            .ok_or_else(|| format!("no drive '{}' is attached", update.drive_id))?;
        let mut block = block
            .lock()
            .map_err(|_| "the drive's lock is poisoned".to_string())?;
        if let Some(path) = &update.path_on_host {
            block
                .swap_backing(PathBuf::from(path))
                .map_err(|e| format!("drive '{}': {e}", update.drive_id))?;
        }
        if let Some(l) = limiter(&update.rate_limiter) {
            block
                .update_rate_limiter(l)
                .map_err(|e| format!("drive '{}': {e}", update.drive_id))?;
        }
        Ok(())
    }

    fn patch_net(&mut self, update: &NetworkInterfaceUpdateConfig) -> Result<(), String> {
        let (_, net, _) = self
            .running()?
            .devices
            .nets
            .iter()
            .find(|(id, _, _)| *id == update.iface_id)
            .ok_or_else(|| format!("no network interface '{}' is attached", update.iface_id))?;
        net.lock()
            .map_err(|_| "the network interface's lock is poisoned".to_string())?
            .update_rate_limiters(
                limiter(&update.rx_rate_limiter),
                limiter(&update.tx_rate_limiter),
            )
            .map_err(|e| format!("network interface '{}': {e}", update.iface_id))
    }

    fn configure_logger(&mut self, config: &LoggerConfig) -> Result<(), String> {
        api::logger::install_logger(config)
    }

    fn metrics(&self) -> VmmMetrics {
        let boot = self.running.as_ref().and_then(|r| r.boot_timer.boot_time());
        let mut m = VmmMetrics {
            boot_time_us: boot.map(|b| b.since_process_start.as_micros() as u64),
            ..Default::default()
        };
        let Some(r) = &self.running else {
            return m;
        };
        let e = r.control.exits();
        m.vcpu_exits = api::metrics::ExitCounts {
            io_in: e.io_in,
            io_out: e.io_out,
            mmio_read: e.mmio_read,
            mmio_write: e.mmio_write,
            hlt: e.hlt,
            shutdown: e.shutdown,
            system_event: e.system_event,
            fail_entry: e.fail_entry,
            other: e.other,
        };
        for (id, _, c) in &r.devices.drives {
            let b = api::metrics::BlockCounters {
                read_bytes: get(&c.read_bytes),
                write_bytes: get(&c.write_bytes),
                read_count: get(&c.read_ops),
                write_count: get(&c.write_ops),
                flush_count: get(&c.flushes),
                rate_limited: get(&c.rate_limited),
                errors: get(&c.errors),
            };
            m.block.insert(id.clone(), b);
        }
        for (id, _, c) in &r.devices.nets {
            let n = api::metrics::NetCounters {
                rx_bytes: get(&c.rx_bytes),
                tx_bytes: get(&c.tx_bytes),
                rx_packets: get(&c.rx_packets),
                tx_packets: get(&c.tx_packets),
                dropped: get(&c.dropped),
                rate_limited: get(&c.rate_limited),
            };
            m.net.insert(id.clone(), n);
        }
        m.vsock = r
            .devices
            .vsock
            .as_ref()
            .map(|c| api::metrics::VsockCounters {
                rx_bytes: get(&c.rx_bytes),
                tx_bytes: get(&c.tx_bytes),
                conns_added: get(&c.conns_added),
                conns_removed: get(&c.conns_removed),
            });
        m
    }

    fn exit_code(&mut self) -> Option<i32> {
        if self.exit.is_some() {
            return self.exit;
        }
        let r = self.running.as_mut()?;
        if !r.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return None;
        }
        let result = match r.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(reason))) => {
                tracing::info!("VM ended: {reason}");
                Ok(reason)
            }
            Some(Ok(Err(e))) => {
                tracing::error!("VM failed: {e}");
                Err(e.to_string())
            }
            _ => {
                tracing::error!("the VM thread panicked");
                Err("the VM thread panicked".to_string())
            }
        };
        let code = result.as_ref().map_or(1, ExitReason::exit_code);
        *self.end.lock().unwrap_or_else(|e| e.into_inner()) = Some(VmEnd {
            result,
            console: r.console.clone(),
        });
        self.exit = Some(code);
        self.exit
    }
}

impl Drop for KvmBackend {
    fn drop(&mut self) {
        if let Some(r) = self.running.as_mut() {
            if let Some(t) = r.thread.take() {
                r.control.resume();
                r.stop.stop();
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_device_on_the_command_line() {
        let mut r = VmResources::default();
        assert!(!cmdline(&r, Some("quiet")).contains("root="));
        r.drives.push(wire::BlockDeviceConfig {
            drive_id: "rootfs".into(),
            path_on_host: "/x".into(),
            is_root_device: true,
            is_read_only: true,
            ..Default::default()
        });
        let line = cmdline(&r, Some("quiet"));
        assert!(line.ends_with("quiet root=/dev/vda ro"), "{line}");
        assert!(line.starts_with("console=ttyS0"));
        assert!(!cmdline(&r, Some("root=/dev/vdb")).contains("/dev/vda"));
        r.drives[0].partuuid = Some("abcd-01".into());
        r.drives[0].is_read_only = false;
        assert!(cmdline(&r, None).ends_with("root=PARTUUID=abcd-01 rw"));
    }
}
