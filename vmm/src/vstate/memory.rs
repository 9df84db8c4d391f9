//! Guest memory: anonymous mappings laid out around the MMIO gap.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

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

/// How guest RAM is backed, from `$VMCTL_GUEST_MEM` (comma separated; default: neither).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backing {
    /// `thp`: `madvise(MADV_HUGEPAGE)`, transparent huge pages even where the host's THP mode
    /// is `madvise` (QEMU does this for its guest RAM).
    pub huge_pages: bool,
    /// `prefault`: `madvise(MADV_POPULATE_WRITE)`, all of it resident before the guest runs
    /// (no first-touch faults; the whole size counts in the VMM's RSS from the start).
    pub prefault: bool,
}

/// Environment variable selecting [`Backing`].
pub const BACKING_ENV: &str = "VMCTL_GUEST_MEM";

impl Backing {
    /// Parses `thp`, `prefault`, both (separated by `,` or `+`), or `none` / empty.
    pub fn parse(s: &str) -> std::result::Result<Backing, String> {
        let mut b = Backing::default();
        for w in s.split([',', '+']).map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "thp" => b.huge_pages = true,
                "prefault" => b.prefault = true,
                "none" => {}
                _ => {
                    return Err(format!(
                        "{BACKING_ENV}={s:?}: expected thp, prefault or none"
                    ))
                }
            }
        }
        Ok(b)
    }

    /// From [`BACKING_ENV`] (unset: the default).
    pub fn from_env() -> std::result::Result<Backing, String> {
        std::env::var(BACKING_ENV).map_or(Ok(Backing::default()), |v| Self::parse(&v))
    }
}

/// Allocates `mib` MiB of guest RAM (lazily backed unless `$VMCTL_GUEST_MEM` asks otherwise).
pub fn create(mib: u64) -> Result<GuestMemoryMmap> {
    validate_size(mib)?;
    let backing = Backing::from_env().map_err(|reason| Error::MemoryAlloc { mib, reason })?;
    let regions: Vec<(GuestAddress, usize)> = ram_regions(mib << 20)
        .into_iter()
        .map(|(base, len)| (GuestAddress(base), len as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&regions).map_err(|e| Error::MemoryAlloc {
        mib,
        reason: e.to_string(),
    })?;
    for r in mem.iter() {
        let (ptr, len) = (r.as_ptr().cast::<libc::c_void>(), r.len() as usize);
        let advise = |advice: libc::c_int, what: &str| {
            // SAFETY: the range is exactly one of our own anonymous mappings; these advices
            // change only how it is backed, never its contents or protection.
            if unsafe { libc::madvise(ptr, len, advice) } != 0 {
                let e = std::io::Error::last_os_error();
                tracing::warn!("guest RAM: madvise({what}) failed: {e}");
            }
        };
        if backing.huge_pages {
            advise(libc::MADV_HUGEPAGE, "MADV_HUGEPAGE");
        }
        if backing.prefault {
            advise(libc::MADV_POPULATE_WRITE, "MADV_POPULATE_WRITE");
        }
    }
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_words() {
        assert_eq!(Backing::parse("").unwrap(), Backing::default());
        let both = Backing::parse("thp, prefault").unwrap();
        assert!(both.huge_pages && both.prefault);
        assert_eq!(Backing::parse("thp+prefault").unwrap(), both);
        assert!(!Backing::parse("none").unwrap().huge_pages);
        assert!(Backing::parse("huge").is_err());
    }
}
