//! Executing one virtio-blk request (virtio spec 5.2.6).

use std::fs::File;
use std::io::{Seek, SeekFrom};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::{ID_LEN, SECTOR_SIZE};
use crate::virtio::chain::Chain;
use crate::virtio::counters::{add, BlockCounters};

const HEADER_LEN: usize = 16;

/// Bytes of data the request moves (for the bandwidth limiter).
pub(super) fn data_len(c: &Chain) -> u64 {
    let out = c.readable_len().saturating_sub(HEADER_LEN);
    let inb = c.writable_len().saturating_sub(1);
    (out + inb) as u64
}

/// Runs the request in `c` and writes its status byte; returns the number of bytes written into
/// guest memory (the used-ring length). Returns 0 if the chain has no room for a status byte:
/// such a request cannot be answered and is dropped.
pub(super) fn execute(
    file: &mut File,
    mem: &GuestMemoryMmap,
    c: &Chain,
    capacity: u64,
    read_only: bool,
    id: &[u8; ID_LEN],
    counters: &BlockCounters,
) -> u32 {
    if c.writable_len() == 0 {
        tracing::warn!("virtio-blk: request without a status byte dropped");
        return 0;
    }
    let status_off = c.writable_len() - 1;
    let (status, data_written) = run(file, mem, c, capacity, read_only, id, status_off);
    count(counters, mem, c, status);
    if let Err(e) = c.write_at(mem, status_off, &[status as u8]) {
        tracing::warn!("virtio-blk: cannot write status: {e}");
        return 0;
    }
    // Cannot overflow: the chain's total length fits in u32.
    (data_written + 1) as u32
}

/// Bumps the counters for a finished request.
fn count(counters: &BlockCounters, mem: &GuestMemoryMmap, c: &Chain, status: u32) {
    if status != VIRTIO_BLK_S_OK {
        add(&counters.errors, 1);
        return;
    }
    let mut ty = [0u8; 4];
    if c.read_at(mem, 0, &mut ty).is_err() {
        return;
    }
    match u32::from_le_bytes(ty) {
        VIRTIO_BLK_T_IN => {
            add(&counters.read_ops, 1);
            add(
                &counters.read_bytes,
                c.writable_len().saturating_sub(1) as u64,
            );
        }
        VIRTIO_BLK_T_OUT => {
            add(&counters.write_ops, 1);
            add(
                &counters.write_bytes,
                c.readable_len().saturating_sub(HEADER_LEN) as u64,
            );
        }
        VIRTIO_BLK_T_FLUSH => add(&counters.flushes, 1),
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    file: &mut File,
    mem: &GuestMemoryMmap,
    c: &Chain,
    capacity: u64,
    read_only: bool,
    id: &[u8; ID_LEN],
    in_len: usize,
) -> (u32, usize) {
    let mut hdr = [0u8; HEADER_LEN];
    if c.read_at(mem, 0, &mut hdr).is_err() {
        tracing::warn!("virtio-blk: request header shorter than 16 bytes");
        return (VIRTIO_BLK_S_IOERR, 0);
    }
    let ty = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
    let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
    match ty {
        VIRTIO_BLK_T_IN => match rw(file, mem, c, capacity, sector, in_len, true) {
            Ok(()) => (VIRTIO_BLK_S_OK, in_len),
            Err(e) => {
                tracing::warn!("virtio-blk: read at sector {sector}: {e}");
                (VIRTIO_BLK_S_IOERR, 0)
            }
        },
        VIRTIO_BLK_T_OUT => {
            if read_only {
                tracing::debug!("virtio-blk: write to read-only disk refused");
                return (VIRTIO_BLK_S_IOERR, 0);
            }
            let len = c.readable_len() - HEADER_LEN;
            match rw(file, mem, c, capacity, sector, len, false) {
                Ok(()) => (VIRTIO_BLK_S_OK, 0),
                Err(e) => {
                    tracing::warn!("virtio-blk: write at sector {sector}: {e}");
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
        }
        VIRTIO_BLK_T_FLUSH => {
            if read_only {
                return (VIRTIO_BLK_S_OK, 0);
            }
            match file.sync_data() {
                Ok(()) => (VIRTIO_BLK_S_OK, 0),
                Err(e) => {
                    tracing::error!("virtio-blk: flush failed: {e}");
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
        }
        VIRTIO_BLK_T_GET_ID => {
            let n = in_len.min(ID_LEN);
            match c.write_at(mem, 0, &id[..n]) {
                Ok(()) => (VIRTIO_BLK_S_OK, n),
                Err(_) => (VIRTIO_BLK_S_IOERR, 0),
            }
        }
        other => {
            tracing::debug!("virtio-blk: unsupported request type {other}");
            (VIRTIO_BLK_S_UNSUPP, 0)
        }
    }
}

/// Moves `len` bytes between the image at `sector` and the chain's data buffers (the writable
/// buffers before the status byte for reads, the readable buffers after the header for writes).
fn rw(
    file: &mut File,
    mem: &GuestMemoryMmap,
    c: &Chain,
    capacity: u64,
    sector: u64,
    len: usize,
    read: bool,
) -> Result<(), String> {
    if len as u64 % SECTOR_SIZE != 0 {
        return Err(format!("length {len} is not a multiple of 512"));
    }
    let end = sector.checked_add(len as u64 / SECTOR_SIZE);
    if end.is_none_or(|e| e > capacity) {
        return Err(format!(
            "{len} bytes at sector {sector} is past the end ({capacity} sectors)"
        ));
    }
    let ranges = if read {
        c.writable_ranges(0, len)
    } else {
        c.readable_ranges(HEADER_LEN, len)
    }
    .map_err(|e| e.to_string())?;
    // Cannot overflow: sector < capacity <= file size / 512.
    let mut pos = sector * SECTOR_SIZE;
    for (addr, n) in ranges {
        file.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
        if read {
            mem.read_exact_volatile_from(addr, file, n)
        } else {
            mem.write_all_volatile_to(addr, file, n)
        }
        .map_err(|e| e.to_string())?;
        pos += n as u64;
    }
    Ok(())
}
