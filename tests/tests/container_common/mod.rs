//! Helpers of the `vmctl run --isolation container` tests: a private state root and image
//! store, a test bridge (unique name and subnet via VMCTL_BRIDGE / VMCTL_SUBNET) destroyed on
//! drop, and checks that a container left nothing behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use runtime::network::{BridgeConfig, BridgeNetwork};

#[path = "../runtime_common/mod.rs"]
mod runtime_common;
#[allow(unused_imports)]
pub use runtime_common::Rootfs;
pub use runtime_common::{cgroup_dirs, mounts_mentioning, vmctl_bin};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

pub fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// One test's vmctl: state root, image store and bridge of its own.
pub struct Env {
    pub root: tempfile::TempDir,
    pub images: tempfile::TempDir,
    pub bridge: String,
    pub subnet: String,
}

impl Env {
    pub fn new() -> Env {
        let n = unique();
        let pid = std::process::id();
        let tmp = |p: &str| tempfile::Builder::new().prefix(p).tempdir().unwrap();
        Env {
            root: tmp("vmctl-ct-root-"),
            images: tmp("vmctl-ct-img-"),
            bridge: format!("vcb{:04x}{n}", pid % 0x10000),
            subnet: format!("10.{}.{}.0/24", 150 + n % 50, pid % 250),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(vmctl_bin());
        c.env("VMCTL_ROOT", self.root.path())
            .env("VMCTL_IMAGE_ROOT", self.images.path())
            .env("VMCTL_BRIDGE", &self.bridge)
            .env("VMCTL_SUBNET", &self.subnet)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "vmctl {args:?}: {:?} {}",
            o.status,
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn bridge_cfg(&self) -> BridgeConfig {
        BridgeConfig {
            name: self.bridge.clone(),
            subnet: self.subnet.parse().unwrap(),
            state_dir: self.root.path().join("network"),
        }
    }

    /// Containers attached to the test bridge according to IPAM.
    pub fn attachments(&self) -> usize {
        let p = self
            .root
            .path()
            .join("network")
            .join(&self.bridge)
            .join("ipam.json");
        match std::fs::read(&p) {
            Ok(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                v["attachments"].as_object().map_or(0, |m| m.len())
            }
            Err(_) => 0,
        }
    }

    /// Host veths enslaved to the test bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        let (_, out) = sh(&format!(
            "ip -o link show master {} 2>/dev/null",
            self.bridge
        ));
        out.lines().map(str::to_string).collect()
    }

    /// Asserts that container `id` left no veth, port rule, address, mount, cgroup or state.
    pub fn assert_gone(&self, id: &str) {
        assert!(
            self.bridge_ports().is_empty(),
            "veth left: {:?}",
            self.bridge_ports()
        );
        assert_eq!(self.attachments(), 0, "IPAM entry left");
        let rules = iptables_mentioning(id);
        assert!(rules.is_empty(), "iptables rules left: {rules:?}");
        assert!(mounts_mentioning(id).is_empty(), "mounts left");
        assert!(
            cgroup_dirs(id).is_empty(),
            "cgroup left: {:?}",
            cgroup_dirs(id)
        );
        for d in ["containers", "runtime"] {
            let p = self.root.path().join(d).join(id);
            assert!(!p.exists(), "{} left", p.display());
        }
    }

    /// Asserts no container of this test is known and no state dir is left.
    pub fn assert_empty(&self) {
        assert!(self.ok(&["ps", "-a", "-q"]).is_empty());
        for d in ["containers", "runtime"] {
            let p = self.root.path().join(d);
            let left: Vec<PathBuf> = std::fs::read_dir(&p)
                .map(|r| r.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{left:?} left");
        }
        assert!(self.bridge_ports().is_empty());
        assert_eq!(self.attachments(), 0);
        assert!(mounts_mentioning(&self.root.path().to_string_lossy()).is_empty());
    }

    /// Imports `path` into the image store as `name`.
    pub fn import(&self, path: &Path, name: &str) {
        self.ok(&["image", "import", path.to_str().unwrap(), "--name", name]);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let o = self.run(&["ps", "-a", "-q"]);
        for id in text(&o.stdout).lines() {
            let _ = self.run(&["rm", "-f", id]);
        }
        if sh(&format!("ip link show {}", self.bridge)).0 {
            if let Ok(n) = BridgeNetwork::open(self.bridge_cfg()) {
                let _ = n.destroy();
            }
        }
        let rules = iptables_mentioning(&format!("vmctl:{}", self.bridge));
        if !std::thread::panicking() {
            assert!(rules.is_empty(), "bridge rules left: {rules:?}");
        }
    }
}

/// `iptables-save` lines (filter and nat) that mention `needle`.
pub fn iptables_mentioning(needle: &str) -> Vec<String> {
    let (_, out) = sh("iptables-save");
    out.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Waits up to `secs` for `f` to hold.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed().as_secs() < secs {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f()
}
