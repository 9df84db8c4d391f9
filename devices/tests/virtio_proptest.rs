//! Property tests: arbitrary (hostile) descriptor tables, avail rings and buffer contents are fed
//! to every device's queue handlers over a real `GuestMemoryMmap`. Whatever the guest writes, the
//! device must not panic or hang, must only complete heads that exist, must never complete more
//! chains than were made available, and must work again after a reset.

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::time::Duration;

use common::{Driver, DATA_BASE, MEM_SIZE};
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::net::{Net, NetConfig};
use devices::virtio::vsock::{Vsock, VsockConfig};
use devices::virtio::{status, VIRTIO_F_VERSION_1};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vm_memory::{Bytes, GuestAddress};

const TABLE: usize = 16;

#[derive(Clone, Debug)]
struct QueueInput {
    size: u16,
    descs: Vec<(u64, u32, u16, u16)>,
    avail_idx: u16,
    ring: Vec<u16>,
}

#[derive(Clone, Debug)]
struct Case {
    queues: Vec<QueueInput>,
    data: Vec<u8>,
}

fn queue_input() -> impl Strategy<Value = QueueInput> {
    let addr = prop_oneof![
        4 => DATA_BASE..DATA_BASE + 0x1000,
        1 => (MEM_SIZE as u64 - 64)..(MEM_SIZE as u64 + 64),
        1 => any::<u64>(),
        1 => Just(0u64),
    ];
    let len = prop_oneof![
        2 => 0u32..64,
        2 => Just(16u32),
        1 => Just(44u32),
        2 => Just(512u32),
        1 => Just(4096u32),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ];
    let next = prop_oneof![4 => 0u16..TABLE as u16, 1 => any::<u16>()];
    let desc = (addr, len, 0u16..8, next);
    let size = prop_oneof![8 => Just(16u16), 2 => Just(8u16), 1 => Just(1u16), 1 => Just(3u16), 1 => Just(0u16)];
    let idx = prop_oneof![4 => 0u16..=TABLE as u16, 1 => any::<u16>()];
    let head = prop_oneof![4 => 0u16..TABLE as u16, 1 => any::<u16>()];
    (
        size,
        proptest::collection::vec(desc, TABLE),
        idx,
        proptest::collection::vec(head, TABLE),
    )
        .prop_map(|(size, descs, avail_idx, ring)| QueueInput {
            size,
            descs,
            avail_idx,
            ring,
        })
}

fn case(nqueues: usize) -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(queue_input(), nqueues),
        proptest::collection::vec(any::<u8>(), 0x1000),
    )
        .prop_map(|(queues, data)| Case { queues, data })
}

/// Resets the device, programs `c` into guest memory and the queues, notifies every queue and
/// runs the event loop; then checks the used rings.
fn run_case(d: &mut Driver, c: &Case) -> Result<(), TestCaseError> {
    d.write32(0x70, 0);
    prop_assert_eq!(d.status(), 0);
    d.mem.write_slice(&c.data, GuestAddress(DATA_BASE)).unwrap();
    prop_assert!(d.negotiate(VIRTIO_F_VERSION_1 | d.device_features() & !(1 << 63)));
    for (i, q) in c.queues.iter().enumerate() {
        let base = 0x1_0000 + i as u64 * 0x1_0000;
        d.mem
            .write_slice(&[0u8; 0x1_0000], GuestAddress(base))
            .unwrap();
        d.write32(0x30, i as u32);
        d.write32(0x38, u32::from(q.size));
        for (reg, a) in [(0x80, base), (0x90, base + 0x8000), (0xa0, base + 0xc000)] {
            d.write32(reg, a as u32);
            d.write32(reg + 4, 0);
        }
        d.write32(0x44, 1);
        for (k, &(addr, len, flags, next)) in q.descs.iter().enumerate() {
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..16].copy_from_slice(&next.to_le_bytes());
            d.mem
                .write_slice(&b, GuestAddress(base + 16 * k as u64))
                .unwrap();
        }
        for (k, h) in q.ring.iter().enumerate() {
            d.mem
                .write_obj(*h, GuestAddress(base + 0x8000 + 4 + 2 * k as u64))
                .unwrap();
        }
        d.mem
            .write_obj(q.avail_idx, GuestAddress(base + 0x8002))
            .unwrap();
    }
    d.driver_ok();
    for i in 0..c.queues.len() {
        d.kick(i);
        d.kick_mmio(i as u32);
    }
    for _ in 0..4 {
        d.em.run_with_timeout(1).unwrap();
    }
    let st = d.status();
    for (i, q) in c.queues.iter().enumerate() {
        let base = 0x1_0000 + i as u64 * 0x1_0000;
        let used: u16 = d.mem.read_obj(GuestAddress(base + 0xc002)).unwrap();
        if st & status::DRIVER_OK == 0 || q.size == 0 || !q.size.is_power_of_two() {
            prop_assert_eq!(used, 0, "queue {} used entries without a valid setup", i);
            continue;
        }
        let avail = if q.avail_idx <= q.size {
            q.avail_idx
        } else {
            0
        };
        prop_assert!(
            used <= avail,
            "queue {}: {} used > {} available",
            i,
            used,
            avail
        );
        for k in 0..used {
            let id: u32 = d
                .mem
                .read_obj(GuestAddress(base + 0xc004 + 8 * u64::from(k)))
                .unwrap();
            prop_assert!(
                id < u32::from(q.size),
                "queue {}: used id {} >= size {}",
                i,
                id,
                q.size
            );
        }
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn block_survives_arbitrary_queues_and_recovers() {
    let mut img = tempfile::NamedTempFile::new().unwrap();
    img.write_all(&vec![0x5a; 64 * 512]).unwrap();
    let dev = Block::new(BlockConfig {
        path: img.path().to_path_buf(),
        read_only: false,
        id: "fuzz".into(),
        rate_limiter: None,
        root: false,
    })
    .unwrap();
    let d = RefCell::new(Driver::new(dev));
    runner(256)
        .run(&case(1), |c| {
            run_case(&mut d.borrow_mut(), &c)?;
            // The image never grows past its capacity.
            prop_assert_eq!(std::fs::metadata(img.path()).unwrap().len(), 64 * 512);
            Ok(())
        })
        .unwrap();
    // Still a working disk after all that.
    let mut d = d.into_inner();
    d.activate(0, 1, 16);
    let h = d.alloc_with(&[0u8; 16]);
    let buf = d.alloc(512);
    let st = d.alloc(1);
    d.add_chain(0, &[(h, 16, false), (buf, 512, true), (st, 1, true)]);
    d.kick(0);
    d.wait_used(0, 1, Duration::from_secs(5));
    assert_eq!(d.read_mem(st, 1), [0]);
}

#[test]
fn net_survives_arbitrary_queues() {
    common::netns::in_new_netns(|| {
        let dev = Net::new(NetConfig {
            tap_name: "vmctl-fuzz".into(),
            mac: Some([6, 0, 0, 0, 0, 1]),
            ..Default::default()
        })
        .unwrap();
        let ifindex = common::netns::link_up("vmctl-fuzz");
        let sock = common::netns::PacketSocket::bind(ifindex);
        let d = RefCell::new(Driver::new(dev));
        runner(128)
            .run(&case(2), |c| {
                // Some host traffic so the rx path has frames to place.
                sock.send(&common::netns::test_frame(
                    [0xff; 6],
                    [2, 0, 0, 0, 0, 9],
                    &c.data[..64],
                ));
                run_case(&mut d.borrow_mut(), &c)
            })
            .unwrap();
    });
}

#[test]
fn vsock_survives_arbitrary_queues() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Vsock::new(VsockConfig {
        guest_cid: 3,
        uds_path: dir.path().join("fuzz.sock"),
    })
    .unwrap();
    let d = RefCell::new(Driver::new(dev));
    runner(256)
        .run(&case(3), |c| run_case(&mut d.borrow_mut(), &c))
        .unwrap();
}
