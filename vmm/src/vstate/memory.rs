//! Guest memory: anonymous mappings laid out around the MMIO gap.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::ram_regions;
use crate::error::{Error, Result};

/// Smallest VM we build.
pub const MIN_MEM_MIB: u64 = 16;

/// The host's RAM in MiB, from /proc/meminfo.
fn host_mem_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Checks `mib` against the minimum and the host's RAM.
pub fn validate_size(mib: u64) -> Result<()> {
    if mib < MIN_MEM_MIB {
        return Err(Error::MemoryTooSmall {
            mib,
            min: MIN_MEM_MIB,
        });
    }
    if let Some(host_mib) = host_mem_mib() {
        if mib > host_mib {
            return Err(Error::MemoryTooLarge { mib, host_mib });
        }
    }
    Ok(())
}

/// Allocates `mib` MiB of guest RAM (lazily backed).
pub fn create(mib: u64) -> Result<GuestMemoryMmap> {
    validate_size(mib)?;
    let regions: Vec<(GuestAddress, usize)> = ram_regions(mib << 20)
        .into_iter()
        .map(|(base, len)| (GuestAddress(base), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&regions).map_err(|e| Error::MemoryAlloc {
        mib,
        reason: e.to_string(),
    })
}
