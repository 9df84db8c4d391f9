//! The guest physical memory map (see docs/architecture.md).

/// Boot GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Boot IDT (empty).
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH memory map entries, right after the start info.
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// PVH module list (the initrd).
pub const PVH_MODLIST_ADDR: u64 = 0x6800;
/// Linux `boot_params` (zero page).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for the boot CPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, PDPT, then four page directories mapping the first 4 GiB with
/// 2 MiB pages (so MMIO below 4 GiB is reachable from a 64-bit entry too).
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Maximum command line length including the NUL.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// MP table (floating pointer + configuration table), reserved in the e820 map.
pub const MPTABLE_ADDR: u64 = 0x9fc00;
/// End of the low (below 1 MiB) RAM reported usable.
pub const EBDA_START: u64 = 0x9fc00;
/// Kernel load address.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The boot-time marker page.
pub const BOOT_TIMER_ADDR: u64 = 0xc000_0000;
/// First virtio-mmio slot; slot n is at `VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_BASE: u64 = 0xc000_1000;
/// Size of one virtio-mmio slot.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Number of virtio-mmio slots (IRQs 5..=23).
pub const VIRTIO_MMIO_SLOTS: u32 = 19;
/// IRQ of virtio-mmio slot 0.
pub const VIRTIO_MMIO_IRQ_BASE: u32 = 5;
/// KVM's three-page TSS region, in the MMIO gap.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// KVM's identity-map page, in the MMIO gap.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// IO-APIC and local APIC.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// COM1 and its IRQ.
pub const SERIAL_PORT: u64 = 0x3f8;
pub const SERIAL_IRQ: u32 = 4;
/// i8042 ports 0x60..=0x64.
pub const I8042_PORT: u64 = 0x60;
/// IO-APIC pins.
pub const IRQ_MAX: u8 = 23;

/// Guest RAM regions for `mem_size` bytes: low RAM up to the MMIO gap, the rest above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

/// E820 type for usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type for reserved memory.
pub const E820_RESERVED: u32 = 2;

/// The e820 map for `mem_size` bytes of RAM: (addr, size, type).
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, 0xa0000 - EBDA_START, E820_RESERVED),
    ];
    let low_end = mem_size.min(MMIO_GAP_START);
    map.push((HIMEM_START, low_end - HIMEM_START, E820_RAM));
    if mem_size > MMIO_GAP_START {
        map.push((MMIO_GAP_END, mem_size - MMIO_GAP_START, E820_RAM));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_gap() {
        assert_eq!(ram_regions(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(
            ram_regions(4 << 30),
            vec![(0, MMIO_GAP_START), (MMIO_GAP_END, 1 << 30)]
        );
        let map = e820_map(4 << 30);
        assert_eq!(map.last(), Some(&(MMIO_GAP_END, 1 << 30, E820_RAM)));
        assert_eq!(
            map[2],
            (HIMEM_START, MMIO_GAP_START - HIMEM_START, E820_RAM)
        );
    }
}
