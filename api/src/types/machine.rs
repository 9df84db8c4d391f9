//! `PUT|PATCH|GET /machine-config`.

use serde::{Deserialize, Serialize};

/// Fewest vCPUs.
pub const MIN_VCPUS: u8 = 1;
/// Most vCPUs (Firecracker's limit).
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory in MiB: below this no Linux guest boots.
pub const MIN_MEM_MIB: usize = 16;
/// Most guest memory in MiB (1 TiB).
pub const MAX_MEM_MIB: usize = 1 << 20;

fn default_vcpus() -> u8 {
    1
}
fn default_mem() -> usize {
    128
}

/// The VM's size. Defaults as Firecracker: 1 vCPU, 128 MiB, no SMT, no dirty page tracking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs, 1..=32 (1 or even when `smt` is on).
    #[serde(default = "default_vcpus")]
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_mem")]
    pub mem_size_mib: usize,
    /// Simultaneous multithreading: vCPUs are presented as sibling pairs.
    #[serde(default)]
    pub smt: bool,
    /// Track dirty guest pages (KVM dirty log).
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Firecracker's CPU template; only `"None"` is supported and it is not echoed back.
    #[serde(default, skip_serializing)]
    pub cpu_template: Option<String>,
    /// Firecracker's huge pages setting; only `"None"` is supported and it is not echoed back.
    #[serde(default, skip_serializing)]
    pub huge_pages: Option<String>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: default_vcpus(),
            mem_size_mib: default_mem(),
            smt: false,
            track_dirty_pages: false,
            cpu_template: None,
            huge_pages: None,
        }
    }
}

impl MachineConfig {
    /// Checks the ranges; the error names the field, the value and the allowed values.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_VCPUS..=MAX_VCPUS).contains(&self.vcpu_count) {
            return Err(format!(
                "vcpu_count {} is out of range; use {MIN_VCPUS} to {MAX_VCPUS}",
                self.vcpu_count
            ));
        }
        if self.smt && self.vcpu_count > 1 && self.vcpu_count % 2 == 1 {
            return Err(format!(
                "vcpu_count {} is odd with smt on; use 1 or an even count, or turn smt off",
                self.vcpu_count
            ));
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem_size_mib) {
            return Err(format!(
                "mem_size_mib {} is out of range; use {MIN_MEM_MIB} to {MAX_MEM_MIB}",
                self.mem_size_mib
            ));
        }
        for (field, value) in [
            ("cpu_template", &self.cpu_template),
            ("huge_pages", &self.huge_pages),
        ] {
            if let Some(v) = value.as_deref().filter(|v| *v != "None") {
                return Err(format!(
                    "{field} \"{v}\" is not supported by vmctl; leave it out or use \"None\""
                ));
            }
        }
        Ok(())
    }
}

/// A partial machine configuration (`PATCH /machine-config`): only the given fields change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    /// New number of vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    /// New memory size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<usize>,
    /// New SMT setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// New dirty page tracking setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// See [`MachineConfig::cpu_template`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// See [`MachineConfig::huge_pages`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl MachineConfigUpdate {
    /// The configuration `base` with this update applied (not yet validated).
    pub fn apply_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            cpu_template: self
                .cpu_template
                .clone()
                .or_else(|| base.cpu_template.clone()),
            huge_pages: self.huge_pages.clone().or_else(|| base.huge_pages.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_field_and_range() {
        let mut m = MachineConfig::default();
        m.validate().unwrap();
        m.vcpu_count = 0;
        assert!(m.validate().unwrap_err().contains("vcpu_count 0"));
        m.vcpu_count = 33;
        assert!(m.validate().unwrap_err().contains("1 to 32"));
        m.vcpu_count = 3;
        m.smt = true;
        assert!(m.validate().unwrap_err().contains("odd"));
        m.smt = false;
        m.mem_size_mib = 8;
        assert!(m.validate().unwrap_err().contains("mem_size_mib 8"));
        m.mem_size_mib = 256;
        m.cpu_template = Some("T2".into());
        assert!(m.validate().unwrap_err().contains("cpu_template \"T2\""));
        m.cpu_template = Some("None".into());
        m.validate().unwrap();
    }

    #[test]
    fn patch_keeps_unset_fields() {
        let base = MachineConfig {
            vcpu_count: 4,
            mem_size_mib: 512,
            ..Default::default()
        };
        let up = MachineConfigUpdate {
            mem_size_mib: Some(1024),
            ..Default::default()
        };
        let m = up.apply_to(&base);
        assert_eq!((m.vcpu_count, m.mem_size_mib), (4, 1024));
    }
}
