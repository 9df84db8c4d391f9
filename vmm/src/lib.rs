//! KVM virtual machine: guest memory, vCPUs, boot, event loop, device wiring.
//!
//! ```no_run
//! # fn main() -> Result<(), vmm::Error> {
//! let mut config = vmm::VmConfig::new("/path/to/vmlinux");
//! config.cmdline = vmm::cmdline::compose(None, vmm::cmdline::host_is_pvm());
//! let mut builder = vmm::VmBuilder::new(config)?;
//! // builder.add_mmio_device(dev, ioevents, irq)?; builder.add_subscriber(sub);
//! let mut vmm = builder.build()?;
//! let reason = vmm.run()?;
//! std::process::exit(reason.exit_code());
//! # }
//! ```
//!
//! # Design
//! - [`VmBuilder::new`] validates the config (each error names the value and the fix), opens
//!   KVM (irqchip, PIT2, TSS and identity-map addresses), allocates guest memory around the MMIO
//!   gap and wires the legacy devices: COM1 (irqfd on IRQ 4) and the i8042 (reset ends the VM).
//! - Before [`VmBuilder::build`], devices can be added: [`VmBuilder::add_mmio_device`] (virtio-mmio
//!   slots with ioeventfds on QueueNotify and an irqfd; appends `virtio_mmio.device=` to the
//!   command line), [`VmBuilder::add_pio_device`], and event-loop subscribers
//!   ([`VmBuilder::add_subscriber`]).
//! - [`VmBuilder::build`] loads the kernel (PVH when the ELF has the note, else the 64-bit entry
//!   of an ELF or bzImage), initrd, command line, MP table and e820/PVH memory map, and creates
//!   the vCPUs (CPUID from KVM patched per vCPU, boot MSRs, FPU, LAPIC LINT0/LINT1).
//! - [`Vmm::run`] starts one thread per vCPU that only runs `KVM_RUN` and dispatches PIO/MMIO to
//!   the buses, and runs the event loop (event-manager) until the guest ends: see
//!   [`ExitReason`]. The boot-time marker page at 0xc000_0000 is mapped then.
//! - Every 500 ms the event loop kicks every vCPU (a real-time signal whose handler sets
//!   `kvm_run.immediate_exit`). On a kick the vCPU thread records whether it is halted with
//!   RFLAGS.IF clear (KVM_GET_MP_STATE + KVM_GET_REGS). With the in-kernel irqchip HLT never
//!   exits to user space, so this is how a Linux `poweroff -f` without ACPI (every CPU in
//!   `cli; hlt`) is seen: when all vCPUs are halted with IF clear (or never started) on two
//!   ticks in a row, the VM ends with [`ExitReason::PowerOff`]. With `VmConfig::sample_rip`
//!   (vmctl: `VMCTL_SAMPLE_RIP=1`) each vCPU prints its RIP to stderr once a second, named
//!   from a `System.map` (`VmConfig::system_map`, or the one next to the kernel).
//! - [`VcpuControl::pause`] parks every vCPU thread outside `KVM_RUN` (kick until all report
//!   parked); [`VcpuControl::resume`] releases them. [`StopHandle::stop`] ends `run` from
//!   another thread; SIGINT/SIGTERM end it too.
//! - A reboot or halt after the console showed "Kernel panic - not syncing" counts as
//!   [`ExitReason::GuestPanic`] (vmctl passes `panic=1`, so a panicking guest resets).

pub mod api_backend;
pub mod arch;
pub mod boot;
mod builder;
pub mod cmdline;
mod console;
mod error;
mod exit;
mod machine;
mod signals;
pub mod symbols;
pub mod vstate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use builder::{MmioSlot, VmBuilder, VmConfig, VIRTIO_MMIO_QUEUE_NOTIFY};
pub use devices::legacy::{BootTime, ConsoleOutput};
pub use error::{Error, Result};
pub use exit::ExitReason;
pub use machine::{StopHandle, Vmm};
pub use vstate::vcpu::{RunState, VcpuControl};

/// An event-loop subscriber the VMM drives (device backends, the API).
pub type Subscriber = Arc<Mutex<dyn event_manager::MutEventSubscriber + Send>>;

/// When this process started (from /proc/self/stat, 10 ms resolution), as an [`Instant`];
/// now if it cannot be read.
pub fn process_start() -> Instant {
    fn age() -> Option<Duration> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let start_ticks: u64 = rest.split(' ').nth(19)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is valid for writes.
        if hz <= 0 || unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
            return None;
        }
        let now = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        let start = Duration::from_millis(start_ticks * 1000 / hz as u64);
        now.checked_sub(start)
    }
    let now = Instant::now();
    age().and_then(|a| now.checked_sub(a)).unwrap_or(now)
}
