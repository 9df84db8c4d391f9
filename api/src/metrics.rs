//! Metrics: the numbers the VMM reports and the JSON-lines writer.
//!
//! Each flush (the `FlushMetrics` action, or the VMM's periodic timer) appends one JSON object
//! and a newline to the `metrics_path` file or named pipe.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// vCPU exits by kind, summed over all vCPUs since boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCounts {
    /// Port I/O reads.
    pub io_in: u64,
    /// Port I/O writes.
    pub io_out: u64,
    /// MMIO reads.
    pub mmio_read: u64,
    /// MMIO writes.
    pub mmio_write: u64,
    /// HLT exits.
    pub hlt: u64,
    /// Shutdown (triple fault) exits.
    pub shutdown: u64,
    /// System events (reset, shutdown requests).
    pub system_event: u64,
    /// Failed VM entries and internal errors.
    pub fail_entry: u64,
    /// Any other exit reason.
    pub other: u64,
}

/// Counters of one block device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCounters {
    /// Bytes read by the guest.
    pub read_bytes: u64,
    /// Bytes written by the guest.
    pub write_bytes: u64,
    /// Read requests.
    pub read_count: u64,
    /// Write requests.
    pub write_count: u64,
    /// Flush requests.
    pub flush_count: u64,
    /// Requests delayed by the rate limiter.
    pub rate_limited: u64,
    /// Requests that failed.
    pub errors: u64,
}

/// Counters of one network device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCounters {
    /// Bytes received by the guest.
    pub rx_bytes: u64,
    /// Bytes sent by the guest.
    pub tx_bytes: u64,
    /// Frames received by the guest.
    pub rx_packets: u64,
    /// Frames sent by the guest.
    pub tx_packets: u64,
    /// Frames dropped (no buffer, errors).
    pub dropped: u64,
    /// Frames delayed by a rate limiter.
    pub rate_limited: u64,
}

/// Counters of the vsock device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockCounters {
    /// Bytes from host to guest.
    pub rx_bytes: u64,
    /// Bytes from guest to host.
    pub tx_bytes: u64,
    /// Connections opened.
    pub conns_added: u64,
    /// Connections closed.
    pub conns_removed: u64,
}

/// The VMM's counters at one moment; the runtime side fills what it knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmMetrics {
    /// Microseconds from process start to the guest's boot-done marker, once it was seen.
    pub boot_time_us: Option<u64>,
    /// vCPU exits by kind.
    pub vcpu_exits: ExitCounts,
    /// Block device counters by drive_id.
    pub block: BTreeMap<String, BlockCounters>,
    /// Network device counters by iface_id.
    pub net: BTreeMap<String, NetCounters>,
    /// vsock counters, when a vsock device exists.
    pub vsock: Option<VsockCounters>,
}

/// API request counters, kept by the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCounters {
    /// Requests handled.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

/// One line of the metrics file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Wall-clock time of the flush, milliseconds since the Unix epoch.
    pub utc_timestamp_ms: u64,
    /// API counters.
    pub api: ApiCounters,
    /// VMM counters.
    #[serde(flatten)]
    pub vmm: VmmMetrics,
}

/// Appends metric lines to a file or named pipe.
#[derive(Debug)]
pub struct MetricsWriter {
    file: File,
}

impl MetricsWriter {
    /// Opens (creating if needed, mode 0600) `path` for appending. A named pipe must already
    /// have a reader, or opening fails with ENXIO rather than blocking the VMM.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self { file })
    }

    /// Writes one line: `line` as JSON with the current time stamped in.
    pub fn write(&mut self, line: &mut MetricsLine) -> std::io::Result<()> {
        line.utc_timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        text.push(b'\n');
        self.file.write_all(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        let mut w = MetricsWriter::open(&p).unwrap();
        let mut line = MetricsLine::default();
        line.vmm.vcpu_exits.io_out = 7;
        line.vmm.block.insert(
            "rootfs".into(),
            BlockCounters {
                read_bytes: 512,
                ..Default::default()
            },
        );
        w.write(&mut line).unwrap();
        w.write(&mut line).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: MetricsLine = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(back.vmm.vcpu_exits.io_out, 7);
        assert_eq!(back.vmm.block["rootfs"].read_bytes, 512);
        assert!(back.utc_timestamp_ms > 1_600_000_000_000);
    }
}
