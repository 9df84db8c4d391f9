//! The `vmctl` binary, built on demand, for tests of the command line.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of a freshly built `target/<profile>/vmctl` (runs `cargo build -p vmctl` once).
pub fn path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target profile dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "vmctl", "--quiet"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build -p vmctl");
        assert!(status.success(), "cargo build -p vmctl failed");
        let bin = profile_dir.join("vmctl");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// Path of a freshly built `target/<profile>/vmctl-vmm` (runs `cargo build -p vmm --bin
/// vmctl-vmm` once).
pub fn vmm_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let vmctl = path();
        let profile_dir = vmctl.parent().expect("target profile dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "vmm", "--bin", "vmctl-vmm", "--quiet"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build -p vmm");
        assert!(
            status.success(),
            "cargo build -p vmm --bin vmctl-vmm failed"
        );
        let bin = profile_dir.join("vmctl-vmm");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}
