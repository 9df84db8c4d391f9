//! Shared by the `vmctl vm` lifecycle tests: a private VM root per test (VMCTL_VM_ROOT), the
//! freshly built vmctl and vmctl-vmm, and a guard that kills whatever VMM a test left running.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vmctl_tests::vmctl_bin;

/// One test's VM root; on drop, SIGKILLs every VMM recorded under it.
pub struct VmEnv {
    pub dir: tempfile::TempDir,
    pub vmm: PathBuf,
}

impl VmEnv {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            vmm: vmctl_bin::vmm_path(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `vmctl vm ARGS` with this root and vmctl-vmm.
    pub fn vm(&self, args: &[&str]) -> Output {
        self.vm_with(args, &self.vmm)
    }

    /// `vmctl vm ARGS` with `VMCTL_VMM=vmm`.
    pub fn vm_with(&self, args: &[&str], vmm: &Path) -> Output {
        Command::new(vmctl_bin::path())
            .arg("vm")
            .args(args)
            .env("VMCTL_VM_ROOT", self.root())
            .env("VMCTL_VMM", vmm)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running vmctl vm")
    }

    /// Like [`VmEnv::vm`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vm(args);
        assert!(
            out.status.success(),
            "vmctl vm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`VmEnv::vm`], asserting failure without a panic and that stderr has `needles`.
    pub fn fails(&self, args: &[&str], needles: &[&str]) -> String {
        let out = self.vm(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "vmctl vm {args:?} succeeded");
        assert!(!stderr.contains("panicked"), "panic: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
        }
        stderr
    }

    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.root().join(id)
    }

    /// The pid recorded for VM `id`.
    pub fn pid(&self, id: &str) -> i32 {
        std::fs::read_to_string(self.vm_dir(id).join("vmm.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The `ps` line of VM `id`, split into columns.
    pub fn ps_row(&self, id: &str) -> Vec<String> {
        let out = self.ok(&["ps"]);
        let line = out
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not in ps: {out}"));
        line.split_whitespace().map(str::to_owned).collect()
    }

    pub fn console(&self, id: &str) -> String {
        std::fs::read_to_string(self.vm_dir(id).join("console.log")).unwrap_or_default()
    }
}

impl Drop for VmEnv {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.root()) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(pid) = std::fs::read_to_string(e.path().join("vmm.pid")) else {
                continue;
            };
            let Ok(pid) = pid.trim().parse::<i32>() else {
                continue;
            };
            if process_alive(pid) {
                // SAFETY: kill(2) of a VMM this test started (its pid file is in our root).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
