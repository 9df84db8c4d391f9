//! The full VM configuration, shared by the API and `--config-file`.
//!
//! Its JSON shape is Firecracker's `--config-file` and `GET /vm/config` shape:
//! `{"boot-source", "drives", "machine-config", "network-interfaces", "vsock", "logger",
//! "metrics"}`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::types::{
    check_id, BlockDeviceConfig, BlockDeviceUpdateConfig, BootSourceConfig, LoggerConfig,
    MachineConfig, MachineConfigUpdate, MetricsConfig, NetworkInterfaceConfig,
    NetworkInterfaceUpdateConfig, VsockConfig,
};

/// Sections of Firecracker's configuration that vmctl lacks: accepted only when null, so a
/// Firecracker `GET /vm/config` export loads, and refused by name otherwise.
const FIRECRACKER_ONLY_SECTIONS: &[&str] = &[
    "balloon",
    "mmds-config",
    "entropy",
    "cpu-config",
    "serial",
    "pmem",
    "memory-hotplug",
];

/// Longest TAP device name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// A configuration that cannot be used; the message names the field, the value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        ConfigError(s)
    }
}

/// Everything a microVM is made of, before and after boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmResources {
    /// Kernel, initrd and command line.
    #[serde(rename = "boot-source", default)]
    pub boot_source: Option<BootSourceConfig>,
    /// Block devices, in the order they were added (the guest sees vda, vdb, ...).
    #[serde(default)]
    pub drives: Vec<BlockDeviceConfig>,
    /// vCPUs and memory.
    #[serde(rename = "machine-config", default)]
    pub machine_config: MachineConfig,
    /// Network devices, in the order they were added.
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterfaceConfig>,
    /// The vsock device.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Logger settings.
    #[serde(default)]
    pub logger: Option<LoggerConfig>,
    /// Metrics settings.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

fn check_file(field: &str, path: &str) -> Result<(), ConfigError> {
    if path.is_empty() {
        return Err(ConfigError(format!(
            "{field} is empty; give the path of a file"
        )));
    }
    match std::fs::metadata(Path::new(path)) {
        Ok(m) if m.is_dir() => Err(ConfigError(format!(
            "{field} '{path}' is a directory; give the path of a file"
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(ConfigError(format!("{field} '{path}' cannot be used: {e}"))),
    }
}

fn check_non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError(format!("{field} is empty; give a path")));
    }
    Ok(())
}

impl VmResources {
    /// Parses and validates a `--config-file` document. Errors name the JSON path of the bad
    /// field (e.g. `machine-config.vcpu_count`).
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let mut doc: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ConfigError(format!("configuration is not valid JSON: {e}")))?;
        if let Some(obj) = doc.as_object_mut() {
            for key in FIRECRACKER_ONLY_SECTIONS {
                match obj.remove(*key) {
                    None | Some(serde_json::Value::Null) => {}
                    Some(_) => {
                        return Err(ConfigError(format!(
                            "'{key}' is a Firecracker feature vmctl does not support; remove \
                             the section (or set it to null)"
                        )))
                    }
                }
            }
        }
        let parsed: VmResources = serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            ConfigError(format!("invalid configuration at '{path}': {}", e.inner()))
        })?;
        let mut out = VmResources::default();
        if let Some(b) = parsed.boot_source {
            out.set_boot_source(b)?;
        }
        out.set_machine_config(parsed.machine_config)?;
        for d in parsed.drives {
            out.insert_drive(d)?;
        }
        for n in parsed.network_interfaces {
            out.insert_net(n)?;
        }
        if let Some(v) = parsed.vsock {
            out.set_vsock(v)?;
        }
        if let Some(l) = parsed.logger {
            out.set_logger(l)?;
        }
        if let Some(m) = parsed.metrics {
            out.set_metrics(m)?;
        }
        Ok(out)
    }

    /// The configuration as pretty JSON (the `GET /vm/config` body).
    pub fn to_json(&self) -> String {
        // Serializing plain structs with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Sets the boot source; the kernel (and initrd) must be readable files.
    pub fn set_boot_source(&mut self, cfg: BootSourceConfig) -> Result<(), ConfigError> {
        check_file("kernel_image_path", &cfg.kernel_image_path)?;
        if let Some(initrd) = &cfg.initrd_path {
            check_file("initrd_path", initrd)?;
        }
        if let Some(args) = &cfg.boot_args {
            if args.len() >= 4096 {
                return Err(ConfigError(format!(
                    "boot_args is {} bytes long; the kernel command line limit is 4095",
                    args.len()
                )));
            }
        }
        self.boot_source = Some(cfg);
        Ok(())
    }

    /// Replaces the machine configuration.
    pub fn set_machine_config(&mut self, cfg: MachineConfig) -> Result<(), ConfigError> {
        cfg.validate()?;
        self.machine_config = cfg;
        Ok(())
    }

    /// Applies a partial machine configuration; nothing changes if the result is invalid.
    pub fn update_machine_config(&mut self, up: &MachineConfigUpdate) -> Result<(), ConfigError> {
        self.set_machine_config(up.apply_to(&self.machine_config))
    }

    /// Adds a drive or replaces the one with the same id.
    pub fn insert_drive(&mut self, cfg: BlockDeviceConfig) -> Result<(), ConfigError> {
        check_id("drive_id", &cfg.drive_id)?;
        check_file("path_on_host", &cfg.path_on_host)?;
        if let Some(rl) = &cfg.rate_limiter {
            rl.validate("rate_limiter")?;
        }
        if cfg.partuuid.is_some() && !cfg.is_root_device {
            return Err(ConfigError(format!(
                "drive '{}' has a partuuid but is_root_device is false; partuuid is only for \
                 the root device",
                cfg.drive_id
            )));
        }
        if cfg.is_root_device {
            if let Some(other) = self
                .drives
                .iter()
                .find(|d| d.is_root_device && d.drive_id != cfg.drive_id)
            {
                return Err(ConfigError(format!(
                    "drive '{}' cannot be the root device: drive '{}' already is; only one root \
                     device is allowed",
                    cfg.drive_id, other.drive_id
                )));
            }
        }
        match self.drives.iter_mut().find(|d| d.drive_id == cfg.drive_id) {
            Some(slot) => *slot = cfg,
            None => self.drives.push(cfg),
        }
        Ok(())
    }

    /// Checks a post-boot drive update against the configured drives and records it.
    pub fn update_drive(&mut self, up: &BlockDeviceUpdateConfig) -> Result<(), ConfigError> {
        let Some(drive) = self.drives.iter_mut().find(|d| d.drive_id == up.drive_id) else {
            return Err(ConfigError(format!(
                "drive_id '{}' is not a configured drive; PUT /drives/{} first",
                up.drive_id, up.drive_id
            )));
        };
        if let Some(p) = &up.path_on_host {
            check_file("path_on_host", p)?;
        }
        if let Some(rl) = &up.rate_limiter {
            rl.validate("rate_limiter")?;
        }
        if let Some(p) = &up.path_on_host {
            drive.path_on_host = p.clone();
        }
        if let Some(rl) = up.rate_limiter {
            drive.rate_limiter = Some(rl);
        }
        Ok(())
    }

    /// Adds a network interface or replaces the one with the same id.
    pub fn insert_net(&mut self, cfg: NetworkInterfaceConfig) -> Result<(), ConfigError> {
        check_id("iface_id", &cfg.iface_id)?;
        let name = &cfg.host_dev_name;
        if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ', '\0']) {
            return Err(ConfigError(format!(
                "host_dev_name '{name}' is not a valid interface name; use 1 to {MAX_IFNAME} \
                 characters without '/' or spaces"
            )));
        }
        for rl in [
            ("rx_rate_limiter", &cfg.rx_rate_limiter),
            ("tx_rate_limiter", &cfg.tx_rate_limiter),
        ] {
            if let Some(r) = rl.1 {
                r.validate(rl.0)?;
            }
        }
        for other in self
            .network_interfaces
            .iter()
            .filter(|n| n.iface_id != cfg.iface_id)
        {
            if other.host_dev_name == cfg.host_dev_name {
                return Err(ConfigError(format!(
                    "host_dev_name '{}' is already used by interface '{}'",
                    cfg.host_dev_name, other.iface_id
                )));
            }
            if cfg.guest_mac.is_some() && other.guest_mac == cfg.guest_mac {
                return Err(ConfigError(format!(
                    "guest_mac {} is already used by interface '{}'",
                    cfg.guest_mac.map(|m| m.to_string()).unwrap_or_default(),
                    other.iface_id
                )));
            }
        }
        match self
            .network_interfaces
            .iter_mut()
            .find(|n| n.iface_id == cfg.iface_id)
        {
            Some(slot) => *slot = cfg,
            None => self.network_interfaces.push(cfg),
        }
        Ok(())
    }

    /// Checks a post-boot interface update and records it.
    pub fn update_net(&mut self, up: &NetworkInterfaceUpdateConfig) -> Result<(), ConfigError> {
        let Some(net) = self
            .network_interfaces
            .iter_mut()
            .find(|n| n.iface_id == up.iface_id)
        else {
            return Err(ConfigError(format!(
                "iface_id '{}' is not a configured network interface",
                up.iface_id
            )));
        };
        for rl in [
            ("rx_rate_limiter", &up.rx_rate_limiter),
            ("tx_rate_limiter", &up.tx_rate_limiter),
        ] {
            if let Some(r) = rl.1 {
                r.validate(rl.0)?;
            }
        }
        if up.rx_rate_limiter.is_some() {
            net.rx_rate_limiter = up.rx_rate_limiter;
        }
        if up.tx_rate_limiter.is_some() {
            net.tx_rate_limiter = up.tx_rate_limiter;
        }
        Ok(())
    }

    /// Sets the vsock device.
    pub fn set_vsock(&mut self, cfg: VsockConfig) -> Result<(), ConfigError> {
        if cfg.guest_cid < 3 {
            return Err(ConfigError(format!(
                "guest_cid {} is reserved; use 3 or more",
                cfg.guest_cid
            )));
        }
        check_non_empty("uds_path", &cfg.uds_path)?;
        if let Some(id) = &cfg.vsock_id {
            check_id("vsock_id", id)?;
        }
        self.vsock = Some(cfg);
        Ok(())
    }

    /// Sets the logger settings.
    pub fn set_logger(&mut self, cfg: LoggerConfig) -> Result<(), ConfigError> {
        check_non_empty("log_path", &cfg.log_path)?;
        self.logger = Some(cfg);
        Ok(())
    }

    /// Sets the metrics settings.
    pub fn set_metrics(&mut self, cfg: MetricsConfig) -> Result<(), ConfigError> {
        check_non_empty("metrics_path", &cfg.metrics_path)?;
        self.metrics = Some(cfg);
        Ok(())
    }

    /// Checks that the VM can boot: a boot source is set.
    pub fn validate_for_start(&self) -> Result<(), ConfigError> {
        if self.boot_source.is_none() {
            return Err(ConfigError(
                "no boot source; PUT /boot-source with kernel_image_path before InstanceStart"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
