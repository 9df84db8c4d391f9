//! From the VM flags (`--kernel`, `--initrd`, `--cmdline`, `--vcpus`, `--memory`, `--disk`,
//! `--net`, `--vsock`) to the API's [`VmResources`]: `vmctl run --kernel` and `vmctl vm create`
//! both boot through the same Firecracker-compatible configuration as `vmctl-vmm`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use api::types as wire;
use api::VmResources;
use devices::virtio::block::{BlockConfig, BlockError};
use devices::virtio::net::NetConfig;
use devices::virtio::rate_limiter as dev;
use devices::virtio::spec::check_devices;
use devices::virtio::vsock::VsockConfig;

/// Default VM memory when --memory is not given.
pub const DEFAULT_MEM_MIB: u64 = 256;

/// The VM part of the command line.
pub struct VmFlags {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub vcpus: u8,
    pub memory: Option<String>,
    pub disks: Vec<BlockConfig>,
    pub nets: Vec<NetConfig>,
    pub vsock: Option<VsockConfig>,
}

/// Parses `--memory`: a bare number is MiB; k, m, g suffixes (any case, optional `b`/`ib`).
pub fn parse_mem_mib(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult_kib): (&str, u64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 1024),
        Some('g') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (t, 1024),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("--memory {s:?}: expected a size like 256, 512m or 1g"))?;
    Ok(n.saturating_mul(mult_kib) / 1024)
}

/// A path as the API's UTF-8 string, or an error naming it.
pub(crate) fn path_str(p: &Path) -> anyhow::Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{}: paths must be UTF-8 for the VMM API", p.display()))
}

fn bucket(b: &dev::TokenBucketConfig) -> wire::TokenBucketConfig {
    wire::TokenBucketConfig {
        size: b.size,
        one_time_burst: (b.one_time_burst > 0).then_some(b.one_time_burst),
        refill_time: b.refill_time_ms,
    }
}

fn limiter(r: &Option<dev::RateLimiterConfig>) -> Option<wire::RateLimiterConfig> {
    r.as_ref().map(|r| wire::RateLimiterConfig {
        bandwidth: r.bandwidth.as_ref().map(bucket),
        ops: r.ops.as_ref().map(bucket),
    })
}

/// A `--disk` id as an API drive id (`[a-zA-Z0-9_]`): other characters become '_'.
pub fn drive_id(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl VmFlags {
    /// Disk serials that differ from their API drive id, by drive id (see
    /// `KvmBackend::set_disk_serials`).
    pub fn disk_serials(&self) -> HashMap<String, String> {
        self.disks
            .iter()
            .filter(|d| drive_id(&d.id) != d.id)
            .map(|d| (drive_id(&d.id), d.id.clone()))
            .collect()
    }

    /// Checks the flags the way the VMM would (so errors name the flag, not an API field) and
    /// builds the configuration: drives in `--disk` order (the first is /dev/vda), NICs eth0..,
    /// vsock.
    pub fn build_resources(&mut self) -> anyhow::Result<VmResources> {
        let mem_mib = match &self.memory {
            Some(m) => parse_mem_mib(m)?,
            None => DEFAULT_MEM_MIB,
        };
        let mut check = vmm::VmConfig::new(&self.kernel);
        check.initrd = self.initrd.clone();
        check.vcpus = self.vcpus;
        check.mem_mib = mem_mib;
        check.validate()?;
        check_devices(&mut self.disks, &self.nets, self.vsock.as_slice())?;
        let mut ids = HashMap::new();
        for d in &self.disks {
            match std::fs::metadata(&d.path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BlockError::NotFound(d.path.clone()).into())
                }
                Ok(m) if m.is_dir() => return Err(BlockError::IsDirectory(d.path.clone()).into()),
                _ => {}
            }
            if let Some(other) = ids.insert(drive_id(&d.id), d.id.clone()) {
                anyhow::bail!(
                    "--disk ids {other:?} and {:?} both become API drive id {:?}; use ids \
                     that differ in letters or digits",
                    d.id,
                    drive_id(&d.id)
                );
            }
        }
        for n in &self.nets {
            let name = &n.tap_name;
            if name.is_empty() || name.len() > 15 || name.contains(['/', '\0', ' ']) {
                return Err(devices::virtio::net::TapError::BadName(name.clone()).into());
            }
        }
        let mut r = VmResources {
            boot_source: Some(wire::BootSourceConfig {
                kernel_image_path: path_str(&self.kernel)?,
                initrd_path: self.initrd.as_deref().map(path_str).transpose()?,
                boot_args: self.cmdline.clone(),
            }),
            ..Default::default()
        };
        r.machine_config.vcpu_count = self.vcpus;
        r.machine_config.mem_size_mib = mem_mib as usize;
        for d in &self.disks {
            r.drives.push(wire::BlockDeviceConfig {
                drive_id: drive_id(&d.id),
                path_on_host: path_str(&d.path)?,
                is_root_device: d.root,
                is_read_only: d.read_only,
                rate_limiter: limiter(&d.rate_limiter),
                ..Default::default()
            });
        }
        for (i, n) in self.nets.iter().enumerate() {
            r.network_interfaces.push(wire::NetworkInterfaceConfig {
                iface_id: format!("eth{i}"),
                host_dev_name: n.tap_name.clone(),
                guest_mac: n.mac.map(wire::MacAddr),
                rx_rate_limiter: limiter(&n.rx_rate_limiter),
                tx_rate_limiter: limiter(&n.tx_rate_limiter),
            });
        }
        if let Some(v) = &self.vsock {
            r.vsock = Some(wire::VsockConfig {
                vsock_id: Some("vsock0".into()),
                guest_cid: u32::try_from(v.guest_cid)
                    .with_context(|| format!("--vsock cid={}: too large", v.guest_cid))?,
                uds_path: path_str(&v.uds_path)?,
            });
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem_mib("256").unwrap(), 256);
        assert_eq!(parse_mem_mib("512m").unwrap(), 512);
        assert_eq!(parse_mem_mib("1G").unwrap(), 1024);
        assert_eq!(parse_mem_mib("2048k").unwrap(), 2);
        assert!(parse_mem_mib("lots").is_err());
    }
}
