//! The project's real guest kernel uses vmctl's virtio-mmio devices, attached with `vmctl run
//! --disk --net --vsock`: it probes all three, reads the disk, and pings the host over the NIC
//! (a TAP inside a network namespace made by the test). Skipped, with the reason printed, when
//! the kernel has not been built (scripts/build-kernel.sh, scripts/build-initramfs.sh). Takes
//! minutes on nested PVM KVM.

#[path = "../../devices/tests/common/netns.rs"]
mod netns;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmctl_tests::console::Console;
use vmctl_tests::{linux, vmctl_bin};

const TAP: &str = "vmctl-lx0";
/// Printed by the guest shell as `END-OF-$((6*7))`, so the echoed command never matches.
const DONE: &str = "END-OF-42";
const GUEST_CMDS: &str = "ip link set eth0 up; ip addr add 10.99.0.2/24 dev eth0; \
     ping -c 2 -W 20 10.99.0.1; dd if=/dev/vda bs=16 count=1 2>/dev/null; echo; \
     echo END-OF-$((6*7))\n";

#[test]
fn linux_uses_virtio_blk_net_and_vsock() {
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
    let (tx, rx) = std::sync::mpsc::channel();
    netns::in_new_netns(move || {
        let start = Instant::now();
        let mut child = Command::new(bin)
            .args(["run", "--memory", "128", "--kernel"])
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", "vmctl.shell=1 loglevel=7", "--disk"])
            .arg(format!("{},ro", img.display()))
            .args([
                "--net",
                &format!("tap={TAP},mac=06:00:ac:10:00:09"),
                "--vsock",
            ])
            .arg(format!("cid=9,uds={}", uds.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning vmctl");
        let console = Console::capture(child.stdout.take().unwrap());
        let mut stdin = child.stdin.take().unwrap();
        let mut ran = false;
        if console.wait_for("vmctl-guest: shell", Duration::from_secs(900)) {
            // The host end of the guest's NIC (vmctl created the TAP in this namespace).
            let st = Command::new("ip")
                .args(["addr", "add", "10.99.0.1/24", "dev", TAP])
                .status()
                .unwrap();
            assert!(st.success());
            let st = Command::new("ip")
                .args(["link", "set", TAP, "up"])
                .status()
                .unwrap();
            assert!(st.success());
            stdin.write_all(GUEST_CMDS.as_bytes()).unwrap();
            ran = console.wait_for(DONE, Duration::from_secs(600));
            let _ = stdin.write_all(b"exit\n");
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        let text = console.finish();
        tx.send((ran, status.code(), text, start.elapsed()))
            .unwrap();
    });
    let (ran, code, out, wall) = rx.recv().unwrap();
    eprintln!("linux with virtio devices: exit {code:?} after {wall:?}");
    assert!(ran, "guest commands did not finish:\n{out}");
    assert_eq!(code, Some(0), "{out}");
    for mmio in ["0xc0001000", "0xc0002000", "0xc0003000"] {
        assert!(out.contains("virtio-mmio.") && out.contains(mmio), "{out}");
    }
    assert!(out.contains("[vda] 2048 512-byte logical blocks"), "{out}");
    assert!(out.contains("PF_VSOCK"), "{out}");
    assert!(
        !out.contains("probe of virtio"),
        "a virtio driver failed to probe:\n{out}"
    );
    assert!(
        out.contains("2 packets received"),
        "ping over virtio-net failed:\n{out}"
    );
    assert!(
        out.contains("\nVMCTL-BLOCK-TEST"),
        "reading /dev/vda failed:\n{out}"
    );
}
