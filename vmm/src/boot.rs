//! Loading: the kernel (ELF vmlinux with or without a PVH note, or bzImage) with linux-loader,
//! the initrd, the command line, and the boot structures each protocol needs.

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::bootparams::{write_pvh_start_info, write_zero_page, BootInfo};
use crate::arch::x86_64::gdt::{boot_gdt, write_gdt_and_idt, write_identity_page_tables};
use crate::arch::x86_64::layout::{CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIMEM_START, MMIO_GAP_START};
use crate::arch::x86_64::mptable;
use crate::arch::x86_64::regs::EntryMode;
use crate::error::{Error, Result};
use crate::vstate::vcpu::Entry;

/// Offset of the 64-bit entry point in a loaded bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const PAGE: u64 = 0x1000;

/// What was loaded.
pub struct Loaded {
    pub entry: Entry,
    header: Option<setup_header>,
    kernel_end: u64,
}

/// Loads the kernel at its physical load address; picks PVH when the ELF has the note.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path, mem_size: u64) -> Result<Loaded> {
    let read_err = |source| Error::KernelRead {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size == 0 {
        return Err(Error::KernelFormat {
            path: path.to_path_buf(),
            elf: "the file is empty".into(),
            bzimage: "the file is empty".into(),
        });
    }
    if size > mem_size.min(MMIO_GAP_START).saturating_sub(HIMEM_START) {
        return Err(Error::KernelTooBig {
            path: path.to_path_buf(),
            size,
            mem_mib: mem_size >> 20,
        });
    }
    let himem = Some(GuestAddress(HIMEM_START));
    let elf_err = match Elf::load(mem, None, &mut file, himem) {
        Ok(r) => {
            let entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => Entry {
                    mode: EntryMode::Pvh,
                    addr: addr.0,
                },
                _ => Entry {
                    mode: EntryMode::Long64,
                    addr: r.kernel_load.0,
                },
            };
            tracing::info!(
                "loaded ELF kernel {}: {:?} entry at {:#x}",
                path.display(),
                entry.mode,
                entry.addr
            );
            return Ok(Loaded {
                entry,
                header: None,
                kernel_end: r.kernel_end,
            });
        }
        Err(e) => {
            if is_elf(&mut file) {
                return Err(Error::KernelLoad {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                    mem_mib: mem_size >> 20,
                });
            }
            e.to_string()
        }
    };
    match BzImage::load(mem, None, &mut file, himem) {
        Ok(r) => {
            let entry = Entry {
                mode: EntryMode::Long64,
                addr: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
            };
            tracing::info!(
                "loaded bzImage {}: 64-bit entry at {:#x}",
                path.display(),
                entry.addr
            );
            Ok(Loaded {
                entry,
                header: r.setup_header,
                kernel_end: r.kernel_end,
            })
        }
        Err(e) => Err(Error::KernelFormat {
            path: path.to_path_buf(),
            elf: elf_err,
            bzimage: e.to_string(),
        }),
    }
}

/// Whether the file starts with the ELF magic.
fn is_elf(file: &mut File) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0)).is_ok()
        && file.read_exact(&mut magic).is_ok()
        && magic == *b"\x7fELF"
}

/// Places the initrd page-aligned as high in low RAM as it fits; returns (address, size).
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    loaded: &Loaded,
    mem_size: u64,
) -> Result<(u64, u64)> {
    let read_err = |source| Error::InitrdRead {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let mut limit = mem_size.min(MMIO_GAP_START);
    if let Some(h) = loaded.header {
        if h.initrd_addr_max != 0 {
            limit = limit.min(u64::from(h.initrd_addr_max) + 1);
        }
    }
    let kernel_end = loaded.kernel_end.div_ceil(PAGE) * PAGE;
    let addr = limit.checked_sub(size).map(|a| a & !(PAGE - 1));
    let addr = match addr {
        Some(a) if a >= kernel_end => a,
        _ => {
            let need_mib = (kernel_end + size.div_ceil(PAGE) * PAGE).div_ceil(1 << 20) + 1;
            return Err(Error::InitrdTooBig {
                path: path.to_path_buf(),
                size,
                kernel_end,
                limit,
                need_mib,
            });
        }
    };
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| Error::BootSetup(format!("reading initrd {}: {e}", path.display())))?;
    tracing::info!("initrd {} ({size} bytes) at {addr:#x}", path.display());
    Ok((addr, size))
}

/// Checks a command line the way it will be loaded.
pub fn check_cmdline(cmdline: &str) -> Result<Cmdline> {
    if cmdline.len() + 1 > CMDLINE_MAX_SIZE {
        return Err(Error::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX_SIZE - 1,
        });
    }
    Cmdline::try_from(cmdline, CMDLINE_MAX_SIZE).map_err(|e| Error::Cmdline {
        cmdline: cmdline.to_string(),
        reason: e.to_string(),
    })
}

/// Everything the guest needs in memory before the first instruction: initrd, command line,
/// MP table and the protocol's boot structures.
pub fn setup(
    mem: &GuestMemoryMmap,
    loaded: &Loaded,
    initrd: Option<&Path>,
    cmdline: &str,
    mem_size: u64,
    vcpus: u8,
) -> Result<()> {
    let initrd = initrd
        .map(|p| load_initrd(mem, p, loaded, mem_size))
        .transpose()?;
    let cl = check_cmdline(cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl)
        .map_err(|e| Error::BootSetup(format!("command line: {e}")))?;
    mptable::write(mem, vcpus).map_err(|e| Error::BootSetup(e.to_string()))?;
    let info = BootInfo {
        mem_size,
        cmdline_len: cmdline.len(),
        initrd,
    };
    let mode = loaded.entry.mode;
    write_gdt_and_idt(mem, &boot_gdt(mode.code_mode()))
        .map_err(|e| Error::BootSetup(format!("GDT: {e}")))?;
    match mode {
        EntryMode::Pvh => write_pvh_start_info(mem, &info),
        EntryMode::Long64 => {
            write_identity_page_tables(mem)
                .map_err(|e| Error::BootSetup(format!("page tables: {e}")))?;
            write_zero_page(mem, &info, loaded.header)
        }
    }
    .map_err(|e| Error::BootSetup(e.to_string()))
}
