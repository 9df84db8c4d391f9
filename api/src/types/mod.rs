//! Wire types of the REST API, with Firecracker's field names.
//!
//! Every request body type denies unknown fields, so a typo in a field name is a 400 that names
//! the field instead of a silently ignored setting.

mod boot_source;
mod drive;
mod instance;
mod logging;
mod machine;
mod net;
mod rate_limiter;
mod vsock;

pub use boot_source::BootSourceConfig;
pub use drive::{BlockDeviceConfig, BlockDeviceUpdateConfig, CacheType, IoEngine};
pub use instance::{ActionType, FaultMessage, InstanceActionInfo, InstanceInfo, VersionInfo};
pub use instance::{VmState, VmStateRequest, VmStateUpdate};
pub use logging::{LogLevel, LoggerConfig, MetricsConfig};
pub use machine::{MachineConfig, MachineConfigUpdate};
pub use net::{MacAddr, NetworkInterfaceConfig, NetworkInterfaceUpdateConfig};
pub use rate_limiter::{RateLimiterConfig, TokenBucketConfig};
pub use vsock::VsockConfig;

/// Longest resource id (drive_id, iface_id, vsock_id) accepted, as Firecracker.
pub const MAX_ID_LEN: usize = 64;

/// Checks a resource id: 1 to 64 characters out of `[a-zA-Z0-9_]`, as Firecracker allows.
pub fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!(
            "{field} cannot be empty; use 1 to {MAX_ID_LEN} characters [a-zA-Z0-9_]"
        ));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "{field} '{}…' is {} characters long; the limit is {MAX_ID_LEN}",
            id.chars().take(16).collect::<String>(),
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "{field} '{id}' contains the character {bad:?}; only [a-zA-Z0-9_] is allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        check_id("drive_id", "rootfs_1").unwrap();
        check_id("drive_id", &"a".repeat(64)).unwrap();
        assert!(check_id("drive_id", "").unwrap_err().contains("empty"));
        assert!(check_id("drive_id", &"a".repeat(65))
            .unwrap_err()
            .contains("limit is 64"));
        assert!(check_id("drive_id", "a-b").unwrap_err().contains("'-'"));
        assert!(check_id("drive_id", "é").is_err());
    }
}
