//! The Intel MultiProcessor table (spec 1.4) that tells a guest without ACPI how many CPUs it
//! has and how the IO-APIC is wired.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_ADDR, IOAPIC_ADDR, IRQ_MAX, MPTABLE_ADDR};

/// Bytes available for the MP table (up to the end of base memory).
const MPTABLE_SPACE: usize = 0xa0000 - MPTABLE_ADDR as usize;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const CPU_ENTRY_LEN: usize = 20;
const SMALL_ENTRY_LEN: usize = 8;

/// Most vCPUs whose entries fit in the space the memory map gives the MP table.
pub const MAX_CPUS: u8 = {
    let fixed = FLOATING_LEN
        + HEADER_LEN
        + 2 * SMALL_ENTRY_LEN
        + (IRQ_MAX as usize + 1 + 2) * SMALL_ENTRY_LEN;
    ((MPTABLE_SPACE - fixed) / CPU_ENTRY_LEN) as u8
};

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6 signature and FPU|APIC feature flags, as a real table would carry.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_sub(*b))
}

/// Error writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} vCPUs do not fit in the MP table (at most {MAX_CPUS})")]
    TooManyCpus(u8),
    #[error("cannot write the MP table to guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// The MP table bytes for `num_cpus` CPUs, to be placed at [`MPTABLE_ADDR`].
pub fn build(num_cpus: u8) -> Result<Vec<u8>, Error> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(Error::TooManyCpus(num_cpus));
    }
    let ioapic_id = num_cpus;
    let table_addr = MPTABLE_ADDR as u32 + FLOATING_LEN as u32;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        entries.extend([
            0,
            cpu,
            APIC_VERSION,
            CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 },
        ]);
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    // Bus 0: ISA.
    entries.extend([1, 0]);
    entries.extend(b"ISA   ");
    // The IO-APIC.
    entries.extend([2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend(IOAPIC_ADDR.to_le_bytes());
    count += 2;
    // ISA IRQ n -> IO-APIC pin n.
    for irq in 0..=IRQ_MAX {
        entries.extend([3, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 = ExtINT, LINT1 = NMI on every local APIC.
    entries.extend([4, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend([4, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend(b"PCMP");
    header.extend(((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, below
    header.extend(b"VMCTL   ");
    header.extend(b"000000000000");
    header.extend(0u32.to_le_bytes()); // OEM table pointer
    header.extend(0u16.to_le_bytes()); // OEM table size
    header.extend(count.to_le_bytes());
    header.extend(APIC_ADDR.to_le_bytes());
    header.extend([0u8; 4]); // extended table length, checksum, reserved
    let mut table = header;
    table.extend(entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(FLOATING_LEN + table.len());
    out.extend(b"_MP_");
    out.extend(table_addr.to_le_bytes());
    out.extend([1, 4, 0, 0, 0, 0, 0, 0]); // length in 16-byte units, rev, checksum, features
    out[10] = checksum(&out);
    out.extend(table);
    debug_assert!(out.len() <= MPTABLE_SPACE);
    Ok(out)
}

/// Writes the MP table for `num_cpus` CPUs into guest memory.
pub fn write(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), Error> {
    let bytes = build(num_cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_ADDR))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_limits() {
        let t = build(2).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let len = u16::from_le_bytes([t[20], t[21]]) as usize;
        assert_eq!(
            t[16..16 + len].iter().fold(0u8, |a, b| a.wrapping_add(*b)),
            0
        );
        assert_eq!(u16::from_le_bytes([t[50], t[51]]), 2 + 2 + 24 + 2);
        assert!(build(MAX_CPUS).is_ok());
        assert!(build(MAX_CPUS + 1).is_err());
        const { assert!(MAX_CPUS >= 8) };
    }
}
