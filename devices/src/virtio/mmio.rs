//! The virtio-mmio transport, version 2 (virtio spec 4.2.2), modern devices only.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::VirtioDevice;
use super::interrupt::Interrupt;
use super::status::*;
use super::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::bus::BusDevice;

/// Size of one virtio-mmio device window.
pub const MMIO_LEN: u64 = 0x1000;
/// Offset of the QueueNotify register (where the VMM places the ioeventfds).
pub const NOTIFY_OFFSET: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x554d_4551; // "QEMU"-style id; any value is fine for Linux
const CONFIG_OFFSET: u64 = 0x100;

/// The register file of one virtio-mmio device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
    queues: Vec<Queue>,
    device_type: u32,
    avail_features: u64,
    features_select: u32,
    acked_features_select: u32,
    acked_features: u64,
    queue_select: u32,
    status: u32,
    config_generation: u32,
}

impl MmioTransport {
    /// Builds the transport for `device`, whose queues will live in `mem`.
    pub fn new(mem: GuestMemoryMmap, device: Arc<Mutex<dyn VirtioDevice>>) -> io::Result<Self> {
        let (queues, queue_evts, device_type, avail_features) = {
            let d = lock(&device);
            let queues = make_queues(d.queue_max_sizes())?;
            let evts = d
                .queue_events()
                .iter()
                .map(EventFd::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            (queues, evts, d.device_type(), d.avail_features())
        };
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new()?),
            queue_evts,
            queues,
            device_type,
            avail_features: avail_features | VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX,
            features_select: 0,
            acked_features_select: 0,
            acked_features: 0,
            queue_select: 0,
            status: 0,
            config_generation: 0,
        })
    }

    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// Queue notification `EventFd`s, one per queue (register as ioeventfds at
    /// base + [`NOTIFY_OFFSET`], datamatch = queue index).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The irqfd.
    pub fn interrupt_evt(&self) -> &EventFd {
        self.interrupt.irq_evt()
    }

    /// The device status register as the driver reads it.
    pub fn status(&self) -> u32 {
        if self.interrupt.needs_reset() {
            self.status | DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn has(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK (spec 3.1.1).
    fn queue_writable(&self) -> bool {
        self.has(FEATURES_OK) && !self.has(DRIVER_OK) && self.status & FAILED == 0
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device_type,
            0x0c => VENDOR_ID,
            0x10 => match self.features_select {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            0x34 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x44 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt.status(),
            0x70 => self.status(),
            // No shared memory regions: length reads as all ones (spec 4.2.2.1).
            0xb0 | 0xb4 => u32::MAX,
            0xfc => self.config_generation,
            _ => {
                tracing::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            0x14 => self.features_select = v,
            0x20 => self.write_driver_features(v),
            0x24 => self.acked_features_select = v,
            0x30 => self.queue_select = v,
            0x38 => self.queue_update(|q| {
                if q.try_set_size(v as u16).is_err() || v > u32::from(u16::MAX) {
                    Err(format!("queue size {v} is not a power of two <= max"))
                } else {
                    Ok(())
                }
            }),
            0x44 => self.queue_update(|q| {
                q.set_ready(v == 1);
                Ok(())
            }),
            0x50 => self.notify(v),
            0x64 => self.interrupt.ack(v),
            0x70 => self.write_status(v),
            0x80 => self.queue_update(|q| set_addr(q, Ring::Desc, Some(v), None)),
            0x84 => self.queue_update(|q| set_addr(q, Ring::Desc, None, Some(v))),
            0x90 => self.queue_update(|q| set_addr(q, Ring::Avail, Some(v), None)),
            0x94 => self.queue_update(|q| set_addr(q, Ring::Avail, None, Some(v))),
            0xa0 => self.queue_update(|q| set_addr(q, Ring::Used, Some(v), None)),
            0xa4 => self.queue_update(|q| set_addr(q, Ring::Used, None, Some(v))),
            0xac => {} // SHMSel: no shared memory regions
            _ => tracing::warn!("virtio-mmio: write of {v:#x} to unknown register {offset:#x}"),
        }
    }

    /// Applies a queue-register write when the state machine allows it; a bad value puts the
    /// device into DEVICE_NEEDS_RESET.
    fn queue_update(&mut self, f: impl FnOnce(&mut Queue) -> Result<(), String>) {
        if !self.queue_writable() {
            tracing::warn!(
                status = self.status,
                "virtio-mmio: queue register written outside FEATURES_OK..DRIVER_OK; ignored"
            );
            return;
        }
        let sel = self.queue_select;
        let Some(q) = self.selected_queue() else {
            tracing::warn!("virtio-mmio: queue {sel} does not exist; write ignored");
            return;
        };
        if let Err(e) = f(q) {
            tracing::warn!("virtio-mmio: queue {sel}: {e}");
            self.interrupt.set_needs_reset();
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        if !self.has(ACKNOWLEDGE | DRIVER) || self.has(FEATURES_OK) {
            tracing::warn!(
                "virtio-mmio: driver features written in status {:#x}",
                self.status
            );
            return;
        }
        match self.acked_features_select {
            0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
            1 => self.acked_features = (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32),
            s if v != 0 => {
                tracing::warn!("virtio-mmio: driver acked unknown feature page {s}: {v:#x}");
                self.acked_features |= 1 << 63; // never offered: FEATURES_OK will fail
            }
            _ => {}
        }
    }

    fn notify(&mut self, v: u32) {
        if !self.has(DRIVER_OK) || self.interrupt.needs_reset() {
            tracing::warn!(
                queue = v,
                "virtio-mmio: notification before DRIVER_OK; dropped"
            );
            return;
        }
        match self.queue_evts.get(v as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    tracing::error!("virtio-mmio: queue {v} notify failed: {e}");
                }
            }
            None => tracing::warn!("virtio-mmio: notification for missing queue {v}"),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if v & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        // The driver may only add bits, one step of the init sequence at a time (spec 3.1.1).
        let ok = match (old, v) {
            (0, ACKNOWLEDGE) => true,
            (o, n) if o == ACKNOWLEDGE && n == ACKNOWLEDGE | DRIVER => true,
            (o, n) if o == ACKNOWLEDGE | DRIVER && n == o | FEATURES_OK => {
                return self.features_ok();
            }
            (o, n) if o == ACKNOWLEDGE | DRIVER | FEATURES_OK && n == o | DRIVER_OK => {
                return self.driver_ok();
            }
            (o, n) => o == n,
        };
        if ok {
            self.status = v;
        } else {
            tracing::warn!("virtio-mmio: invalid status transition {old:#x} -> {v:#x}; ignored");
        }
    }

    fn features_ok(&mut self) {
        let acked = self.acked_features;
        let unknown = acked & !self.avail_features;
        if acked & VIRTIO_F_VERSION_1 == 0 || unknown != 0 {
            tracing::warn!(
                acked = format_args!("{acked:#x}"),
                "virtio-mmio: driver features rejected (VERSION_1 missing or unoffered bits \
                 {unknown:#x}); FEATURES_OK stays clear"
            );
            return;
        }
        lock(&self.device).set_acked_features(acked);
        self.status |= FEATURES_OK;
    }

    fn driver_ok(&mut self) {
        if self.interrupt.needs_reset() {
            tracing::warn!("virtio-mmio: DRIVER_OK while the device needs a reset; ignored");
            return;
        }
        let bad = self
            .queues
            .iter()
            .position(|q| !q.ready() || !q.is_valid(&self.mem));
        if let Some(i) = bad {
            tracing::warn!("virtio-mmio: DRIVER_OK with queue {i} not ready or invalid");
            self.status |= DRIVER_OK;
            self.interrupt.set_needs_reset();
            return;
        }
        let event_idx = self.acked_features & VIRTIO_RING_F_EVENT_IDX != 0;
        for q in &mut self.queues {
            q.set_event_idx(event_idx);
        }
        let max_sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size()).collect();
        let queues = std::mem::replace(
            &mut self.queues,
            make_queues(&max_sizes).expect("max sizes were valid before"),
        );
        let result = lock(&self.device).activate(self.mem.clone(), queues, self.interrupt.clone());
        self.status |= DRIVER_OK;
        if let Err(e) = result {
            tracing::error!("virtio-mmio: device activation failed: {e}");
            self.interrupt.set_needs_reset();
        }
    }

    fn reset(&mut self) {
        lock(&self.device).reset();
        for q in &mut self.queues {
            q.reset();
        }
        for evt in &self.queue_evts {
            let _ = evt.read(); // drop stale notifications
        }
        self.interrupt.reset();
        self.status = 0;
        self.features_select = 0;
        self.acked_features_select = 0;
        self.acked_features = 0;
        self.queue_select = 0;
    }
}

#[derive(Clone, Copy, Debug)]
enum Ring {
    Desc,
    Avail,
    Used,
}

/// Updates half of a ring address; misaligned addresses are a driver error.
fn set_addr(q: &mut Queue, ring: Ring, low: Option<u32>, high: Option<u32>) -> Result<(), String> {
    let cur = match ring {
        Ring::Desc => q.desc_table(),
        Ring::Avail => q.avail_ring(),
        Ring::Used => q.used_ring(),
    };
    let low = low.map_or(cur & 0xffff_ffff, u64::from);
    let high = high.map_or(cur >> 32, u64::from);
    let a = GuestAddress((high << 32) | low);
    match ring {
        Ring::Desc => q.try_set_desc_table_address(a),
        Ring::Avail => q.try_set_avail_ring_address(a),
        Ring::Used => q.try_set_used_ring_address(a),
    }
    .map_err(|e| format!("{ring:?} ring address {:#x}: {e}", a.0))
}

fn make_queues(max_sizes: &[u16]) -> io::Result<Vec<Queue>> {
    max_sizes
        .iter()
        .map(|&m| Queue::new(m).map_err(|e| io::Error::other(format!("queue max size {m}: {e}"))))
        .collect()
}

fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    // A poisoned device mutex means a device handler panicked; keep serving register accesses.
    device.lock().unwrap_or_else(|p| p.into_inner())
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            lock(&self.device).read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            tracing::warn!(
                "virtio-mmio: {}-byte read at {offset:#x}; registers are 32-bit",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            lock(&self.device).write_config(offset - CONFIG_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::warn!(
                "virtio-mmio: {}-byte write at {offset:#x}; registers are 32-bit",
                data.len()
            );
            return;
        };
        if offset % 4 != 0 {
            tracing::warn!("virtio-mmio: unaligned register write at {offset:#x}");
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}
