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

pub mod arch;
pub mod boot;
mod builder;
pub mod cmdline;
mod console;
mod error;
mod exit;
mod machine;
mod signals;
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
