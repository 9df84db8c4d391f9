//! `vmctl vm` bad input: unknown ids, duplicate names, a missing vmctl-vmm, a bad kernel. Each
//! fails with a message naming the problem and leaves nothing behind.

mod vm_lifecycle_common;

use std::path::Path;

use vm_lifecycle_common::VmEnv;
use vmctl_tests::guest;

#[test]
fn unknown_ids_are_named() {
    let env = VmEnv::new();
    for cmd in ["start", "pause", "resume", "logs", "inspect"] {
        env.fails(&[cmd, "nosuchvm"], &["\"nosuchvm\"", "vmctl vm ps"]);
    }
    env.fails(&["stop", "nosuchvm"], &["\"nosuchvm\""]);
    env.fails(&["rm", "nosuchvm"], &["\"nosuchvm\""]);
    assert_eq!(env.ok(&["ps", "-q"]), "");
}

#[test]
fn duplicate_and_bad_names() {
    let env = VmEnv::new();
    let k = guest::build("ticker");
    let k = k.to_str().unwrap();
    let id = env.ok(&["create", "--name", "dup", "--kernel", k, "--memory", "16"]);
    env.fails(
        &["create", "--name", "dup", "--kernel", k, "--memory", "16"],
        &["--name \"dup\"", "already used", id.trim()],
    );
    env.fails(
        &["create", "--name", "a/b", "--kernel", k],
        &["--name \"a/b\""],
    );
    assert_eq!(env.ok(&["ps", "-q"]).lines().count(), 1);
    env.ok(&["rm", "-f", "dup"]);
}

#[test]
fn missing_vmm_binary() {
    let env = VmEnv::new();
    let k = guest::build("ticker");
    let out = env.vm_with(
        &["create", "--kernel", k.to_str().unwrap()],
        Path::new("/nonexistent/vmctl-vmm"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/nonexistent/vmctl-vmm") && stderr.contains("cargo build -p vmm"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(env.root()).unwrap().count(), 0);
}

#[test]
fn bad_kernel_and_memory_fail_before_any_vmm_starts() {
    let env = VmEnv::new();
    env.fails(
        &["create", "--kernel", "/nonexistent/vmlinux"],
        &["/nonexistent/vmlinux", "--kernel"],
    );
    let k = guest::build("ticker");
    env.fails(
        &["create", "--kernel", k.to_str().unwrap(), "--memory", "4"],
        &["--memory 4 MiB"],
    );
    assert_eq!(std::fs::read_dir(env.root()).unwrap().count(), 0);
}
