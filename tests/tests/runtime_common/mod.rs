//! Shared helpers for the runtime tests: a busybox rootfs, unique ids, a state root, and
//! checks that nothing is left behind.
#![allow(dead_code)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use runtime::oci_spec::runtime::Spec;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique container id for this test process.
pub fn unique_id(name: &str) -> String {
    format!(
        "t-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A busybox root filesystem in a temporary directory (world-readable, for user namespaces).
pub struct Rootfs {
    pub dir: tempfile::TempDir,
}

impl Rootfs {
    pub fn busybox() -> Rootfs {
        let dir = tempfile::Builder::new()
            .prefix("vmctl-rootfs-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "out", "mnt"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = symlink("busybox", root.join("bin").join(applet));
            }
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/hostname"), "lower\n").unwrap();
        for p in [root.to_path_buf(), root.join("tmp"), root.join("out")] {
            std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode(if p == root { 0o755 } else { 0o1777 }),
            )
            .unwrap();
        }
        Rootfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A state root that is removed at the end of the test.
pub fn state_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vmctl-state-")
        .tempdir()
        .unwrap()
}

/// A docker-default spec for `args` (run by sh -c) on `rootfs`, with `out` bound at /out.
pub fn spec(script: &str, rootfs: &Path, out: &Path) -> Spec {
    let mut s =
        runtime::spec::docker_default(vec!["/bin/sh".into(), "-c".into(), script.into()], rootfs);
    let mut mounts = s.mounts().clone().unwrap_or_default();
    let m: runtime::oci_spec::runtime::Mount = serde_json::from_value(serde_json::json!({
        "destination": "/out", "type": "bind", "source": out, "options": ["rbind", "rw"]
    }))
    .unwrap();
    mounts.push(m);
    s.set_mounts(Some(mounts));
    s
}

/// A world-writable output directory.
pub fn out_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("vmctl-out-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Edits a spec through its JSON form (the oci-spec setters are verbose for deep fields).
pub fn edit(spec: &Spec, f: impl FnOnce(&mut serde_json::Value)) -> Spec {
    let mut v = serde_json::to_value(spec).unwrap();
    f(&mut v);
    serde_json::from_value(v).unwrap()
}

/// Mount points whose path mentions `needle` in this process' mount namespace.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Cgroup directories named `id` under any hierarchy.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for parent in ["vmctl-runtime", "vmctl"] {
            let p = h.path().join(parent).join(id);
            if p.exists() {
                out.push(p);
            }
        }
    }
    out
}

/// The vmctl-runtime binary (built on demand next to the test executables).
pub fn runtime_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_bin("runtime", "vmctl-runtime"))
        .clone()
}

/// The vmctl binary (built on demand).
pub fn vmctl_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_bin("vmctl", "vmctl")).clone()
}

fn build_bin(package: &str, name: &str) -> PathBuf {
    {
        {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
            let bin = dir.join(name);
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo)
                .args(["build", "-q", "-p", package, "--bin", name])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .unwrap();
            assert!(st.success(), "building {name} failed");
            assert!(bin.exists(), "{} missing after build", bin.display());
            bin
        }
    }
}

/// Zombie children of host process `parent` (a container's PID 1).
pub fn zombie_children(parent: i32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            n += 1;
        }
    }
    n
}

/// Force-deletes container `id` when dropped (a failed assertion must not leak it).
pub struct Guard {
    pub root: PathBuf,
    pub id: String,
}

impl Guard {
    pub fn new(root: &Path, id: &str) -> Guard {
        Guard {
            root: root.into(),
            id: id.into(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(c) = runtime::Container::load(&self.root, &self.id) {
            let _ = c.delete(true);
        }
    }
}
