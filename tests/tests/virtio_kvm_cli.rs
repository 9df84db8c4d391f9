//! `vmctl run --disk/--net/--vsock`: devices attached from the command line and driven by a
//! ring-3 test guest on real KVM, and bad device specs failing with clear messages.

use std::io::Write;
use std::process::{Command, Output};

use vmctl_tests::{guest, vmctl_bin};

fn vmctl(args: &[&str]) -> Output {
    Command::new(vmctl_bin::path())
        .args(["run", "--memory", "16"])
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

fn image(dir: &std::path::Path, name: &str) -> String {
    let p = dir.join(name);
    let mut data = vec![0u8; 64 * 1024];
    data[..16].copy_from_slice(b"VMCTL-BLOCK-TEST");
    std::fs::File::create(&p).unwrap().write_all(&data).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn disk_and_vsock_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.img");
    let uds = dir.path().join("v.sock");
    let k = guest::build("virtio_blk");
    let vsock = format!("cid=5,uds={}", uds.display());
    let out = vmctl(&[
        "--kernel",
        k.to_str().unwrap(),
        "--disk",
        &format!("{img},id=cli-disk"),
        "--vsock",
        &vsock,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("rd=00:VMCTL-BLOCK-TEST"), "{stdout}");
    assert!(stdout.contains("wr=00"), "{stdout}");
    assert!(stdout.contains("id=00:cli-disk"), "{stdout}");
    let data = std::fs::read(&img).unwrap();
    assert_eq!(&data[512..528], b"written-by-guest");

    // A second run reuses the (now stale) vsock socket path.
    let out = vmctl(&[
        "--kernel",
        k.to_str().unwrap(),
        "--disk",
        &format!("{img},ro"),
        "--vsock",
        &vsock,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("wr=01"), "read-only disk: {stdout}");
}

#[test]
fn bad_device_specs_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let k = guest::build("virtio_blk");
    let k = k.to_str().unwrap();
    let img = image(dir.path(), "a.img");
    let missing = dir.path().join("missing.img");
    let missing = missing.to_str().unwrap();
    assert_fails_with(
        &vmctl(&["--kernel", k, "--disk", missing]),
        &["missing.img", "does not exist"],
    );
    let d = dir.path().to_str().unwrap();
    assert_fails_with(&vmctl(&["--kernel", k, "--disk", d]), &["is a directory"]);
    assert_fails_with(
        &vmctl(&["--kernel", k, "--disk", &format!("{img},rox")]),
        &["\"rox\"", "PATH[,ro]"],
    );
    assert_fails_with(
        &vmctl(&["--kernel", k, "--disk", &img, "--disk", &img]),
        &["attached twice"],
    );
    let b = image(dir.path(), "b.img");
    assert_fails_with(
        &vmctl(&[
            "--kernel",
            k,
            "--disk",
            &format!("{img},id=x"),
            "--disk",
            &format!("{b},id=x"),
        ]),
        &["two disks have the id \"x\""],
    );
    assert_fails_with(
        &vmctl(&["--kernel", k, "--vsock", "cid=2,uds=/tmp/x.sock"]),
        &["cid 2", "N >= 3"],
    );
    assert_fails_with(
        &vmctl(&["--kernel", k, "--net", "tap=name-of-16-chars"]),
        &["name-of-16-chars", "1 to 15 bytes"],
    );
    let taken = dir.path().join("taken");
    std::fs::write(&taken, "not a socket").unwrap();
    assert_fails_with(
        &vmctl(&[
            "--kernel",
            k,
            "--vsock",
            &format!("cid=3,uds={}", taken.display()),
        ]),
        &["already exists", "taken"],
    );
}
