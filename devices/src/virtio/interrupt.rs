//! Device-to-driver signalling: the InterruptStatus bits, the irqfd, and DEVICE_NEEDS_RESET.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Shared between a device (event loop thread) and its transport (vCPU thread).
///
/// The VMM registers [`Interrupt::irq_evt`] with KVM as an irqfd for the device's GSI; a write to
/// it raises the (edge) interrupt. The driver reads InterruptStatus to learn why and acks it.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    irq_evt: EventFd,
}

impl Interrupt {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            irq_evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The irqfd to register with KVM.
    pub fn irq_evt(&self) -> &EventFd {
        &self.irq_evt
    }

    /// Current InterruptStatus register value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the acked bits (InterruptACK register).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irq_evt.write(1) {
            tracing::error!("virtio: failed to signal irqfd: {e}");
        }
    }

    /// The device placed buffers in a used ring.
    pub fn signal_used_queue(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// The configuration space (or the device status) changed.
    pub fn signal_config_change(&self) {
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    /// The device hit an error it cannot recover from without a reset (for example a malformed
    /// available ring): sets DEVICE_NEEDS_RESET and notifies the driver (virtio spec 2.1.2).
    pub fn set_needs_reset(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            tracing::warn!("virtio: device needs reset after a driver error");
            self.signal_config_change();
        }
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// Transport reset: forget pending status bits and the error state.
    pub(crate) fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}
