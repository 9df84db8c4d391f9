//! virtio-net on real KVM: a ring-3 test guest (tests/guests/virtio_net.S) sends a frame out
//! through a real TAP and receives one back, inside a network namespace made by the test.

#[path = "../../devices/tests/common/netns.rs"]
mod netns;

use std::time::Duration;

use devices::virtio::net::{Net, NetConfig};
use devices::virtio::VirtioMmioDevice;
use vmctl_tests::{guest, vm_run};
use vmm::{ExitReason, VmBuilder};

const MAC: [u8; 6] = [0x06, 0x00, 0xac, 0x10, 0x00, 0x05];

#[test]
fn guest_frames_cross_a_real_tap_both_ways() {
    netns::in_new_netns(|| {
        let mut b = VmBuilder::new(guest::config("virtio_net", 1, "")).unwrap();
        let net = Net::new(NetConfig {
            tap_name: "vmctl-kvm0".into(),
            mac: Some(MAC),
            ..Default::default()
        })
        .unwrap();
        let dev = VirtioMmioDevice::new(b.guest_memory().clone(), net).unwrap();
        b.add_mmio_device(
            dev.transport.clone(),
            dev.ioevents().unwrap(),
            dev.interrupt_evt().try_clone().unwrap(),
        )
        .unwrap();
        b.add_subscriber(dev.subscriber.clone());
        let sock = netns::PacketSocket::bind(netns::link_up("vmctl-kvm0"));
        // Host side: wait for the guest's frame, answer it.
        let host = std::thread::spawn(move || {
            let seen = sock.recv_matching(Duration::from_secs(20), |f| {
                f.len() >= 30 && f[12..14] == [0x88, 0xb5] && &f[14..30] == b"frame-from-guest"
            });
            if seen.is_some() {
                sock.send(&netns::test_frame(
                    MAC,
                    [2, 0, 0, 0, 0, 1],
                    b"frame-from-host!",
                ));
            }
            seen
        });
        let run = vm_run::run(b, Duration::from_secs(30)).unwrap();
        let seen = host
            .join()
            .unwrap()
            .expect("guest frame never reached the TAP");
        assert_eq!(&seen[0..6], &[0xff; 6]);
        assert_eq!(&seen[6..12], &MAC, "guest used the MAC from config space");
        assert_eq!(run.reason, ExitReason::Reboot, "{}", run.console);
        assert!(
            run.console.contains("mac=06:00:ac:10:00:05"),
            "{}",
            run.console
        );
        assert!(run.console.contains("tx=ok"), "{}", run.console);
        assert!(
            run.console.contains("rx=frame-from-host!"),
            "{}",
            run.console
        );
    });
}
