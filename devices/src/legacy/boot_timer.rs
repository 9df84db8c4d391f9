//! The boot-time marker: an MMIO page where a byte write of [`BOOT_MARKER_VALUE`] records how
//! long the guest took to get there, measured from VMM process start and from VM start.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bus::BusDevice;

/// The byte a guest writes to the marker page to log its boot time.
pub const BOOT_MARKER_VALUE: u8 = 123;

/// A recorded boot time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootTime {
    /// Since the VMM process started.
    pub since_process_start: Duration,
    /// Since the VM was started (vCPUs about to run).
    pub since_vm_start: Duration,
}

/// The marker device. Clones share the recorded value.
#[derive(Clone)]
pub struct BootTimer {
    process_start: Instant,
    vm_start: Instant,
    recorded: Arc<Mutex<Option<BootTime>>>,
}

impl BootTimer {
    /// `process_start` is when the VMM process (or the measurement) started; the VM start is
    /// now.
    pub fn new(process_start: Instant) -> Self {
        Self {
            process_start,
            vm_start: Instant::now(),
            recorded: Arc::default(),
        }
    }

    /// Marks now as the VM start.
    pub fn reset_vm_start(&mut self) {
        self.vm_start = Instant::now();
    }

    /// The first boot time the guest reported, if any.
    pub fn boot_time(&self) -> Option<BootTime> {
        *self.recorded.lock().expect("boot timer lock poisoned")
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, _data: &mut [u8]) {}

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.first() != Some(&BOOT_MARKER_VALUE) {
            return;
        }
        let now = Instant::now();
        let t = BootTime {
            since_process_start: now.duration_since(self.process_start),
            since_vm_start: now.duration_since(self.vm_start),
        };
        let line = format!(
            "guest boot time: {} ms since VMM process start, {} ms since VM start",
            t.since_process_start.as_millis(),
            t.since_vm_start.as_millis()
        );
        tracing::info!("{line}");
        eprintln!("{line}");
        let mut rec = self.recorded.lock().expect("boot timer lock poisoned");
        rec.get_or_insert(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_the_marker_value() {
        let mut t = BootTimer::new(Instant::now());
        t.write(0, &[1]);
        assert!(t.boot_time().is_none());
        let reader = t.clone();
        t.write(0, &[BOOT_MARKER_VALUE]);
        let bt = reader.boot_time().expect("recorded");
        assert!(bt.since_process_start >= bt.since_vm_start);
    }
}
