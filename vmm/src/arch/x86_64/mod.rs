//! x86_64: guest memory layout, CPUID, MSRs, registers, GDT and page tables, MP table, e820
//! and the boot-protocol structures.

pub mod bootparams;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
