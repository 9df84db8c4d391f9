//! `PUT /drives/{drive_id}` and `PATCH /drives/{drive_id}`.

use serde::{Deserialize, Serialize};

use super::RateLimiterConfig;

/// Caching strategy of a block device (Firecracker's `cache_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flush requests are acknowledged without syncing (the default).
    #[default]
    Unsafe,
    /// Flush requests sync the backing file.
    Writeback,
}

/// I/O engine of a block device (Firecracker's `io_engine`); vmctl runs both synchronously.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Synchronous I/O (the default).
    #[default]
    Sync,
    /// Accepted for compatibility; served like `Sync`.
    Async,
}

/// A virtio block device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDeviceConfig {
    /// Id of the drive, `[a-zA-Z0-9_]{1,64}`; must equal the id in the path.
    pub drive_id: String,
    /// Host path of the backing file or block device.
    pub path_on_host: String,
    /// Whether the guest's root filesystem is on this drive (`root=/dev/vda`).
    pub is_root_device: bool,
    /// Whether the guest sees the drive read-only.
    #[serde(default)]
    pub is_read_only: bool,
    /// Partition UUID of the root partition (`root=PARTUUID=...`), root device only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Caching strategy.
    #[serde(default)]
    pub cache_type: CacheType,
    /// I/O engine.
    #[serde(default)]
    pub io_engine: IoEngine,
    /// Rate limiter of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// A post-boot update of a drive: a new backing file and/or a new rate limiter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDeviceUpdateConfig {
    /// Id of the drive to update; must equal the id in the path.
    pub drive_id: String,
    /// New host path of the backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// New rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
}
