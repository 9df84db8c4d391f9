//! Device counters for metrics: relaxed atomics the device bumps on its event-loop thread and
//! the metrics writer reads from any thread (shared through an `Arc` taken before the device is
//! wrapped in its transport).

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// virtio-blk counters.
#[derive(Debug, Default)]
pub struct BlockCounters {
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub read_ops: AtomicU64,
    pub write_ops: AtomicU64,
    pub flushes: AtomicU64,
    /// Requests answered with an error status (I/O errors, bad requests, writes to a
    /// read-only disk).
    pub errors: AtomicU64,
    /// Times the rate limiter held a request back.
    pub rate_limited: AtomicU64,
}

/// virtio-net counters.
#[derive(Debug, Default)]
pub struct NetCounters {
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    pub dropped: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// virtio-vsock counters.
#[derive(Debug, Default)]
pub struct VsockCounters {
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub conns_added: AtomicU64,
    pub conns_removed: AtomicU64,
}
