//! The device-model side of the transport, and the bundle the VMM attaches.

use std::io;
use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::Interrupt;
use super::mmio::MmioTransport;

/// Why a device refused to start on DRIVER_OK.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("expected {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("queue {0} is not ready or does not fit in guest memory")]
    InvalidQueue(usize),
    #[error("device is already active")]
    AlreadyActive,
    #[error("device I/O setup failed: {0}")]
    Io(#[from] io::Error),
}

impl ActivateError {
    /// The checks every device makes on DRIVER_OK: not active yet, and the transport handed over
    /// exactly `expected` queues.
    pub fn check(already_active: bool, queues: &[Queue], expected: usize) -> Result<(), Self> {
        if already_active {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != expected {
            return Err(ActivateError::QueueCount {
                expected,
                got: queues.len(),
            });
        }
        Ok(())
    }
}

/// A virtio device model driven by [`MmioTransport`].
///
/// The transport calls these from the vCPU thread (under the device's mutex); the device's own
/// event handling runs on the event loop thread under the same mutex.
pub trait VirtioDevice: Send {
    /// Virtio device id (see [`super::device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered (must include [`super::VIRTIO_F_VERSION_1`]).
    fn avail_features(&self) -> u64;
    /// The subset of features the driver accepted (called once, at FEATURES_OK).
    fn set_acked_features(&mut self, acked: u64);
    /// Reads device-specific config space at `offset` (relative to 0x100).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device-specific config space; read-only by default.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::warn!(
            offset,
            len = data.len(),
            "virtio: guest wrote read-only config space; ignored"
        );
    }
    /// One notification `EventFd` per queue, in queue order (the VMM registers them as
    /// ioeventfds at base+0x50 with datamatch = queue index).
    fn queue_events(&self) -> &[EventFd];
    /// DRIVER_OK: start processing `queues` in `mem`, signalling through `interrupt`.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError>;
    /// Status 0 written: stop, drop queues and guest memory, return to the initial state.
    fn reset(&mut self);
    /// Whether the device is active (between activate and reset).
    fn is_active(&self) -> bool;
}

/// A device on the MMIO transport, split into the parts the VMM wires up:
///
/// * [`VirtioMmioDevice::transport`]: insert into the MMIO bus at `base`, length 0x1000;
/// * [`VirtioMmioDevice::queue_events`]: register queue `i` as an ioeventfd at `base + 0x50`,
///   4 bytes, datamatch `i`;
/// * [`VirtioMmioDevice::interrupt_evt`]: register as an irqfd for the device's GSI;
/// * [`VirtioMmioDevice::subscriber`]: add to the VMM's `EventManager`.
pub struct VirtioMmioDevice {
    pub transport: Arc<Mutex<MmioTransport>>,
    pub subscriber: Arc<Mutex<dyn MutEventSubscriber + Send>>,
    queue_evts: Vec<EventFd>,
    irq_evt: EventFd,
    device_type: u32,
}

impl VirtioMmioDevice {
    /// Wraps `device` in a transport that activates it in `mem`.
    pub fn new<D>(mem: GuestMemoryMmap, device: D) -> io::Result<Self>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        Self::new_shared(mem, Arc::new(Mutex::new(device)))
    }

    /// Like [`VirtioMmioDevice::new`] for a device the caller keeps a handle to (e.g. to swap
    /// a block device's backing file after boot).
    pub fn new_shared<D>(mem: GuestMemoryMmap, device: Arc<Mutex<D>>) -> io::Result<Self>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        let transport = MmioTransport::new(mem, device.clone())?;
        let queue_evts = transport
            .queue_events()
            .iter()
            .map(EventFd::try_clone)
            .collect::<io::Result<Vec<_>>>()?;
        let irq_evt = transport.interrupt_evt().try_clone()?;
        let device_type = transport.device_type();
        Ok(Self {
            transport: Arc::new(Mutex::new(transport)),
            subscriber: device,
            queue_evts,
            irq_evt,
            device_type,
        })
    }

    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// Duplicates of the queue `EventFd`s paired with their queue index: what
    /// `VmBuilder::add_mmio_device` registers as ioeventfds (datamatch = index).
    pub fn ioevents(&self) -> io::Result<Vec<(EventFd, u32)>> {
        (0u32..)
            .zip(&self.queue_evts)
            .map(|(i, e)| Ok((e.try_clone()?, i)))
            .collect()
    }

    pub fn interrupt_evt(&self) -> &EventFd {
        &self.irq_evt
    }

    pub fn device_type(&self) -> u32 {
        self.device_type
    }
}
