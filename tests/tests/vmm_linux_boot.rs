//! Boots the project's real guest kernel (test initramfs) on vmctl's VMM with 2 vCPUs, through
//! the `vmctl` binary: once as the PVH vmlinux (reboot), once as the bzImage the same build makes
//! (power-off), so both boot paths run. Skipped, with the reason printed, when the kernel has not
//! been built (scripts/build-kernel.sh, scripts/build-initramfs.sh). On nested PVM KVM each boot
//! takes tens of seconds of wall time.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmctl_tests::{linux, vmctl_bin};

const LIMIT: Duration = Duration::from_secs(900);
const READY: &str = "VMCTL-GUEST-READY";

struct Boot {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    ready_after: Option<Duration>,
}

/// Which image of the kernel build to boot.
#[derive(Clone, Copy)]
enum Format {
    /// `vmlinux`: ELF with the PVH note.
    Pvh,
    /// `bzImage` next to it: the 64-bit boot protocol (setup header, compressed payload).
    BzImage,
}

/// Runs `vmctl run --kernel .. --initrd .. --vcpus 2 --cmdline extra`, timing the READY line.
fn boot(format: Format, extra: &str) -> Option<Boot> {
    let (mut kernel, initrd) = match linux::artefacts() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return None;
        }
    };
    if let Format::BzImage = format {
        kernel = kernel.with_file_name("bzImage");
        if !kernel.exists() {
            eprintln!(
                "SKIPPED: {} not found (scripts/build-kernel.sh makes it)",
                kernel.display()
            );
            return None;
        }
    }
    let start = Instant::now();
    let mut child = Command::new(vmctl_bin::path())
        .args(["run", "--vcpus", "2", "--memory", "128", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--cmdline", extra])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning vmctl");
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut ready_after = None;
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if ready_after.is_none() && String::from_utf8_lossy(&all).contains(READY) {
                ready_after = Some(start.elapsed());
            }
        }
        (String::from_utf8_lossy(&all).into_owned(), ready_after)
    });
    let mut err = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let code = loop {
        if let Some(status) = child.try_wait().expect("waiting for vmctl") {
            break status.code();
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (stdout, ready_after) = reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    Some(Boot {
        code,
        stdout,
        stderr,
        ready_after,
    })
}

fn report(name: &str, b: &Boot) {
    eprintln!(
        "{name}: exit {:?}, {READY} after {:?}",
        b.code, b.ready_after
    );
    for l in b
        .stderr
        .lines()
        .filter(|l| l.starts_with("guest boot time"))
    {
        eprintln!("{name}: {l}");
    }
}

#[test]
fn linux_boots_to_userspace_on_two_vcpus_and_reboots() {
    let Some(b) = boot(Format::Pvh, "") else {
        return;
    };
    report("reboot", &b);
    assert_eq!(
        b.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        b.stdout,
        b.stderr
    );
    assert!(b.stdout.contains(READY), "stdout:\n{}", b.stdout);
    assert!(
        b.stdout.contains(" cpus=2"),
        "guest did not bring up 2 CPUs:\n{}",
        b.stdout
    );
    assert!(
        b.stderr.contains("guest boot time: "),
        "no boot marker:\n{}",
        b.stderr
    );
}

#[test]
fn linux_bzimage_boots_and_poweroff_ends_the_vm() {
    let Some(b) = boot(Format::BzImage, "vmctl.halt=poweroff") else {
        return;
    };
    report("poweroff", &b);
    assert_eq!(
        b.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        b.stdout,
        b.stderr
    );
    assert!(b.stdout.contains(READY), "stdout:\n{}", b.stdout);
    assert!(
        b.stdout.contains(" cpus=2"),
        "guest did not bring up 2 CPUs:\n{}",
        b.stdout
    );
    assert!(
        b.stdout.contains("System halted") || b.stdout.contains("reboot: "),
        "{}",
        b.stdout
    );
}
