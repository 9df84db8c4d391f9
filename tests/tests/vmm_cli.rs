//! `vmctl run --kernel` from the command line: a real boot of a test guest, and bad input that
//! must fail with a clear message and a non-zero status (never a panic).

use std::process::{Command, Output};

use vmctl_tests::{guest, vmctl_bin};

fn vmctl(args: &[&str]) -> Output {
    Command::new(vmctl_bin::path())
        .args(["run"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running vmctl")
}

fn assert_fails_with(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "unexpected success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}

#[test]
fn boots_a_guest_and_exits_zero_on_reset() {
    let k = guest::build("hello");
    let out = vmctl(&["--kernel", k.to_str().unwrap(), "--memory", "16"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert_eq!(stdout, "hello from ring 3\n");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("guest boot time: "))
        .expect("boot time line");
    assert!(line.ends_with(" ms since VM start"), "{line}");
}

#[test]
fn triple_fault_exits_nonzero_with_console_tail() {
    let k = guest::build("triple");
    let out = vmctl(&["--kernel", k.to_str().unwrap(), "--memory", "16"]);
    assert_eq!(out.status.code(), Some(1));
    assert_fails_with(
        &out,
        &[
            "triple-faulted",
            "last console lines",
            "about to triple fault",
        ],
    );
}

#[test]
fn missing_kernel() {
    let out = vmctl(&["--kernel", "/nonexistent/vmlinux"]);
    assert_fails_with(&out, &["/nonexistent/vmlinux", "--kernel"]);
}

#[test]
fn corrupt_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("garbage");
    std::fs::write(&k, vec![0x5au8; 64 * 1024]).unwrap();
    let out = vmctl(&["--kernel", k.to_str().unwrap(), "--memory", "16"]);
    assert_fails_with(
        &out,
        &["garbage", "neither an x86_64 ELF vmlinux nor a bzImage"],
    );
}

#[test]
fn truncated_elf_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("truncated.elf");
    let full = std::fs::read(guest::build("hello")).unwrap();
    std::fs::write(&k, &full[..200]).unwrap();
    let out = vmctl(&["--kernel", k.to_str().unwrap(), "--memory", "16"]);
    assert_fails_with(&out, &["cannot load ELF kernel", "truncated.elf"]);
}

#[test]
fn initrd_too_big_for_memory() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("big.cpio");
    std::fs::write(&initrd, vec![0u8; 20 << 20]).unwrap();
    let k = guest::build("hello");
    let out = vmctl(&[
        "--kernel",
        k.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--memory",
        "16",
    ]);
    assert_fails_with(&out, &["big.cpio", "does not fit", "--memory"]);
}

#[test]
fn zero_and_too_many_vcpus() {
    let k = guest::build("hello");
    let k = k.to_str().unwrap();
    assert_fails_with(&vmctl(&["--kernel", k, "--vcpus", "0"]), &["--vcpus 0"]);
    assert_fails_with(
        &vmctl(&["--kernel", k, "--vcpus", "255"]),
        &["--vcpus 255", "at most"],
    );
}

#[test]
fn memory_too_small_or_too_large() {
    let k = guest::build("hello");
    let k = k.to_str().unwrap();
    assert_fails_with(
        &vmctl(&["--kernel", k, "--memory", "4"]),
        &["--memory 4 MiB", "at least 16"],
    );
    assert_fails_with(
        &vmctl(&["--kernel", k, "--memory", "100g"]),
        &["--memory 102400 MiB", "host"],
    );
    assert_fails_with(
        &vmctl(&["--kernel", k, "--memory", "lots"]),
        &["--memory \"lots\""],
    );
}

#[test]
fn stdin_reaches_the_guest_uart() {
    use std::io::Write;
    let k = guest::build("echo");
    let mut child = Command::new(vmctl_bin::path())
        .args(["run", "--memory", "16", "--kernel"])
        .arg(&k)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\nq").unwrap();
    let out = wait_with_limit(child, 30);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "ready\nabc\nq");
}

#[test]
fn sigint_tears_the_vm_down() {
    let k = guest::build("counter");
    let child = Command::new(vmctl_bin::path())
        .args(["run", "--memory", "16", "--kernel"])
        .arg(&k)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = wait_with_limit(child, 10);
    assert_eq!(out.status.code(), Some(128 + libc::SIGINT));
    assert_fails_with(&out, &["stopped by signal 2"]);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn no_kvm_device() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for a private mount namespace");
        return;
    }
    let k = guest::build("hello");
    let script = format!(
        "mount -t tmpfs none /dev && exec {} run --memory 16 --kernel {}",
        vmctl_bin::path().display(),
        k.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_fails_with(&out, &["/dev/kvm does not exist", "modprobe"]);
}

#[test]
fn no_kvm_permission() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to switch to an unprivileged user");
        return;
    }
    let k = guest::build("hello");
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(vmctl_bin::path())
        .args(["run", "--memory", "16", "--kernel"])
        .arg(&k)
        .output()
        .unwrap();
    assert_fails_with(&out, &["no permission to open /dev/kvm", "group"]);
}

/// Waits for `child` at most `secs` seconds (kills it and panics after that).
fn wait_with_limit(mut child: std::process::Child, secs: u64) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vmctl did not exit within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}
