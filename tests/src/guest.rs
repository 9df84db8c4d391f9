//! The test guests assembled by build.rs from tests/guests/*.S.

use std::path::PathBuf;

/// Path of the ELF built from `tests/guests/<name>.S`. Panics if there is no such guest.
pub fn build(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("OUT_DIR")).join(format!("{name}.elf"));
    assert!(
        p.exists(),
        "no test guest {name:?} (expected {})",
        p.display()
    );
    p
}

/// A VM config for test guest `name`: 16 MiB, `vcpus` vCPUs all started at the entry (RBX =
/// vCPU index), command line `cmdline`, console kept in memory only.
pub fn config(name: &str, vcpus: u8, cmdline: &str) -> vmm::VmConfig {
    let mut c = vmm::VmConfig::new(build(name));
    c.mem_mib = 16;
    c.vcpus = vcpus;
    c.cmdline = cmdline.to_string();
    c.start_all_vcpus_at_entry = true;
    c
}
