//! `vmctl run --isolation container` and friends, docker-style, on real containers.

mod runtime_common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use runtime_common::*;

struct Vmctl {
    root: tempfile::TempDir,
    images: tempfile::TempDir,
}

impl Vmctl {
    fn new() -> Vmctl {
        Vmctl {
            root: tempfile::Builder::new()
                .prefix("vmctl-root-")
                .tempdir()
                .unwrap(),
            images: tempfile::Builder::new()
                .prefix("vmctl-images-")
                .tempdir()
                .unwrap(),
        }
    }

    /// Imports a root filesystem directory into this test's image store; returns its name.
    fn import(&self, rootfs: &Path) -> String {
        let o = self.run(&[
            "image",
            "import",
            rootfs.to_str().unwrap(),
            "--name",
            "test:1",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        "test:1".into()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(vmctl_bin())
            .env("VMCTL_ROOT", self.root.path())
            .env("VMCTL_IMAGE_ROOT", self.images.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Vmctl {
    fn drop(&mut self) {
        // Leave nothing running: remove whatever a failed assertion left.
        let o = self.run(&["ps", "-a", "-q"]);
        for id in String::from_utf8_lossy(&o.stdout).lines() {
            let _ = self.run(&["rm", "-f", id]);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

#[test]
fn run_rm_returns_the_workload_exit_code() {
    let (v, rootfs) = (Vmctl::new(), Rootfs::busybox());
    let img = &v.import(rootfs.path());
    let o = v.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "--",
        "sh",
        "-c",
        "echo $$ $(hostname); exit 42",
    ]);
    assert_eq!(o.status.code(), Some(42), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("1 "), "{out}");
    assert!(
        text(&v.run(&["ps", "-a", "-q"]).stdout).is_empty(),
        "--rm leaves nothing"
    );
    assert!(v
        .root
        .path()
        .join("runtime")
        .read_dir()
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));
}

#[test]
fn flags_map_to_the_container() {
    let (v, rootfs, vol) = (Vmctl::new(), Rootfs::busybox(), out_dir());
    let img = &v.import(rootfs.path());
    let volume = format!("{}:/data", vol.path().display());
    let script =
        "echo $FOO; pwd; id -u; touch /x 2>/dev/null && echo rw || echo ro; echo v > /data/f";
    let o = v.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "--user",
        "1000:1000",
        "--read-only",
        "-v",
        &volume,
        img,
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout).lines().collect::<Vec<_>>(),
        ["bar", "/tmp", "1000", "ro"]
    );
    assert_eq!(read(vol.path(), "f"), "v");
}

#[test]
fn memory_limit_and_bad_values() {
    let (v, rootfs) = (Vmctl::new(), Rootfs::busybox());
    let img = &v.import(rootfs.path());
    let o = v.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--memory",
        "24m",
        img,
        "--",
        "sh",
        "-c",
        "head -c 300000000 /dev/zero | tail > /dev/null",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", text(&o.stderr));
    let o = v.run(&["run", "--rm", "--memory", "lots", img, "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o.stderr).contains("lots"), "{}", text(&o.stderr));
    let o = v.run(&["run", "--rm", "--network", "none", img, "--", "nosuchcmd"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("nosuchcmd"));
    let o = v.run(&["run", "--rm", "/nonexistent-image", "--", "true"]);
    assert!(text(&o.stderr).contains("nonexistent-image"));
}

#[test]
fn detached_container_logs_ps_exec_stop_rm() {
    let (v, rootfs) = (Vmctl::new(), Rootfs::busybox());
    let img = &v.import(rootfs.path());
    let name = unique_id("web");
    let o = v.run(&[
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--name",
        &name,
        img,
        "--",
        "sh",
        "-c",
        "echo logged; echo err >&2; exec sleep 60",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout);
    assert_eq!(id.len(), 12);
    let ps = text(&v.run(&["ps"]).stdout);
    assert!(ps.contains(&name) && ps.contains("Up"), "{ps}");
    let t = std::time::Instant::now();
    while !text(&v.run(&["logs", &name]).stdout).contains("err") && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let logs = text(&v.run(&["logs", &name]).stdout);
    assert!(logs.contains("logged") && logs.contains("err"), "{logs}");
    let o = v.run(&["exec", &name, "sh", "-c", "hostname; exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(text(&o.stdout), id);
    let o = v.run(&["rm", &name]);
    assert!(!o.status.success(), "a running container needs -f");
    // With --init, SIGTERM reaches `sleep` and the container exits promptly with 143.
    assert!(v.run(&["stop", "-t", "5", &name]).status.success());
    let ps = text(&v.run(&["ps", "-a"]).stdout);
    assert!(ps.contains("Exited (143)"), "{ps}");
    assert!(v.run(&["rm", &id[..6]]).status.success());
    assert!(text(&v.run(&["ps", "-a", "-q"]).stdout).is_empty());
    assert!(
        cgroup_dirs(&id).is_empty(),
        "cgroup left: {:?}",
        cgroup_dirs(&id)
    );
    assert!(!Path::new(&v.root.path().join("containers").join(&id)).exists());
}
