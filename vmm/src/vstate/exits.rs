//! vCPU exit counters: one relaxed atomic add per `KVM_RUN` return, shared by all vCPU threads
//! of a VM and read by the metrics writer.

use std::sync::atomic::{AtomicU64, Ordering};

use kvm_ioctls::VcpuExit;

/// Exits by kind, summed over every vCPU since boot.
#[derive(Debug, Default)]
pub struct ExitCounters {
    pub io_in: AtomicU64,
    pub io_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
    pub hlt: AtomicU64,
    pub shutdown: AtomicU64,
    pub system_event: AtomicU64,
    pub fail_entry: AtomicU64,
    /// Kicks (EINTR / KVM_EXIT_INTR) and any other exit.
    pub other: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitSnapshot {
    pub io_in: u64,
    pub io_out: u64,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub hlt: u64,
    pub shutdown: u64,
    pub system_event: u64,
    pub fail_entry: u64,
    pub other: u64,
}

impl ExitCounters {
    /// Counts one `KVM_RUN` result.
    pub fn count(&self, exit: &Result<VcpuExit<'_>, kvm_ioctls::Error>) {
        let c = match exit {
            Ok(VcpuExit::IoIn(..)) => &self.io_in,
            Ok(VcpuExit::IoOut(..)) => &self.io_out,
            Ok(VcpuExit::MmioRead(..)) => &self.mmio_read,
            Ok(VcpuExit::MmioWrite(..)) => &self.mmio_write,
            Ok(VcpuExit::Hlt) => &self.hlt,
            Ok(VcpuExit::Shutdown) => &self.shutdown,
            Ok(VcpuExit::SystemEvent(..)) => &self.system_event,
            Ok(VcpuExit::FailEntry(..)) | Ok(VcpuExit::InternalError) => &self.fail_entry,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ExitSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExitSnapshot {
            io_in: l(&self.io_in),
            io_out: l(&self.io_out),
            mmio_read: l(&self.mmio_read),
            mmio_write: l(&self.mmio_write),
            hlt: l(&self.hlt),
            shutdown: l(&self.shutdown),
            system_event: l(&self.system_event),
            fail_entry: l(&self.fail_entry),
            other: l(&self.other),
        }
    }
}
