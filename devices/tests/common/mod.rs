//! A minimal virtio-mmio *driver* for tests: it programs the transport registers the way Linux
//! does, lays out split virtqueues in a real `GuestMemoryMmap`, posts descriptor chains, notifies
//! through the queue `EventFd`s and runs a real `EventManager` until the device answers.
#![allow(dead_code)]

pub mod netns;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::bus::BusDevice;
use devices::virtio::{status, VirtioDevice, VirtioMmioDevice, VIRTIO_F_VERSION_1};
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub type Em = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

pub const MEM_SIZE: usize = 16 << 20;
pub const DATA_BASE: u64 = 0x10_0000;
pub const F_WRITE: u16 = 2;
pub const F_NEXT: u16 = 1;

pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

#[derive(Clone, Copy, Debug)]
pub struct QueueLayout {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

pub struct Driver {
    pub dev: VirtioMmioDevice,
    pub mem: GuestMemoryMmap,
    pub em: Em,
    pub queues: Vec<QueueLayout>,
    next_desc: Vec<u16>,
    avail_idx: Vec<u16>,
    used_seen: Vec<u16>,
    next_data: u64,
}

impl Driver {
    pub fn new<D: VirtioDevice + MutEventSubscriber + 'static>(device: D) -> Self {
        let mem = guest_memory();
        let dev = VirtioMmioDevice::new(mem.clone(), device).unwrap();
        let mut em = Em::new().unwrap();
        em.add_subscriber(dev.subscriber.clone());
        Self {
            dev,
            mem,
            em,
            queues: Vec::new(),
            next_desc: Vec::new(),
            avail_idx: Vec::new(),
            used_seen: Vec::new(),
            next_data: DATA_BASE,
        }
    }

    pub fn read32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.transport.lock().unwrap().read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&self, off: u64, v: u32) {
        self.dev
            .transport
            .lock()
            .unwrap()
            .write(off, &v.to_le_bytes());
    }

    pub fn read_config(&self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.dev.transport.lock().unwrap().read(0x100 + off, &mut b);
        b
    }

    pub fn status(&self) -> u32 {
        self.read32(0x70)
    }

    pub fn device_features(&self) -> u64 {
        self.write32(0x14, 0);
        let lo = self.read32(0x10) as u64;
        self.write32(0x14, 1);
        let hi = self.read32(0x10) as u64;
        (hi << 32) | lo
    }

    /// Runs the init sequence up to FEATURES_OK; returns whether the device accepted.
    pub fn negotiate(&mut self, features: u64) -> bool {
        assert_eq!(self.read32(0x00), 0x7472_6976, "magic");
        assert_eq!(self.read32(0x04), 2, "version");
        self.write32(0x70, 0);
        self.write32(0x70, status::ACKNOWLEDGE);
        self.write32(0x70, status::ACKNOWLEDGE | status::DRIVER);
        self.write32(0x24, 0);
        self.write32(0x20, features as u32);
        self.write32(0x24, 1);
        self.write32(0x20, (features >> 32) as u32);
        self.write32(
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.status() & status::FEATURES_OK != 0
    }

    /// Programs queue `i` with `size` entries at a fixed spot in memory.
    pub fn setup_queue(&mut self, i: u32, size: u16) {
        let base = 0x1_0000 + u64::from(i) * 0x1_0000;
        let l = QueueLayout {
            size,
            desc: base,
            avail: base + 0x8000,
            used: base + 0xc000,
        };
        self.write32(0x30, i);
        assert!(self.read32(0x34) >= u32::from(size), "queue max");
        self.write32(0x38, u32::from(size));
        for (reg, a) in [(0x80, l.desc), (0x90, l.avail), (0xa0, l.used)] {
            self.write32(reg, a as u32);
            self.write32(reg + 4, (a >> 32) as u32);
        }
        self.write32(0x44, 1);
        let i = i as usize;
        if self.queues.len() <= i {
            self.queues.resize(i + 1, l);
            self.next_desc.resize(i + 1, 0);
            self.avail_idx.resize(i + 1, 0);
            self.used_seen.resize(i + 1, 0);
        }
        self.queues[i] = l;
        self.next_desc[i] = 0;
        self.avail_idx[i] = 0;
        self.used_seen[i] = 0;
        // Zero the rings.
        self.mem
            .write_slice(&vec![0u8; 0x1_0000], GuestAddress(base))
            .unwrap();
    }

    pub fn driver_ok(&mut self) {
        let s = self.status();
        self.write32(0x70, s | status::DRIVER_OK);
    }

    /// Full init: features = VERSION_1 | extra, every queue at `size`, DRIVER_OK.
    pub fn activate(&mut self, extra_features: u64, nqueues: u32, size: u16) {
        assert!(self.negotiate(VIRTIO_F_VERSION_1 | extra_features));
        for i in 0..nqueues {
            self.setup_queue(i, size);
        }
        self.driver_ok();
        assert_eq!(self.status() & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(self.status() & status::DRIVER_OK, 0);
    }

    /// Allocates a zeroed data buffer in guest memory.
    pub fn alloc(&mut self, len: usize) -> u64 {
        let a = self.next_data;
        self.next_data = (a + len as u64 + 15) & !15;
        assert!(
            self.next_data < MEM_SIZE as u64,
            "test guest memory exhausted"
        );
        self.mem
            .write_slice(&vec![0u8; len], GuestAddress(a))
            .unwrap();
        a
    }

    pub fn alloc_with(&mut self, data: &[u8]) -> u64 {
        let a = self.alloc(data.len());
        self.mem.write_slice(data, GuestAddress(a)).unwrap();
        a
    }

    pub fn reset_data(&mut self) {
        self.next_data = DATA_BASE;
    }

    /// Writes descriptors for `bufs` (addr, len, device-writable) chained together and makes the
    /// chain available; returns its head index.
    pub fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let l = self.queues[q];
        let head = self.next_desc[q];
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let idx = (head as usize + k) % l.size as usize;
            let next = ((idx + 1) % l.size as usize) as u16;
            let mut flags = if w { F_WRITE } else { 0 };
            if k + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            self.write_desc(q, idx as u16, addr, len, flags, next);
        }
        self.next_desc[q] = ((head as usize + bufs.len()) % l.size as usize) as u16;
        self.push_avail(q, head);
        head
    }

    pub fn write_desc(&self, q: usize, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let l = self.queues[q];
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&d, GuestAddress(l.desc + 16 * u64::from(idx)))
            .unwrap();
    }

    pub fn push_avail(&mut self, q: usize, head: u16) {
        let l = self.queues[q];
        let i = self.avail_idx[q];
        let slot = l.avail + 4 + 2 * u64::from(i % l.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx[q] = i.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q], GuestAddress(l.avail + 2))
            .unwrap();
    }

    pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
        self.avail_idx[q] = idx;
        let l = self.queues[q];
        self.mem.write_obj(idx, GuestAddress(l.avail + 2)).unwrap();
    }

    /// Notifies the device the way an ioeventfd would.
    pub fn kick(&self, q: usize) {
        self.dev.queue_events()[q].write(1).unwrap();
    }

    /// Notifies through the QueueNotify register (the transport's fallback path).
    pub fn kick_mmio(&self, q: u32) {
        self.write32(0x50, q);
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.queues[q].used + 2))
            .unwrap()
    }

    /// Used-ring entries (id, len) not yet seen.
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let l = self.queues[q];
        let idx = self.used_idx(q);
        let mut out = Vec::new();
        while self.used_seen[q] != idx {
            let slot = l.used + 4 + 8 * u64::from(self.used_seen[q] % l.size);
            let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
            out.push((id, len));
            self.used_seen[q] = self.used_seen[q].wrapping_add(1);
        }
        out
    }

    /// Runs the event loop until `q` has `n` new used entries (or panics after `timeout`).
    pub fn wait_used(&mut self, q: usize, n: usize, timeout: Duration) -> Vec<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            got.extend(self.take_used(q));
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} used entries on queue {q}, got {got:?}"
            );
            self.em.run_with_timeout(20).unwrap();
        }
    }

    /// Runs the event loop for a while, processing whatever is ready.
    pub fn pump(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        while Instant::now() < deadline {
            self.em.run_with_timeout(10).unwrap();
        }
    }

    pub fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    /// Whether the irqfd fired since the last call (drains it).
    pub fn irq_fired(&self) -> bool {
        self.dev.interrupt_evt().read().is_ok()
    }

    pub fn interrupt_status(&self) -> u32 {
        self.read32(0x60)
    }
}
