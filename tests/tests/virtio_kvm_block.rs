//! virtio-blk on real KVM: a ring-3 test guest (tests/guests/virtio_blk.S) drives the device
//! through its MMIO registers, KVM ioeventfds and the used ring.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use devices::virtio::block::{Block, BlockConfig};
use devices::virtio::VirtioMmioDevice;
use vmctl_tests::{guest, vm_run};
use vmm::{ExitReason, VmBuilder};

fn image() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let mut data = vec![0u8; 64 * 1024];
    data[..16].copy_from_slice(b"VMCTL-BLOCK-TEST");
    f.write_all(&data).unwrap();
    f
}

fn run_guest(img: &std::path::Path, read_only: bool) -> String {
    let mut b = VmBuilder::new(guest::config("virtio_blk", 1, "")).unwrap();
    let blk = Block::new(BlockConfig {
        path: img.to_path_buf(),
        read_only,
        id: "kvm-disk".into(),
        rate_limiter: None,
        root: false,
    })
    .unwrap();
    let dev = VirtioMmioDevice::new(b.guest_memory().clone(), blk).unwrap();
    let slot = b
        .add_mmio_device(
            dev.transport.clone(),
            dev.ioevents().unwrap(),
            dev.interrupt_evt().try_clone().unwrap(),
        )
        .unwrap();
    assert_eq!((slot.base, slot.irq), (0xc000_1000, 5));
    assert!(b.cmdline().contains("virtio_mmio.device=4K@0xc0001000:5"));
    b.add_subscriber(dev.subscriber.clone());
    let run = vm_run::run(b, Duration::from_secs(30)).unwrap();
    assert_eq!(run.reason, ExitReason::Reboot, "console: {}", run.console);
    run.console
}

#[test]
fn guest_reads_writes_flushes_and_gets_id_over_kvm() {
    let img = image();
    let console = run_guest(img.path(), false);
    assert!(console.contains("rd=00:VMCTL-BLOCK-TEST"), "{console}");
    assert!(console.contains("wr=00"), "{console}");
    assert!(console.contains("fl=00"), "{console}");
    assert!(console.contains("id=00:kvm-disk\0"), "{console:?}");
    assert!(console.contains("isr=01"), "{console}");
    assert!(console.contains("done"), "{console}");
    let mut f = std::fs::File::open(img.path()).unwrap();
    let mut s1 = [0u8; 16];
    f.seek(SeekFrom::Start(512)).unwrap();
    f.read_exact(&mut s1).unwrap();
    assert_eq!(&s1, b"written-by-guest");
}

#[test]
fn read_only_disk_refuses_guest_writes_over_kvm() {
    let img = image();
    let before = std::fs::read(img.path()).unwrap();
    let console = run_guest(img.path(), true);
    assert!(console.contains("rd=00:VMCTL-BLOCK-TEST"), "{console}");
    assert!(
        console.contains("wr=01"),
        "write must fail with IOERR: {console}"
    );
    assert!(console.contains("fl=00"), "{console}");
    assert_eq!(std::fs::read(img.path()).unwrap(), before);
}
