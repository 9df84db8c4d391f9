//! Embeds Debian's static busybox (the default image's only binary) and its applet list.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let src = std::env::var_os("VMCTL_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    println!("cargo:rerun-if-env-changed=VMCTL_BUSYBOX");
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let missing = |why: String| -> ! {
        panic!(
            "vmctl embeds a static busybox for its default image, but {} {why}. \
             Install it with `apt-get install busybox-static` (or point VMCTL_BUSYBOX at a \
             statically linked busybox).",
            src.display()
        )
    };
    let bin = std::fs::read(&src).unwrap_or_else(|e| missing(format!("could not be read ({e})")));
    let list = Command::new(&src)
        .arg("--list-full")
        .output()
        .unwrap_or_else(|e| missing(format!("could not be run ({e})")));
    if !list.status.success() || list.stdout.is_empty() {
        missing("did not print its applets with --list-full".into());
    }
    if !is_static(&src) {
        missing("is dynamically linked (the default image has no libc)".into());
    }
    std::fs::write(out.join("busybox"), bin).expect("write OUT_DIR/busybox");
    std::fs::write(out.join("busybox-applets.txt"), list.stdout).expect("write applet list");
}

/// An ELF with no PT_INTERP program header is statically linked.
fn is_static(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false; // not a 64-bit ELF
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= data.len()
            && u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) != 3
    })
}
