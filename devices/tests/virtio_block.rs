//! virtio-blk driven through its MMIO registers and a real virtqueue in guest memory, against a
//! real image file.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use common::Driver;
use devices::virtio::block::{Block, BlockConfig, BlockError};
use devices::virtio::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
use devices::virtio::status;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const F_SEG_MAX: u64 = 1 << 2;
const SEC: Duration = Duration::from_secs(5);

fn image(sectors: u64) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..sectors * 512).map(|i| (i * 7 % 251) as u8).collect();
    f.write_all(&data).unwrap();
    f.flush().unwrap();
    f
}

fn cfg(path: &std::path::Path, ro: bool) -> BlockConfig {
    BlockConfig {
        path: path.to_path_buf(),
        read_only: ro,
        id: "rootfs".into(),
        rate_limiter: None,
        root: false,
    }
}

fn header(d: &mut Driver, ty: u32, sector: u64) -> u64 {
    let mut h = Vec::new();
    h.extend_from_slice(&ty.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&sector.to_le_bytes());
    d.alloc_with(&h)
}

/// Posts a request: header, optional data (device-writable for IN/GET_ID), status byte.
fn request(
    d: &mut Driver,
    ty: u32,
    sector: u64,
    data: &[(u64, u32)],
    data_writable: bool,
) -> (u16, u64) {
    let h = header(d, ty, sector);
    let st = d.alloc(1);
    d.mem
        .write_slice(&[0xff], vm_memory::GuestAddress(st))
        .unwrap();
    let mut bufs = vec![(h, 16, false)];
    bufs.extend(data.iter().map(|&(a, l)| (a, l, data_writable)));
    bufs.push((st, 1, true));
    let head = d.add_chain(0, &bufs);
    d.kick(0);
    (head, st)
}

use vm_memory::Bytes;

fn status_byte(d: &Driver, st: u64) -> u8 {
    d.read_mem(st, 1)[0]
}

#[test]
fn registers_identify_a_block_device_and_require_version_1() {
    let img = image(8);
    let mut d = Driver::new(Block::new(cfg(img.path(), false)).unwrap());
    assert_eq!(d.read32(0x08), 2, "device id");
    let f = d.device_features();
    assert_ne!(f & devices::virtio::VIRTIO_F_VERSION_1, 0);
    assert_ne!(f & F_FLUSH, 0);
    assert_eq!(f & F_RO, 0);
    // A legacy driver (no VERSION_1) is refused: FEATURES_OK does not stick.
    assert!(!d.negotiate(F_FLUSH));
    // Features the device never offered are refused too.
    assert!(!d.negotiate(devices::virtio::VIRTIO_F_VERSION_1 | 1 << 40));
    assert!(d.negotiate(devices::virtio::VIRTIO_F_VERSION_1 | F_FLUSH));
    // Capacity in config space.
    assert_eq!(d.read_config(0, 8), 8u64.to_le_bytes());
    // Multi-segment requests: seg_max (le32 at 12) is the queue size (256) less header and
    // status, so a request always fits the ring.
    assert_ne!(f & F_SEG_MAX, 0);
    assert_eq!(d.read_config(12, 4), 254u32.to_le_bytes());
    // Status writes that skip a step are ignored.
    d.write32(0x70, 0);
    d.write32(0x70, status::DRIVER_OK);
    assert_eq!(d.status(), 0);
}

#[test]
fn read_write_flush_get_id_round_trip_against_the_file() {
    let img = image(64);
    let mut d = Driver::new(Block::new(cfg(img.path(), false)).unwrap());
    d.activate(F_FLUSH, 1, 16);

    // Read sectors 3..5 into two buffers of 512 and 512 bytes.
    let b1 = d.alloc(512);
    let b2 = d.alloc(512);
    let (head, st) = request(&mut d, T_IN, 3, &[(b1, 512), (b2, 512)], true);
    let used = d.wait_used(0, 1, SEC);
    assert_eq!(used, vec![(u32::from(head), 1025)]);
    assert_eq!(status_byte(&d, st), 0);
    let mut expect = vec![0u8; 1024];
    let mut f = std::fs::File::open(img.path()).unwrap();
    f.seek(SeekFrom::Start(3 * 512)).unwrap();
    f.read_exact(&mut expect).unwrap();
    let mut got = d.read_mem(b1, 512);
    got.extend(d.read_mem(b2, 512));
    assert_eq!(got, expect);
    assert!(d.irq_fired());
    assert_eq!(d.interrupt_status() & 1, 1);
    d.write32(0x64, 1);
    assert_eq!(d.interrupt_status() & 1, 0);

    // Write 3 sectors at sector 10, header and data in separate descriptors.
    let payload: Vec<u8> = (0..1536u32).map(|i| (i % 13) as u8 + 100).collect();
    let b = d.alloc_with(&payload);
    let (head, st) = request(&mut d, T_OUT, 10, &[(b, 1536)], false);
    assert_eq!(d.wait_used(0, 1, SEC), vec![(u32::from(head), 1)]);
    assert_eq!(status_byte(&d, st), 0);
    let mut on_disk = vec![0u8; 1536];
    f.seek(SeekFrom::Start(10 * 512)).unwrap();
    f.read_exact(&mut on_disk).unwrap();
    assert_eq!(on_disk, payload);

    // Flush.
    let (_, st) = request(&mut d, T_FLUSH, 0, &[], false);
    d.wait_used(0, 1, SEC);
    assert_eq!(status_byte(&d, st), 0);

    // GET_ID returns the drive id.
    let idb = d.alloc(20);
    let (_, st) = request(&mut d, T_GET_ID, 0, &[(idb, 20)], true);
    let used = d.wait_used(0, 1, SEC);
    assert_eq!(used[0].1, 21);
    assert_eq!(status_byte(&d, st), 0);
    assert_eq!(&d.read_mem(idb, 6), b"rootfs");

    // Unknown request type: UNSUPP.
    let (_, st) = request(&mut d, 0x77, 0, &[], false);
    d.wait_used(0, 1, SEC);
    assert_eq!(status_byte(&d, st), 2);

    // Reads past the end and odd lengths: IOERR, nothing transferred.
    let b = d.alloc(1024);
    let (_, st) = request(&mut d, T_IN, 63, &[(b, 1024)], true);
    assert_eq!(d.wait_used(0, 1, SEC)[0].1, 1);
    assert_eq!(status_byte(&d, st), 1);
    let (_, st) = request(&mut d, T_OUT, u64::MAX, &[(b, 512)], false);
    d.wait_used(0, 1, SEC);
    assert_eq!(status_byte(&d, st), 1);
    let (_, st) = request(&mut d, T_IN, 0, &[(b, 100)], true);
    d.wait_used(0, 1, SEC);
    assert_eq!(status_byte(&d, st), 1);
}

#[test]
fn read_only_disk_refuses_writes_and_keeps_the_file_intact() {
    let img = image(16);
    let before = std::fs::read(img.path()).unwrap();
    let mut d = Driver::new(Block::new(cfg(img.path(), true)).unwrap());
    assert_ne!(d.device_features() & F_RO, 0, "F_RO offered");
    d.activate(F_RO | F_FLUSH, 1, 8);
    let b = d.alloc_with(&[0xaa; 512]);
    let (_, st) = request(&mut d, T_OUT, 0, &[(b, 512)], false);
    assert_eq!(d.wait_used(0, 1, SEC)[0].1, 1);
    assert_eq!(status_byte(&d, st), 1, "VIRTIO_BLK_S_IOERR");
    // Reads still work.
    let r = d.alloc(512);
    let (_, st) = request(&mut d, T_IN, 0, &[(r, 512)], true);
    d.wait_used(0, 1, SEC);
    assert_eq!(status_byte(&d, st), 0);
    assert_eq!(d.read_mem(r, 512), before[..512]);
    assert_eq!(std::fs::read(img.path()).unwrap(), before);
}

#[test]
fn capacity_rounds_down_and_config_errors_name_the_fix() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&vec![1u8; 1000 * 512 + 100]).unwrap();
    let b = Block::new(cfg(f.path(), false)).unwrap();
    assert_eq!(b.capacity(), 1000);

    let dir = tempfile::tempdir().unwrap();
    let e = Block::new(cfg(dir.path(), false)).err().unwrap();
    assert!(matches!(e, BlockError::IsDirectory(_)));
    assert!(e.to_string().contains("is a directory") && e.to_string().contains("raw image"));

    let missing = dir.path().join("nope.img");
    let e = Block::new(cfg(&missing, false)).err().unwrap();
    assert!(e.to_string().contains("nope.img") && e.to_string().contains("does not exist"));

    // Drive ids longer than the 20-byte serial are cut, not refused (the API allows them).
    let mut c = cfg(f.path(), false);
    c.id = "0123456789abcdefghijKLMN".into();
    let mut d = Driver::new(Block::new(c).unwrap());
    d.activate(0, 1, 8);
    let idb = d.alloc(20);
    let (_, st) = request(&mut d, T_GET_ID, 0, &[(idb, 20)], true);
    d.wait_used(0, 1, SEC);
    assert_eq!(status_byte(&d, st), 0);
    assert_eq!(&d.read_mem(idb, 20), b"0123456789abcdefghij");
}

#[test]
fn hostile_chains_are_dropped_and_broken_rings_need_reset() {
    let img = image(16);
    let before = std::fs::read(img.path()).unwrap();
    let mut d = Driver::new(Block::new(cfg(img.path(), false)).unwrap());

    // Notification before DRIVER_OK does nothing.
    assert!(d.negotiate(devices::virtio::VIRTIO_F_VERSION_1));
    d.setup_queue(0, 8);
    d.kick_mmio(0);
    d.kick(0);
    d.pump(Duration::from_millis(50));
    d.driver_ok();

    // A descriptor that loops to itself.
    let h = header(&mut d, T_OUT, 0);
    d.write_desc(0, 0, h, 16, common::F_NEXT, 0);
    d.push_avail(0, 0);
    // A buffer outside guest memory.
    d.write_desc(0, 1, 0xffff_ffff_0000, 16, 0, 0);
    d.push_avail(0, 1);
    // Data that overflows a u32 length sum.
    d.write_desc(0, 2, h, u32::MAX, common::F_NEXT, 3);
    d.write_desc(0, 3, h, u32::MAX, common::F_WRITE, 0);
    d.push_avail(0, 2);
    // Status byte in a device-readable descriptor (write into read-only buffer).
    let st = d.alloc(1);
    d.write_desc(0, 4, h, 16, common::F_NEXT, 5);
    d.write_desc(0, 5, st, 1, 0, 0);
    d.push_avail(0, 4);
    d.kick(0);
    let used = d.wait_used(0, 4, SEC);
    assert_eq!(used, vec![(0, 0), (1, 0), (2, 0), (4, 0)]);
    assert_eq!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(std::fs::read(img.path()).unwrap(), before);

    // avail idx jumping more than the queue size: the queue is broken.
    d.set_avail_idx(0, d.used_idx(0).wrapping_add(100));
    d.kick(0);
    d.pump(Duration::from_millis(50));
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_ne!(d.interrupt_status() & 2, 0, "config-change interrupt");

    // Reset (status 0) and re-init recovers the device.
    d.activate(0, 1, 8);
    d.reset_data();
    let r = d.alloc(512);
    let (_, st) = request(&mut d, T_IN, 1, &[(r, 512)], true);
    d.wait_used(0, 1, SEC);
    assert_eq!(status_byte(&d, st), 0);
    assert_eq!(d.read_mem(r, 512), before[512..1024]);

    // Queue size that is not a power of two or beyond the maximum.
    d.write32(0x70, 0);
    assert!(d.negotiate(devices::virtio::VIRTIO_F_VERSION_1));
    d.write32(0x30, 0);
    d.write32(0x38, 3);
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    d.write32(0x70, 0);
    assert!(d.negotiate(devices::virtio::VIRTIO_F_VERSION_1));
    d.write32(0x38, 512);
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    // DRIVER_OK with queue rings outside memory.
    d.write32(0x70, 0);
    assert!(d.negotiate(devices::virtio::VIRTIO_F_VERSION_1));
    d.write32(0x80, 0xfff0_0000);
    d.write32(0x84, 0x10);
    d.write32(0x44, 1);
    d.driver_ok();
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn ops_rate_limiter_throttles_and_resumes_on_its_timer() {
    let img = image(16);
    let mut c = cfg(img.path(), false);
    c.rate_limiter = Some(RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 5,
            one_time_burst: 0,
            refill_time_ms: 200,
        }),
    });
    let mut d = Driver::new(Block::new(c).unwrap());
    d.activate(0, 1, 32);
    let start = Instant::now();
    for i in 0..15 {
        let r = d.alloc(512);
        request(&mut d, T_IN, i % 16, &[(r, 512)], true);
    }
    d.kick(0);
    // The first five pass at once; the rest need about 2 refills of 200 ms.
    let first = d.wait_used(0, 5, SEC);
    assert_eq!(first.len(), 5);
    let rest = d.wait_used(0, 10, SEC);
    assert_eq!(rest.len(), 10);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "15 ops at 5/200ms took only {took:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn many_requests_in_flight_read_back_what_was_written() {
    // 8 MiB image written through the device in 128 KiB requests, 32 in flight, then read back.
    let img = image(16 * 1024);
    let mut d = Driver::new(Block::new(cfg(img.path(), false)).unwrap());
    d.activate(0, 1, 128);
    let chunk = 128 * 1024usize;
    let n = 64usize;
    let start = Instant::now();
    for round in 0..2 {
        for batch in 0..(n / 32) {
            d.reset_data();
            let mut bufs = Vec::new();
            for k in 0..32 {
                let i = batch * 32 + k;
                let sector = (i * chunk / 512) as u64;
                let (ty, w) = if round == 0 {
                    (T_OUT, false)
                } else {
                    (T_IN, true)
                };
                let h = header(&mut d, ty, sector);
                let data: Vec<u8> = (0..chunk).map(|j| ((i * 31 + j) % 253) as u8).collect();
                let b = if w {
                    d.alloc(chunk)
                } else {
                    d.alloc_with(&data)
                };
                let st = d.alloc(1);
                d.add_chain(0, &[(h, 16, false), (b, chunk as u32, w), (st, 1, true)]);
                bufs.push((b, st, data));
            }
            d.kick(0);
            assert_eq!(d.wait_used(0, 32, SEC).len(), 32);
            for (b, st, data) in bufs {
                assert_eq!(status_byte(&d, st), 0);
                if round == 1 {
                    assert!(d.read_mem(b, chunk) == data, "data mismatch");
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "virtio-blk: 8 MiB written + 8 MiB read in 128 KiB requests: {:.0} MiB/s ({} build, \
         includes test-side data generation)",
        16.0 / secs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

#[test]
fn event_idx_suppresses_interrupts_and_publishes_avail_event() {
    use devices::virtio::VIRTIO_RING_F_EVENT_IDX;
    use vm_memory::GuestAddress;
    let img = image(16);
    let mut d = Driver::new(Block::new(cfg(img.path(), false)).unwrap());
    assert_ne!(d.device_features() & VIRTIO_RING_F_EVENT_IDX, 0);
    d.activate(VIRTIO_RING_F_EVENT_IDX, 1, 8);
    let q = d.queues[0];
    let used_event = GuestAddress(q.avail + 4 + 2 * 8);
    let avail_event = GuestAddress(q.used + 4 + 8 * 8);
    // The driver wants an interrupt only after used index 3 is passed.
    d.mem.write_obj(3u16, used_event).unwrap();
    let _ = d.irq_fired();
    for i in 0..3 {
        let r = d.alloc(512);
        request(&mut d, T_IN, i, &[(r, 512)], true);
        d.wait_used(0, 1, SEC);
        // The device re-armed notifications at its position in the avail ring.
        let ae: u16 = d.mem.read_obj(avail_event).unwrap();
        assert_eq!(ae, i as u16 + 1);
        assert!(!d.irq_fired(), "interrupt {i} should have been suppressed");
    }
    let r = d.alloc(512);
    request(&mut d, T_IN, 3, &[(r, 512)], true);
    d.wait_used(0, 1, SEC);
    assert!(
        d.irq_fired(),
        "used index passed used_event: interrupt expected"
    );
}
