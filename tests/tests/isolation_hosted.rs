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
    network_none_sees_only_loopback,
    stdin_is_forwarded,
    missing_command_fails_like_docker,
    signal_forwarding_and_teardown,
    detach_logs_stop_rm,
    rm_force_of_a_running_one,
    killed_supervisor_is_dead_and_removable,
    unknown_and_ambiguous_names,
    tty_without_a_host_terminal,
    interactive_tty_under_a_pty,
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

#[test]
fn error_after_detaching_lands_in_the_record_and_log() {
    // The guest never answers (the agent listens on vsock): `run -d` has already returned the
    // id when the boot times out; ps -a shows the run exited, logs shows why.
    let name = isolation_common::unique_name("late-error");
    let _c = isolation_common::Cleanup(name.clone());
    let out = std::process::Command::new(vmctl_tests::vmctl_bin::path())
        .args(["run", "-d", "--isolation", "hosted", "--network", "none"])
        .args(["--name", &name, "--", "true"])
        .env("VMCTL_GUEST_CMDLINE", "vmctl.transport=vsock")
        .env("VMCTL_BOOT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let dir = std::path::Path::new("/run/vmctl/vms").join(&id);
    assert!(
        dir.join("state.json").exists(),
        "no record {}",
        dir.display()
    );
    let end = std::time::Instant::now() + Duration::from_secs(60);
    let line = loop {
        let line = isolation_common::ps_line(true, &name).expect("ps -a lists it");
        if line.contains("Exited") {
            break line;
        }
        assert!(std::time::Instant::now() < end, "still: {line}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(isolation_common::ps_line(false, &name).is_none(), "{line}");
    let logs = text(&isolation_common::vmctl(&["logs", &name]).stdout);
    assert!(
        logs.contains("did not answer the hello within") && logs.contains("VM was stopped"),
        "{logs}"
    );
    assert!(
        isolation_common::processes_mentioning(&dir.display().to_string()).is_empty(),
        "QEMU left running"
    );
}
