//! Validation of guest-supplied descriptor chains, and copies in and out of them.
//!
//! A chain is accepted only if: it is non-empty; it ends (no loop, no `next` index outside the
//! table, no unreadable descriptor: `virtio_queue` stops such chains after `queue size`
//! descriptors and we detect the cut because the last descriptor still has NEXT); its total
//! length fits in 32 bits; every device-readable descriptor comes before every device-writable
//! one; and every buffer lies entirely inside guest memory. All later copies go through
//! `vm_memory` bounds-checked accessors, so a bad chain can never reach host memory outside the
//! guest's.

use std::ops::Deref;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// Why a descriptor chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("descriptor chain is empty (head index out of range or unreadable)")]
    Empty,
    #[error("descriptor chain does not end: loop, bad next index or length overflow")]
    Unterminated,
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    #[error("buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("chain is missing a required {0} part")]
    Missing(&'static str),
    #[error("chain access {offset}+{len} is past the end of its {len_avail}-byte buffers")]
    OutOfRange {
        offset: usize,
        len: usize,
        len_avail: usize,
    },
    #[error("guest memory access failed: {0}")]
    Memory(String),
}

/// A contiguous guest buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A validated descriptor chain: its head index and its device-readable and device-writable
/// buffers, each seen as one byte stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    readable: Vec<Segment>,
    writable: Vec<Segment>,
    readable_len: usize,
    writable_len: usize,
}

impl Chain {
    /// Walks and validates `chain` (see the module docs).
    pub fn parse<M>(mem: &GuestMemoryMmap, chain: DescriptorChain<M>) -> Result<Self, ChainError>
    where
        M: Deref<Target = GuestMemoryMmap>,
    {
        let head = chain.head_index();
        let mut out = Chain {
            head,
            ..Default::default()
        };
        let mut last_has_next = false;
        let mut count = 0usize;
        for desc in chain {
            count += 1;
            last_has_next = desc.has_next();
            let seg = Segment {
                addr: desc.addr(),
                len: desc.len(),
            };
            if seg.len == 0 {
                continue;
            }
            let perm = if desc.is_write_only() {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(seg.addr, seg.len as usize, perm) {
                return Err(ChainError::OutsideMemory {
                    addr: seg.addr.raw_value(),
                    len: seg.len,
                });
            }
            if desc.is_write_only() {
                out.writable_len += seg.len as usize;
                out.writable.push(seg);
            } else {
                if !out.writable.is_empty() {
                    return Err(ChainError::ReadableAfterWritable);
                }
                out.readable_len += seg.len as usize;
                out.readable.push(seg);
            }
        }
        if count == 0 {
            return Err(ChainError::Empty);
        }
        if last_has_next {
            return Err(ChainError::Unterminated);
        }
        Ok(out)
    }

    pub fn readable_len(&self) -> usize {
        self.readable_len
    }

    pub fn writable_len(&self) -> usize {
        self.writable_len
    }

    /// Guest ranges covering `len` bytes at `offset` of the readable stream.
    pub fn readable_ranges(
        &self,
        offset: usize,
        len: usize,
    ) -> Result<Vec<(GuestAddress, usize)>, ChainError> {
        ranges(&self.readable, self.readable_len, offset, len)
    }

    /// Guest ranges covering `len` bytes at `offset` of the writable stream.
    pub fn writable_ranges(
        &self,
        offset: usize,
        len: usize,
    ) -> Result<Vec<(GuestAddress, usize)>, ChainError> {
        ranges(&self.writable, self.writable_len, offset, len)
    }

    /// Copies `buf.len()` bytes from the readable stream at `offset`.
    pub fn read_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        let mut done = 0;
        for (addr, n) in self.readable_ranges(offset, buf.len())? {
            mem.read_slice(&mut buf[done..done + n], addr)
                .map_err(|e| ChainError::Memory(e.to_string()))?;
            done += n;
        }
        Ok(())
    }

    /// Copies `buf` into the writable stream at `offset`.
    pub fn write_at(
        &self,
        mem: &GuestMemoryMmap,
        offset: usize,
        buf: &[u8],
    ) -> Result<(), ChainError> {
        let mut done = 0;
        for (addr, n) in self.writable_ranges(offset, buf.len())? {
            mem.write_slice(&buf[done..done + n], addr)
                .map_err(|e| ChainError::Memory(e.to_string()))?;
            done += n;
        }
        Ok(())
    }
}

fn ranges(
    segs: &[Segment],
    total: usize,
    offset: usize,
    len: usize,
) -> Result<Vec<(GuestAddress, usize)>, ChainError> {
    let end = offset.checked_add(len).filter(|&e| e <= total);
    if end.is_none() {
        return Err(ChainError::OutOfRange {
            offset,
            len,
            len_avail: total,
        });
    }
    let mut out = Vec::new();
    let mut skip = offset;
    let mut left = len;
    for s in segs {
        if left == 0 {
            break;
        }
        let slen = s.len as usize;
        if skip >= slen {
            skip -= slen;
            continue;
        }
        let n = (slen - skip).min(left);
        // Cannot overflow: the segment was checked to lie inside guest memory.
        out.push((s.addr.unchecked_add(skip as u64), n));
        left -= n;
        skip = 0;
    }
    Ok(out)
}

/// What popping the next available chain gave.
#[derive(Debug)]
pub enum Popped {
    /// A well-formed chain.
    Chain(Chain),
    /// A malformed chain: the request is dropped (returned to the used ring with length 0).
    Bad { head: u16, error: ChainError },
}

/// Why a whole queue is unusable until the driver resets the device.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("available ring: {0}")]
    Avail(virtio_queue::Error),
    #[error("used ring: {0}")]
    Used(virtio_queue::Error),
}

/// Pops and validates the next available chain; `Ok(None)` when the ring is empty.
///
/// On an empty ring, driver notifications are re-enabled first (with VIRTIO_RING_F_EVENT_IDX
/// this publishes `avail_event`, without which the driver would stop notifying) and the ring
/// is checked once more, so a buffer made available meanwhile is not missed. The re-checks
/// are bounded so a guest flipping its avail index cannot keep the device spinning.
pub fn pop(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<Option<Popped>, QueueError> {
    for _ in 0..4 {
        if let Some(p) = pop_once(queue, mem)? {
            return Ok(Some(p));
        }
        if !queue.enable_notification(mem).map_err(QueueError::Avail)? {
            return Ok(None);
        }
    }
    Ok(None)
}

fn pop_once(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<Option<Popped>, QueueError> {
    let mut iter = queue.iter(mem).map_err(QueueError::Avail)?;
    let Some(chain) = iter.next() else {
        return Ok(None);
    };
    let head = chain.head_index();
    Ok(Some(match Chain::parse(mem, chain) {
        Ok(c) => Popped::Chain(c),
        Err(error) => Popped::Bad { head, error },
    }))
}

/// After used entries were added: interrupts the driver unless it asked not to be (EVENT_IDX
/// `used_event`).
pub fn notify_used(queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &super::Interrupt) {
    // On a guest memory error, interrupt anyway: a spurious interrupt is harmless.
    if queue.needs_notification(mem).unwrap_or(true) {
        interrupt.signal_used_queue();
    }
}

/// Puts `head` back into the used ring with `len` bytes written.
pub fn complete(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), QueueError> {
    queue.add_used(mem, head, len).map_err(QueueError::Used)
}

/// Undoes the last [`pop`] (used when a rate limiter or a full host buffer defers a request).
pub fn unpop(queue: &mut Queue) {
    queue.go_to_previous_position();
}
