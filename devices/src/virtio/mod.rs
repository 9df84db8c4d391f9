//! Virtio 1.x devices on the virtio-mmio transport.
//!
//! * [`mmio::MmioTransport`] is the register file a vCPU sees (a [`crate::bus::BusDevice`]);
//!   it negotiates features, collects the queue layout and activates the device on DRIVER_OK.
//! * [`VirtioDevice`] is what a device model implements; [`block::Block`], [`net::Net`] and
//!   [`vsock::Vsock`] are the models. Each is also an `event_manager::MutEventSubscriber`:
//!   queue notifications (ioeventfds), TAP and socket readiness are handled on the VMM's event
//!   loop thread, never on a vCPU thread.
//! * Interrupts leave through [`Interrupt`] (an irqfd `EventFd` plus the InterruptStatus bits).
//!
//! Everything the guest controls (descriptor tables, rings, lengths, addresses) is treated as
//! hostile: see [`chain`] for the checks applied to every descriptor chain.
//!
//! Attaching a device to a VM being built (this is what `vmctl run --disk` does):
//!
//! ```ignore
//! let blk = Block::new(BlockConfig { path, read_only: false, id: "disk0".into(), rate_limiter: None, root: false })?;
//! let dev = VirtioMmioDevice::new(builder.guest_memory().clone(), blk)?;
//! builder.add_mmio_device(dev.transport.clone(), dev.ioevents()?, dev.interrupt_evt().try_clone()?)?;
//! builder.add_subscriber(dev.subscriber.clone());
//! ```

pub mod block;
pub mod chain;
pub mod counters;
mod device;
mod interrupt;
pub mod mmio;
pub mod net;
pub mod rate_limiter;
pub mod spec;
pub mod vsock;

pub use device::{ActivateError, VirtioDevice, VirtioMmioDevice};
pub use interrupt::Interrupt;

/// VIRTIO_F_VERSION_1: the only transport feature every device offers and requires.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// VIRTIO_RING_F_EVENT_IDX: interrupt and notification suppression through `used_event` /
/// `avail_event`; offered by the transport for every device.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Device status bits (virtio spec 2.1).
pub mod status {
    use virtio_bindings::virtio_config as c;
    pub const ACKNOWLEDGE: u32 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    pub const DRIVER: u32 = c::VIRTIO_CONFIG_S_DRIVER;
    pub const DRIVER_OK: u32 = c::VIRTIO_CONFIG_S_DRIVER_OK;
    pub const FEATURES_OK: u32 = c::VIRTIO_CONFIG_S_FEATURES_OK;
    pub const DEVICE_NEEDS_RESET: u32 = c::VIRTIO_CONFIG_S_NEEDS_RESET;
    pub const FAILED: u32 = c::VIRTIO_CONFIG_S_FAILED;
}

/// Device type ids (virtio spec 5).
pub mod device_type {
    use virtio_bindings::virtio_ids as ids;
    pub const NET: u32 = ids::VIRTIO_ID_NET;
    pub const BLOCK: u32 = ids::VIRTIO_ID_BLOCK;
    pub const VSOCK: u32 = ids::VIRTIO_ID_VSOCK;
}

/// Reads `data.len()` bytes at `offset` from a little-endian config space image; bytes past its
/// end read as zero.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
