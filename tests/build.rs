//! Assembles the test guests in guests/*.S into ELF64 files in OUT_DIR (GNU as + ld), linked
//! at 0x100000 with no PVH note, so the VMM boots them through its 64-bit ELF entry.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install binutils)"));
    assert!(status.success(), "{cmd:?} failed with {status}");
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in std::fs::read_dir(&dir).expect("tests/guests") {
        let path = entry.expect("dir entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
        if path.extension().and_then(|e| e.to_str()) != Some("S") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("guest name");
        let obj = out.join(format!("{name}.o"));
        let elf = out.join(format!("{name}.elf"));
        run(Command::new("as")
            .arg("--64")
            .arg("-I")
            .arg(&dir)
            .arg("-o")
            .arg(&obj)
            .arg(&path));
        run(Command::new("ld")
            .args([
                "-N",
                "-Ttext=0x100000",
                "-e",
                "_start",
                "-nostdlib",
                "--build-id=none",
            ])
            .arg("--no-warn-rwx-segments")
            .arg("-o")
            .arg(&elf)
            .arg(&obj));
    }
}
