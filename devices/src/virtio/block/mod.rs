//! virtio-blk over a raw image file (virtio spec 5.2): IN, OUT, FLUSH, GET_ID; optional
//! read-only mode and rate limiting.

mod request;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::chain::{self, Popped};
use super::counters::{self, BlockCounters};
use super::rate_limiter::{RateLimiter, RateLimiterConfig, RateLimiterError};
use super::{device_type, ActivateError, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};

pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID serial (virtio spec 5.2.6).
pub const ID_LEN: usize = 20;
const QUEUE_SIZE: u16 = 256;
/// Data segments in one request: all of a queue's descriptors but the header and the status
/// (what QEMU offers too), so a request fits the ring without indirect descriptors.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

/// `--disk PATH[,ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// Raw image file (or block device).
    pub path: PathBuf,
    pub read_only: bool,
    /// Drive id, returned to the guest as the serial (GET_ID): its first 20 bytes.
    pub id: String,
    pub rate_limiter: Option<RateLimiterConfig>,
    /// The guest's root filesystem: the VMM adds `root=/dev/vda` (only the first disk, which
    /// the guest sees as /dev/vda, may be root). The device itself ignores it.
    pub root: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("disk image {0:?} does not exist; give the path of an existing raw image file")]
    NotFound(PathBuf),
    #[error("disk image {0:?} is a directory; give the path of a raw image file")]
    IsDirectory(PathBuf),
    #[error(
        "cannot open disk image {path:?} {mode}: {source}; check its permissions, or add ',ro' \
         to attach it read-only"
    )]
    Open {
        path: PathBuf,
        mode: &'static str,
        source: io::Error,
    },
    #[error("disk {id:?}: {source}")]
    RateLimiter {
        id: String,
        source: RateLimiterError,
    },
    #[error("disk {id:?}: {source}")]
    Io { id: String, source: io::Error },
}

struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
    broken: bool,
}

/// A virtio block device.
pub struct Block {
    file: File,
    path: PathBuf,
    capacity: u64,
    read_only: bool,
    id: [u8; ID_LEN],
    features: u64,
    queue_evts: [EventFd; 1],
    limiter: Option<RateLimiter>,
    active: Option<Active>,
    counters: Arc<BlockCounters>,
}

const EV_QUEUE: u32 = 0;
const EV_LIMITER: u32 = 1;

impl Block {
    pub fn new(cfg: BlockConfig) -> Result<Self, BlockError> {
        let meta = std::fs::metadata(&cfg.path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlockError::NotFound(cfg.path.clone()),
            _ => BlockError::Open {
                path: cfg.path.clone(),
                mode: "for stat",
                source: e,
            },
        })?;
        if meta.is_dir() {
            return Err(BlockError::IsDirectory(cfg.path));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!cfg.read_only)
            .open(&cfg.path)
            .map_err(|source| BlockError::Open {
                path: cfg.path.clone(),
                mode: if cfg.read_only {
                    "read-only"
                } else {
                    "read-write"
                },
                source,
            })?;
        let io_err = |source| BlockError::Io {
            id: cfg.id.clone(),
            source,
        };
        // Works for regular files and block devices alike.
        let size = {
            use std::io::Seek;
            (&file).seek(io::SeekFrom::End(0)).map_err(io_err)?
        };
        if size % SECTOR_SIZE != 0 {
            tracing::warn!(
                path = ?cfg.path,
                size,
                "disk image size is not a multiple of 512; the last {} bytes are not visible \
                 to the guest",
                size % SECTOR_SIZE
            );
        }
        // The serial holds 20 bytes; longer drive ids (the API allows them) are cut.
        let mut id = [0u8; ID_LEN];
        let n = cfg.id.len().min(ID_LEN);
        if n < cfg.id.len() {
            tracing::warn!(
                id = cfg.id,
                "drive id longer than 20 bytes: the guest sees its first 20"
            );
        }
        id[..n].copy_from_slice(&cfg.id.as_bytes()[..n]);
        // Always a limiter (unlimited without a config), so its timer is registered at boot
        // and PATCH /drives can set limits later.
        let limiter = RateLimiter::new(cfg.rate_limiter.unwrap_or_default())
            .map(Some)
            .map_err(|source| BlockError::RateLimiter {
                id: cfg.id.clone(),
                source,
            })?;
        // SEG_MAX: without it a Linux driver puts one segment (usually one page) in each
        // request, so every 4 KiB costs a notification, an interrupt and a completion.
        let mut features =
            VIRTIO_F_VERSION_1 | (1 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_SEG_MAX);
        if cfg.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        Ok(Self {
            file,
            path: cfg.path,
            capacity: size / SECTOR_SIZE,
            read_only: cfg.read_only,
            id,
            features,
            queue_evts: [EventFd::new(EFD_NONBLOCK).map_err(io_err)?],
            limiter,
            active: None,
            counters: Arc::default(),
        })
    }

    /// The device's counters (shared; keep a clone before wrapping the device).
    pub fn counters(&self) -> Arc<BlockCounters> {
        self.counters.clone()
    }

    /// Replaces the backing file with `path` (opened with the same read-only mode), updates
    /// the capacity and, once the guest drives the device, raises a configuration-change
    /// interrupt so it re-reads the capacity. Requests in flight finish on the old file.
    pub fn swap_backing(&mut self, path: PathBuf) -> Result<(), BlockError> {
        let fresh = Block::new(BlockConfig {
            path,
            read_only: self.read_only,
            id: String::new(),
            rate_limiter: None,
            root: false,
        })?;
        self.file = fresh.file;
        self.path = fresh.path;
        self.capacity = fresh.capacity;
        if let Some(a) = &self.active {
            a.interrupt.signal_config_change();
        }
        Ok(())
    }

    /// Replaces the rate limiter's buckets that `cfg` gives (size 0 turns a limit off).
    pub fn update_rate_limiter(&mut self, cfg: RateLimiterConfig) -> Result<(), BlockError> {
        if let Some(l) = self.limiter.as_mut() {
            l.update(cfg).map_err(|source| BlockError::RateLimiter {
                id: String::from_utf8_lossy(&self.id)
                    .trim_end_matches('\0')
                    .to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn process_queue(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if a.broken {
            return;
        }
        let mut used = false;
        loop {
            if self.limiter.as_ref().is_some_and(RateLimiter::is_blocked) {
                break;
            }
            let popped = match chain::pop(&mut a.queue, &a.mem) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("virtio-blk {:?}: {e}", self.path);
                    a.broken = true;
                    a.interrupt.set_needs_reset();
                    break;
                }
            };
            let (head, len) = match popped {
                Popped::Bad { head, error } => {
                    tracing::warn!("virtio-blk {:?}: request dropped: {error}", self.path);
                    (head, 0)
                }
                Popped::Chain(c) => {
                    if let Some(l) = self.limiter.as_mut() {
                        let bytes = request::data_len(&c);
                        if !l.consume(bytes) {
                            counters::add(&self.counters.rate_limited, 1);
                            chain::unpop(&mut a.queue);
                            break;
                        }
                    }
                    let len = request::execute(
                        &mut self.file,
                        &a.mem,
                        &c,
                        self.capacity,
                        self.read_only,
                        &self.id,
                        &self.counters,
                    );
                    (c.head, len)
                }
            };
            if let Err(e) = chain::complete(&mut a.queue, &a.mem, head, len) {
                tracing::warn!("virtio-blk {:?}: {e}", self.path);
                a.broken = true;
                a.interrupt.set_needs_reset();
                break;
            }
            used = true;
        }
        if used {
            chain::notify_used(&mut a.queue, &a.mem, &a.interrupt);
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        self.features
    }

    fn set_acked_features(&mut self, _acked: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config: `capacity` (le64 at 0), `size_max` (le32 at 8, unused:
        // no VIRTIO_BLK_F_SIZE_MAX), `seg_max` (le32 at 12); the rest needs other features.
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&self.capacity.to_le_bytes());
        config[12..].copy_from_slice(&SEG_MAX.to_le_bytes());
        super::read_config_bytes(&config, offset, data);
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        mut queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        ActivateError::check(self.active.is_some(), &queues, 1)?;
        self.active = Some(Active {
            mem,
            queue: queues.remove(0),
            interrupt,
            broken: false,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        let q = Events::with_data(&self.queue_evts[0], EV_QUEUE, EventSet::IN);
        if let Err(e) = ops.add(q) {
            tracing::error!("virtio-blk {:?}: cannot watch queue event: {e}", self.path);
        }
        if let Some(l) = &self.limiter {
            let t = Events::with_data_raw(l.timer_fd(), EV_LIMITER, EventSet::IN);
            if let Err(e) = ops.add(t) {
                tracing::error!(
                    "virtio-blk {:?}: cannot watch limiter timer: {e}",
                    self.path
                );
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            EV_QUEUE => {
                let _ = self.queue_evts[0].read();
                if self.active.is_none() {
                    tracing::warn!("virtio-blk {:?}: notified while inactive", self.path);
                    return;
                }
            }
            EV_LIMITER => {
                if let Some(l) = self.limiter.as_mut() {
                    l.on_timer();
                }
            }
            d => tracing::warn!("virtio-blk: unexpected event data {d}"),
        }
        self.process_queue();
    }
}
