//! The boot GDT, the empty boot IDT and the identity page tables for a 64-bit entry.

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR};

/// Builds a GDT descriptor from flags (the 4-bit granularity/size nibble and the access byte,
/// as in `0xa09b`), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM segment register for GDT entry `index` holding `entry`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Which code segment the boot GDT holds: 64-bit (Linux 64-bit entry) or 32-bit (PVH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMode {
    Long,
    Protected32,
}

/// The boot GDT: null, code, data, TSS.
pub fn boot_gdt(mode: CodeMode) -> [u64; 4] {
    let code = match mode {
        CodeMode::Long => gdt_entry(0xa09b, 0, 0xfffff),
        CodeMode::Protected32 => gdt_entry(0xc09b, 0, 0xfffff),
    };
    [
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// Writes `gdt` at [`GDT_ADDR`] and an empty IDT at [`IDT_ADDR`].
pub fn write_gdt_and_idt(
    mem: &GuestMemoryMmap,
    gdt: &[u64],
) -> Result<(), vm_memory::GuestMemoryError> {
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
}

/// Writes identity page tables mapping the first 4 GiB with 2 MiB pages, user-accessible (a
/// test guest may drop to ring 3 on them; Linux replaces them early).
pub fn write_identity_page_tables(
    mem: &GuestMemoryMmap,
) -> Result<(), vm_memory::GuestMemoryError> {
    const P_RW_US: u64 = 0x7;
    const PS: u64 = 0x80;
    mem.write_obj(PDPT_ADDR | P_RW_US, GuestAddress(PML4_ADDR))?;
    for pd in 0..4u64 {
        let pd_addr = PD_ADDR + pd * 0x1000;
        mem.write_obj(pd_addr | P_RW_US, GuestAddress(PDPT_ADDR + pd * 8))?;
        for i in 0..512u64 {
            let phys = (pd << 30) | (i << 21);
            mem.write_obj(phys | P_RW_US | PS, GuestAddress(pd_addr + i * 8))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_segment_decodes() {
        let s = kvm_segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(
            (s.selector, s.type_, s.l, s.db, s.g, s.present, s.s),
            (8, 0xb, 1, 0, 1, 1, 1)
        );
        assert_eq!(s.limit, 0xffff_ffff);
        let d = kvm_segment_from_gdt(gdt_entry(0xc093, 0, 0xfffff), 2);
        assert_eq!((d.type_, d.db, d.l), (3, 1, 0));
        let t = kvm_segment_from_gdt(gdt_entry(0x808b, 0, 0xfffff), 3);
        assert_eq!((t.type_, t.s, t.selector), (0xb, 0, 24));
    }
}
