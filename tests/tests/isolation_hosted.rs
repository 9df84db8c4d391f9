//! `--isolation hosted` (QEMU microvm, TCG on nested-PVM hosts): the whole behaviour suite,
//! plus bad input (missing image/kernel, protocol mismatch, a guest that never answers).
//! Needs the guest kernel (scripts/build-kernel.sh) and agent initramfs
//! (scripts/build-guest-image.sh); scripts/setup.sh builds both.

mod isolation_common;

use std::process::Stdio;
use std::time::Duration;

use isolation_common::{command, records_of, text, wait_output, Level};

suite!(
    Level::Hosted,
    output_and_exit_code,
    binary_output_is_exact,
    env_and_workdir,
    user,
    user_by_name,
    memory_limit,
    files_do_not_persist_after_rm,
    stdin_is_forwarded,
    missing_command_fails_like_docker,
    signal_forwarding_and_teardown,
);

/// Runs a hosted `true` with extra environment; returns (status code, stderr, records left).
fn hosted_with_env(env: &[(&str, &str)], image: Option<&str>) -> (Option<i32>, String, usize) {
    let mut c = match image {
        Some(img) => {
            let mut c = std::process::Command::new(vmctl_tests::vmctl_bin::path());
            c.args(["run", "--isolation", "hosted", "--rm", img, "--", "true"]);
            c
        }
        None => command(Level::Hosted, &[], &["true"]),
    };
    c.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let out = wait_output(child, Duration::from_secs(120));
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    (out.status.code(), text(&out.stderr), records_of(pid).len())
}

#[test]
fn missing_image_is_a_clear_error() {
    let (code, err, left) = hosted_with_env(&[], Some("no-such-image:1"));
    assert_eq!(code, Some(125));
    assert!(
        err.contains("no-such-image:1") && err.contains("vmctl image import"),
        "{err}"
    );
    assert_eq!(left, 0);
}

#[test]
fn missing_kernel_is_a_clear_error() {
    let (code, err, left) = hosted_with_env(&[("VMCTL_GUEST_KERNEL", "/no/such/vmlinux")], None);
    assert_eq!(code, Some(125));
    assert!(
        err.contains("/no/such/vmlinux") && err.contains("build-kernel.sh"),
        "{err}"
    );
    assert_eq!(left, 0);
}

#[test]
fn protocol_version_mismatch_is_refused_and_the_vm_torn_down() {
    let (code, err, left) = hosted_with_env(&[("VMCTL_AGENT_PROTOCOL", "99")], None);
    assert_eq!(code, Some(125));
    assert!(
        err.contains("protocol version 1") && err.contains("speaks 99"),
        "{err}"
    );
    assert_eq!(left, 0);
}

#[test]
fn guest_that_never_answers_times_out_and_is_torn_down() {
    // The agent listens on vsock, which QEMU does not have: it never answers on the serial port.
    let env = [
        ("VMCTL_GUEST_CMDLINE", "vmctl.transport=vsock"),
        ("VMCTL_BOOT_TIMEOUT", "8"),
    ];
    let start = std::time::Instant::now();
    let (code, err, left) = hosted_with_env(&env, None);
    assert_eq!(code, Some(125));
    assert!(
        err.contains("did not answer the hello within") && err.contains("VM was stopped"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(left, 0);
}
