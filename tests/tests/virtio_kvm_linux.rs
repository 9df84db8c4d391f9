//! The project's real guest kernel probes vmctl's virtio-mmio devices: a disk, a NIC on a TAP
//! (inside a network namespace made by the test) and vsock, attached with `vmctl run --disk
//! --net --vsock`. Skipped, with the reason printed, when the kernel has not been built
//! (scripts/build-kernel.sh, scripts/build-initramfs.sh). Takes minutes on nested PVM KVM.

#[path = "../../devices/tests/common/netns.rs"]
mod netns;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmctl_tests::{linux, vmctl_bin};

const LIMIT: Duration = Duration::from_secs(900);

#[test]
fn linux_probes_virtio_blk_net_and_vsock() {
    let (kernel, initrd) = match linux::artefacts() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let mut data = vec![0u8; 1 << 20];
    data[..16].copy_from_slice(b"VMCTL-BLOCK-TEST");
    std::fs::write(&img, &data).unwrap();
    let uds = dir.path().join("v.sock");
    let bin = vmctl_bin::path();
    let (out, wall) = {
        let (tx, rx) = std::sync::mpsc::channel();
        netns::in_new_netns(move || {
            let start = Instant::now();
            let mut child = Command::new(bin)
                .args(["run", "--memory", "128", "--kernel"])
                .arg(&kernel)
                .arg("--initrd")
                .arg(&initrd)
                .args(["--cmdline", "vmctl.halt=poweroff", "--disk"])
                .arg(format!("{},ro", img.display()))
                .args(["--net", "tap=vmctl-lx0,mac=06:00:ac:10:00:09", "--vsock"])
                .arg(format!("cid=9,uds={}", uds.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning vmctl");
            loop {
                if child.try_wait().unwrap().is_some() || start.elapsed() > LIMIT {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let _ = child.kill();
            tx.send((child.wait_with_output().unwrap(), start.elapsed()))
                .unwrap();
        });
        rx.recv().unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "linux with virtio devices: exit {:?} after {wall:?}",
        out.status.code()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for mmio in ["0xc0001000", "0xc0002000", "0xc0003000"] {
        let line = "virtio-mmio: Registering device virtio-mmio.";
        assert!(stdout.contains(line) && stdout.contains(mmio), "{stdout}");
    }
    assert!(
        stdout.contains("[vda] 2048 512-byte logical blocks"),
        "virtio-blk capacity not seen:\n{stdout}"
    );
    assert!(stdout.contains("PF_VSOCK"), "{stdout}");
    assert!(
        !stdout.contains("probe of virtio"),
        "a virtio driver failed to probe:\n{stdout}"
    );
    assert!(stdout.contains("VMCTL-GUEST-READY"), "{stdout}");
}
