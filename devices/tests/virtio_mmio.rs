//! The virtio-mmio register file and device status state machine, driven like a driver would
//! (block device behind it, real image file).

mod common;

use std::io::Write;
use std::time::Duration;

use common::Driver;
use devices::bus::BusDevice;
use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::{status, VIRTIO_F_VERSION_1};

fn driver() -> (Driver, tempfile::NamedTempFile) {
    let mut img = tempfile::NamedTempFile::new().unwrap();
    img.write_all(&[0u8; 4096]).unwrap();
    let blk = Block::new(BlockConfig {
        path: img.path().to_path_buf(),
        read_only: false,
        id: "m".into(),
        rate_limiter: None,
        root: false,
    })
    .unwrap();
    (Driver::new(blk), img)
}

#[test]
fn identity_registers_and_access_widths() {
    let (d, _img) = driver();
    assert_eq!(d.read32(0x00), 0x7472_6976);
    assert_eq!(d.read32(0x04), 2);
    assert_eq!(d.read32(0x08), 2);
    assert_ne!(d.read32(0x0c), 0, "vendor id");
    // Registers are 32-bit: other widths read as zero and writes are ignored.
    let mut b2 = [0xffu8; 2];
    d.dev.transport.lock().unwrap().read(0x00, &mut b2);
    assert_eq!(b2, [0, 0]);
    d.dev.transport.lock().unwrap().write(0x70, &[1]);
    assert_eq!(d.status(), 0);
    // Unaligned 32-bit access is refused too.
    d.dev
        .transport
        .lock()
        .unwrap()
        .write(0x71, &1u32.to_le_bytes());
    assert_eq!(d.status(), 0);
    // Config space takes any width: capacity (8 sectors) byte by byte.
    assert_eq!(d.read_config(0, 1), [8]);
    assert_eq!(d.read_config(1, 3), [0, 0, 0]);
    assert_eq!(d.read_config(0x40, 4), [0; 4], "past the config struct");
    // No shared memory regions; queue 1 does not exist.
    assert_eq!(d.read32(0xb0), u32::MAX);
    d.write32(0x30, 1);
    assert_eq!(d.read32(0x34), 0);
    d.write32(0x30, 0);
    assert_eq!(d.read32(0x34), 256);
}

#[test]
fn status_state_machine_is_strict() {
    let (mut d, _img) = driver();
    // Features can only be written in DRIVER state, before FEATURES_OK.
    d.write32(0x24, 1);
    d.write32(0x20, 1);
    d.write32(0x70, status::ACKNOWLEDGE);
    d.write32(
        0x70,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    ); // skips a step
    assert_eq!(d.status(), status::ACKNOWLEDGE);
    d.write32(0x70, status::ACKNOWLEDGE | status::DRIVER);
    d.write32(
        0x70,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(
        d.status() & status::FEATURES_OK,
        0,
        "VERSION_1 was written too early"
    );
    // Queue registers are ignored before FEATURES_OK.
    d.write32(0x38, 4);
    d.write32(0x44, 1);
    assert_eq!(d.read32(0x44), 0);
    // Proper negotiation, queue set-up, DRIVER_OK.
    assert!(d.negotiate(VIRTIO_F_VERSION_1));
    d.setup_queue(0, 8);
    assert_eq!(d.read32(0x44), 1);
    d.driver_ok();
    assert_eq!(
        d.status(),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
    // After DRIVER_OK the queue layout is frozen and features cannot change.
    d.write32(0x38, 2);
    d.write32(0x80, 0x9000);
    d.write32(0x24, 0);
    d.write32(0x20, 0xffff_ffff);
    // ... and the device still works with the original layout.
    let h = d.alloc_with(&[0u8; 16]);
    let st = d.alloc(1);
    let buf = d.alloc(512);
    d.add_chain(0, &[(h, 16, false), (buf, 512, true), (st, 1, true)]);
    d.kick_mmio(0); // the transport's own notify path (no ioeventfd)
    assert_eq!(d.wait_used(0, 1, Duration::from_secs(5)).len(), 1);
    assert_eq!(d.read_mem(st, 1), [0]);
    // FAILED sticks until reset; reset clears everything.
    d.write32(0x70, d.status() | status::FAILED);
    assert_ne!(d.status() & status::FAILED, 0);
    assert_ne!(d.interrupt_status(), 0);
    d.write32(0x70, 0);
    assert_eq!(d.status(), 0);
    assert_eq!(d.interrupt_status(), 0);
    d.write32(0x30, 0);
    assert_eq!(d.read32(0x44), 0, "queue not ready after reset");
    assert_eq!(d.read32(0xfc), 0, "config generation");
}

#[test]
fn misaligned_rings_need_reset() {
    let (mut d, _img) = driver();
    assert!(d.negotiate(VIRTIO_F_VERSION_1));
    d.write32(0x30, 0);
    d.write32(0x80, 0x1001); // descriptor table must be 16-byte aligned
    assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_ne!(d.interrupt_status() & 2, 0);
    assert!(d.irq_fired());
    // DRIVER_OK is refused while the device needs a reset.
    d.write32(0x44, 1);
    d.driver_ok();
    assert_eq!(d.status() & status::DRIVER_OK, 0);
    d.write32(0x70, 0);
    assert_eq!(d.status(), 0);
    d.activate(0, 1, 8);
}
