//! The project's real guest kernel mounts an ext4 image made on the host by `mkfs.ext4 -d` (no
//! root mount needed) as a read-write virtio-blk disk, reads the host's file, writes its own,
//! syncs, and then the VMM is killed with SIGKILL: what the guest flushed must be in the image
//! afterwards, i.e. no write the guest was told is complete sits in the VMM. (That the flush is
//! also an fsync on the host, durable against a host crash, is checked by the device tests.)
//! Checked with e2fsck (which replays the journal) and debugfs. Skipped, with the reason printed, when the kernel has not been built. Takes
//! a minute or more on nested PVM KVM.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmctl_tests::console::Console;
use vmctl_tests::{linux, vmctl_bin};

/// Printed by the guest shell as `SYNCED-$((6*7))`, so the echoed command never matches.
const SYNCED: &str = "SYNCED-42";
const GUEST_CMDS: &str = "mkdir -p /m && mount -t ext4 /dev/vda /m && cat /m/from-host.txt && \
     echo written-by-the-guest > /m/from-guest.txt && sync && echo SYNCED-$((6*7))\n";

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("running an e2fsprogs tool");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn guest_writes_ext4_and_flushed_data_survives_sigkill() {
    let (kernel, initrd) = match linux::artefacts() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("from-host.txt"), "hello-from-the-host\n").unwrap();
    let img = dir.path().join("disk.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("8M"));

    let start = Instant::now();
    let mut child = Command::new(vmctl_bin::path())
        .args(["run", "--memory", "128", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--cmdline", "vmctl.shell=1", "--disk"])
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning vmctl");
    let console = Console::capture(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut synced = false;
    if console.wait_for("vmctl-guest: shell", Duration::from_secs(900)) {
        stdin.write_all(GUEST_CMDS.as_bytes()).unwrap();
        synced = console.wait_for(SYNCED, Duration::from_secs(600));
    }
    // No clean shutdown: the VMM dies at once, as in a host crash of the VMM process.
    child.kill().unwrap();
    child.wait().unwrap();
    let console = console.finish();
    eprintln!("ext4 guest: synced={synced} after {:?}", start.elapsed());
    assert!(synced, "the guest did not finish writing:\n{console}");
    assert!(
        console.contains("hello-from-the-host"),
        "the guest did not read the host's file:\n{console}"
    );

    // Replay the journal, then read the guest's file straight from the image.
    run(Command::new("e2fsck").arg("-fy").arg(&img));
    let cat = run(Command::new("debugfs")
        .args(["-R", "cat /from-guest.txt"])
        .arg(&img));
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout),
        "written-by-the-guest\n",
        "the guest's flushed file is not in the image"
    );
}
