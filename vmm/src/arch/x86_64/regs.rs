//! Initial register state per boot protocol, the FPU and the local APIC LINT pins.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};

use super::gdt::{boot_gdt, kvm_segment_from_gdt, CodeMode};
use super::layout::{
    BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PML4_ADDR, PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};

const X86_CR0_PE: u64 = 1;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_RESERVED: u64 = 2;

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode, `boot_params` in RSI (ELF64 and bzImage).
    Long64,
    /// PVH: 32-bit protected mode, paging off, `hvm_start_info` in RBX.
    Pvh,
}

impl EntryMode {
    pub fn code_mode(self) -> CodeMode {
        match self {
            EntryMode::Long64 => CodeMode::Long,
            EntryMode::Pvh => CodeMode::Protected32,
        }
    }
}

/// General registers at entry. Every vCPU gets its index in RBX for 64-bit entries (test guests
/// started on all vCPUs use it; Linux ignores it).
pub fn boot_regs(mode: EntryMode, entry: u64, vcpu_index: u8) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Long64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_ADDR;
            regs.rbx = u64::from(vcpu_index);
        }
        EntryMode::Pvh => regs.rbx = PVH_INFO_ADDR,
    }
    regs
}

/// Patches `sregs` (as read from the vCPU) for `mode`: segments from the boot GDT, and for
/// 64-bit entry paging with the identity tables and long mode.
pub fn set_boot_sregs(sregs: &mut kvm_sregs, mode: EntryMode) {
    let gdt = boot_gdt(mode.code_mode());
    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    let tss = kvm_segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match mode {
        EntryMode::Long64 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

/// The reset FPU state: x87 control word 0x37f, MXCSR 0x1f80.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn get_reg(lapic: &kvm_lapic_state, off: usize) -> u32 {
    let b = &lapic.regs[off..off + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_reg(lapic: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().iter().enumerate() {
        lapic.regs[off + i] = *b as _;
    }
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as the MP table says.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    let mode = |v: u32, m: u32| (v & !0x700) | (m << 8);
    let lvt0 = get_reg(lapic, APIC_LVT0);
    set_reg(lapic, APIC_LVT0, mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = get_reg(lapic, APIC_LVT1);
    set_reg(lapic, APIC_LVT1, mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes() {
        let mut l = kvm_lapic_state::default();
        set_reg(&mut l, APIC_LVT0, 0x1_0000);
        set_lint(&mut l);
        assert_eq!(get_reg(&l, APIC_LVT0), 0x1_0700);
        assert_eq!(get_reg(&l, APIC_LVT1), 0x400);
    }

    #[test]
    fn long_mode_sregs() {
        let mut s = kvm_sregs::default();
        set_boot_sregs(&mut s, EntryMode::Long64);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cr3, PML4_ADDR);
        set_boot_sregs(&mut s, EntryMode::Pvh);
        assert_eq!((s.cs.l, s.cs.db, s.cr0 & X86_CR0_PG), (0, 1, 0));
    }
}
