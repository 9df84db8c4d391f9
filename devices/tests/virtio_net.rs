//! virtio-net driven through its MMIO registers, with frames going both ways through a real TAP
//! inside a network namespace created by the test.

mod common;

use std::time::Duration;

use common::netns::{in_new_netns, link_up, test_frame, PacketSocket};
use common::Driver;
use devices::virtio::net::{Net, NetConfig, NetError, TapError, VNET_HDR_LEN};

const F_MAC: u64 = 1 << 5;
const MAC: [u8; 6] = [0x06, 0, 0xac, 0x10, 0, 2];
const SEC: Duration = Duration::from_secs(5);

fn net(name: &str) -> Net {
    Net::new(NetConfig {
        tap_name: name.into(),
        mac: Some(MAC),
        ..Default::default()
    })
    .unwrap()
}

/// Posts `n` rx buffers of 2048 bytes; returns their addresses by head index.
fn post_rx(d: &mut Driver, n: usize) -> Vec<(u16, u64)> {
    (0..n)
        .map(|_| {
            let b = d.alloc(2048);
            (d.add_chain(0, &[(b, 2048, true)]), b)
        })
        .collect()
}

/// Collects rx completions; returns the received frames (without header).
fn rx_frames(d: &mut Driver, bufs: &[(u16, u64)], n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (id, len) in d.wait_used(0, n, SEC) {
        let addr = bufs.iter().find(|b| u32::from(b.0) == id).unwrap().1;
        let data = d.read_mem(addr, len as usize);
        assert!(len as usize >= VNET_HDR_LEN);
        assert_eq!(&data[10..12], &1u16.to_le_bytes(), "num_buffers");
        assert_eq!(data[1..10], [0; 9], "no GSO without offloads");
        out.push(data[VNET_HDR_LEN..].to_vec());
    }
    out
}

/// Waits until a frame ending in `payload` reaches the guest.
fn wait_rx_payload(d: &mut Driver, bufs: &[(u16, u64)], payload: &[u8]) -> Vec<u8> {
    let deadline = std::time::Instant::now() + SEC;
    while std::time::Instant::now() < deadline {
        if let Some(f) = rx_frames(d, bufs, 1)
            .into_iter()
            .find(|f| f.ends_with(payload))
        {
            return f;
        }
    }
    panic!("frame with payload {payload:?} never reached the guest");
}

#[test]
fn frames_flow_both_ways_through_a_real_tap() {
    in_new_netns(|| {
        let dev = net("vmctl-t0");
        assert_eq!(dev.tap_name(), "vmctl-t0");
        let mut d = Driver::new(dev);
        assert_eq!(d.read32(0x08), 1, "device id");
        assert_ne!(d.device_features() & F_MAC, 0);
        assert_eq!(d.read_config(0, 6), MAC);
        let ifindex = link_up("vmctl-t0");
        let sock = PacketSocket::bind(ifindex);
        d.activate(F_MAC, 2, 64);
        let rx = post_rx(&mut d, 8);
        d.kick(0);

        // Host -> guest.
        let frame = test_frame(
            [0xff; 6],
            [2, 0, 0, 0, 0, 1],
            b"hello guest, from the host side",
        );
        sock.send(&frame);
        let got = wait_rx_payload(&mut d, &rx, b"hello guest, from the host side");
        assert_eq!(got, frame);
        assert!(d.irq_fired());

        // Guest -> host: a 12-byte zero header in its own descriptor, then the frame.
        let payload = b"hello host, from the guest".to_vec();
        let out = test_frame([0xff; 6], MAC, &payload);
        let h = d.alloc(VNET_HDR_LEN);
        let f = d.alloc_with(&out);
        let head = d.add_chain(
            1,
            &[
                (h, VNET_HDR_LEN as u32, false),
                (f, out.len() as u32, false),
            ],
        );
        d.kick(1);
        assert_eq!(d.wait_used(1, 1, SEC), vec![(u32::from(head), 0)]);
        let seen = sock
            .recv_matching(SEC, |fr| {
                fr.len() >= out.len() && fr[..out.len()] == out[..]
            })
            .expect("guest frame not seen on the TAP");
        assert_eq!(&seen[6..12], &MAC);
    });
}

#[test]
fn rx_waits_for_guest_buffers_and_resumes_on_notify() {
    in_new_netns(|| {
        let mut d = Driver::new(net("vmctl-t1"));
        let sock = PacketSocket::bind(link_up("vmctl-t1"));
        d.activate(F_MAC, 2, 64);
        // No rx buffers yet: frames stay queued in the TAP.
        let payloads: Vec<Vec<u8>> = (0..3)
            .map(|i| format!("queued frame {i}").into_bytes())
            .collect();
        for p in &payloads {
            sock.send(&test_frame([0xff; 6], [2, 0, 0, 0, 0, 1], p));
        }
        d.pump(Duration::from_millis(100));
        assert_eq!(d.take_used(0), vec![]);
        // Buffers arrive: everything queued is delivered, in order.
        let rx = post_rx(&mut d, 16);
        d.kick(0);
        let mut got = Vec::new();
        while got.len() < payloads.len() {
            got.extend(
                rx_frames(&mut d, &rx, 1)
                    .into_iter()
                    .filter(|f| f[12..14] == [0x88, 0xb5])
                    .map(|f| f[14..].to_vec()),
            );
        }
        assert_eq!(got, payloads);
    });
}

#[test]
fn busy_and_bad_tap_names_are_clear_errors() {
    in_new_netns(|| {
        let _first = net("vmctl-busy");
        let e = Net::new(NetConfig {
            tap_name: "vmctl-busy".into(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(matches!(e, NetError::Tap(TapError::Busy(_))), "{e:?}");
        assert!(e.to_string().contains("vmctl-busy") && e.to_string().contains("busy"));

        let long = "a-name-of-16-chr";
        let e = Net::new(NetConfig {
            tap_name: long.into(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(
            e.to_string().contains(long) && e.to_string().contains("at most 15")
                || e.to_string().contains("1 to 15"),
            "{e}"
        );
    });
    assert!(devices::virtio::net::parse_mac("06:00:ac:10:00:02").is_ok());
    let e = devices::virtio::net::parse_mac("06:00:ac:10:00").unwrap_err();
    assert!(e.to_string().contains("06:00:ac:10:00"));
}

#[test]
fn tx_rate_limiter_paces_frames() {
    use devices::virtio::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
    in_new_netns(|| {
        let dev = Net::new(NetConfig {
            tap_name: "vmctl-rl".into(),
            mac: Some(MAC),
            tx_rate_limiter: Some(RateLimiterConfig {
                bandwidth: None,
                ops: Some(TokenBucketConfig {
                    size: 2,
                    one_time_burst: 0,
                    refill_time_ms: 200,
                }),
            }),
            ..Default::default()
        })
        .unwrap();
        let mut d = Driver::new(dev);
        let sock = PacketSocket::bind(link_up("vmctl-rl"));
        d.activate(F_MAC, 2, 64);
        let start = std::time::Instant::now();
        for i in 0..6u8 {
            let mut f = vec![0u8; VNET_HDR_LEN];
            f.extend(test_frame([0xff; 6], MAC, &[b'r', b'l', i]));
            let a = d.alloc_with(&f);
            d.add_chain(1, &[(a, f.len() as u32, false)]);
        }
        d.kick(1);
        assert_eq!(d.wait_used(1, 2, SEC).len(), 2);
        let burst = start.elapsed();
        assert_eq!(d.wait_used(1, 4, SEC).len(), 4);
        let all = start.elapsed();
        assert!(
            burst < Duration::from_millis(150),
            "first two took {burst:?}"
        );
        assert!(
            all >= Duration::from_millis(350),
            "six frames at 2/200ms took {all:?}"
        );
        for i in 0..6u8 {
            sock.recv_matching(SEC, |fr| {
                fr.len() >= 17 && fr[12..17] == [0x88, 0xb5, b'r', b'l', i]
            })
            .unwrap_or_else(|| panic!("frame {i} missing"));
        }
    });
}
