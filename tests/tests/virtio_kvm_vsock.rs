//! virtio-vsock on real KVM: a ring-3 test guest (tests/guests/virtio_vsock.S) makes a
//! connection to a host Unix socket listener and accepts one made by a host process through
//! the device's `CONNECT <port>` protocol.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use devices::virtio::vsock::{Vsock, VsockConfig};
use devices::virtio::VirtioMmioDevice;
use vmctl_tests::{guest, vm_run};
use vmm::{ExitReason, VmBuilder};

fn accept_within(l: &UnixListener, limit: Duration) -> UnixStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("guest never connected: {e}"),
        }
    }
}

#[test]
fn guest_and_host_initiated_streams_over_kvm() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let mut b = VmBuilder::new(guest::config("virtio_vsock", 1, "")).unwrap();
    let vsock = Vsock::new(VsockConfig {
        guest_cid: 7,
        uds_path: uds.clone(),
    })
    .unwrap();
    let dev = VirtioMmioDevice::new(b.guest_memory().clone(), vsock).unwrap();
    b.add_mmio_device(
        dev.transport.clone(),
        dev.ioevents().unwrap(),
        dev.interrupt_evt().try_clone().unwrap(),
    )
    .unwrap();
    b.add_subscriber(dev.subscriber.clone());
    let listener = UnixListener::bind(format!("{}_1234", uds.display())).unwrap();

    let host = std::thread::spawn(move || {
        let t = Some(Duration::from_secs(20));
        // Guest-initiated.
        let mut s = accept_within(&listener, Duration::from_secs(20));
        s.set_read_timeout(t).unwrap();
        let mut got = [0u8; 16];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello-from-guest");
        s.write_all(b"pong-from-host!!").unwrap();
        assert_eq!(
            s.read(&mut got).unwrap(),
            0,
            "EOF after the guest's shutdown"
        );
        // Host-initiated.
        let mut c = UnixStream::connect(&uds).unwrap();
        c.set_read_timeout(t).unwrap();
        c.write_all(b"CONNECT 52\n").unwrap();
        let mut line = String::new();
        let mut r = BufReader::new(c.try_clone().unwrap());
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("OK ") && line.ends_with('\n'), "{line:?}");
        c.write_all(b"ping-over-vsock!").unwrap();
        let mut echo = [0u8; 16];
        r.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"ping-over-vsock!");
        line
    });
    let run = vm_run::run(b, Duration::from_secs(30)).unwrap();
    let ok_line = host.join().unwrap();
    let c = &run.console;
    assert_eq!(run.reason, ExitReason::Reboot, "{c}");
    assert!(c.contains("cid=07"), "{c}");
    assert!(c.contains("g-conn"), "{c}");
    assert!(c.contains("g-rx=pong-from-host!!"), "{c}");
    assert!(c.contains("g-closed"), "{c}");
    assert!(c.contains("h-req"), "{c}");
    assert!(c.contains("h-echo=ping-over-vsock!"), "{c}");
    assert!(c.contains("h-closed"), "{c}");
    assert!(c.contains("done"), "{c} (host saw {ok_line:?})");
}
