//! The VMM against real KVM with tiny purpose-built guests (tests/guests/*.S).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::bus::BusDevice;
use vm_memory::{Bytes, GuestAddress};
use vmctl_tests::{guest, vm_run};
use vmm::{ExitReason, VmBuilder};
use vmm_sys_util::eventfd::EventFd;

#[test]
fn serial_output_boot_marker_and_i8042_reset() {
    let run = vm_run::run_guest("hello", 1, "").unwrap();
    assert_eq!(run.reason, ExitReason::Reboot, "console: {}", run.console);
    assert_eq!(run.reason.exit_code(), 0);
    assert_eq!(run.console, "hello from ring 3\n");
    let bt = run.boot_time.expect("boot marker recorded");
    assert!(bt.since_vm_start <= run.wall, "{bt:?} vs {:?}", run.wall);
    assert!(bt.since_process_start >= bt.since_vm_start);
}

#[test]
fn halt_with_interrupts_off_is_power_off() {
    let run = vm_run::run_guest("halt", 1, "").unwrap();
    assert_eq!(run.reason, ExitReason::PowerOff, "console: {}", run.console);
    assert_eq!(run.reason.exit_code(), 0);
    assert_eq!(run.console, "halting with interrupts off\n");
    assert!(
        run.boot_time.is_none(),
        "this guest never writes the marker"
    );
}

#[test]
fn triple_fault_is_a_failure() {
    let run = vm_run::run_guest("triple", 1, "").unwrap();
    assert_eq!(
        run.reason,
        ExitReason::TripleFault { vcpu: 0 },
        "console: {}",
        run.console
    );
    assert_ne!(run.reason.exit_code(), 0);
    assert_eq!(run.console, "about to triple fault\n");
}

#[test]
fn two_vcpus_run_with_distinct_apic_ids() {
    let run = vm_run::run_guest("smp", 2, "2").unwrap();
    assert_eq!(run.reason, ExitReason::Reboot, "console: {}", run.console);
    let mut lines: Vec<&str> = run.console.lines().collect();
    assert_eq!(lines.pop(), Some("all cpus up"), "console: {}", run.console);
    lines.sort();
    assert_eq!(lines, vec!["cpu 0 apic 0", "cpu 1 apic 1"]);
}

/// Records writes; reads return the last byte written plus one.
#[derive(Default)]
struct Probe {
    writes: Vec<(u64, Vec<u8>)>,
}

impl BusDevice for Probe {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let last = self.writes.last().map_or(0, |(_, d)| d[0]);
        data[0] = last.wrapping_add(1);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, data.to_vec()));
    }
}

#[test]
fn pio_mmio_and_ioeventfd_routing() {
    let mut b = VmBuilder::new(guest::config("devices", 1, "")).unwrap();
    let pio = Arc::new(Mutex::new(Probe::default()));
    b.add_pio_device(pio.clone(), 0x510, 1).unwrap();
    let mmio = Arc::new(Mutex::new(Probe::default()));
    let q0 = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let q1 = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let slot = b
        .add_mmio_device(
            mmio.clone(),
            vec![(q0.try_clone().unwrap(), 0), (q1.try_clone().unwrap(), 1)],
            irq.try_clone().unwrap(),
        )
        .unwrap();
    assert_eq!(
        slot,
        vmm::MmioSlot {
            base: 0xc000_1000,
            irq: 5
        }
    );
    assert!(b.cmdline().contains("virtio_mmio.device=4K@0xc0001000:5"));
    let run = vm_run::run(b, Duration::from_secs(30)).unwrap();
    assert_eq!(run.reason, ExitReason::Reboot, "console: {}", run.console);
    // PIO: 'P' written, 'Q' read back. MMIO: 0x4d written at +8 ('M'), 'N' read back at +4.
    assert_eq!(run.console, "QN\ndone\n");
    assert_eq!(pio.lock().unwrap().writes, vec![(0, vec![b'P'])]);
    assert_eq!(mmio.lock().unwrap().writes, vec![(8, vec![0x4d; 4])]);
    // QueueNotify writes went to the ioeventfds (by queue index), not to the device.
    assert_eq!(q0.read().unwrap(), 1);
    assert_eq!(q1.read().unwrap(), 1);
}

#[test]
fn pause_parks_vcpus_and_resume_continues() {
    let b = VmBuilder::new(guest::config("counter", 1, "")).unwrap();
    let mut vm = b.build().unwrap();
    let ctl = vm.vcpu_control();
    let stop = vm.stop_handle().unwrap();
    let mem = vm.guest_memory().clone();
    let t = std::thread::spawn(move || vm.run().unwrap());
    let read = || mem.read_obj::<u64>(GuestAddress(0x5000)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while read() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "guest never started counting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ctl.pause(Duration::from_secs(5)).unwrap();
    let a = read();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(read(), a, "counter moved while paused");
    ctl.resume();
    std::thread::sleep(Duration::from_millis(200));
    assert!(read() > a, "counter did not move after resume");
    stop.stop();
    assert_eq!(t.join().unwrap(), ExitReason::Stopped);
}

#[test]
fn memory_above_the_mmio_gap() {
    // 4.5 GiB: RAM below 3 GiB and 1.5 GiB above 4 GiB (two KVM memory slots); the MMIO gap
    // in between still reaches the boot marker.
    let mut c = guest::config("hello", 1, "");
    c.mem_mib = 4608;
    let run = vm_run::run(VmBuilder::new(c).unwrap(), Duration::from_secs(30)).unwrap();
    assert_eq!(run.reason, ExitReason::Reboot, "console: {}", run.console);
    assert!(run.boot_time.is_some());
}

#[test]
fn caller_driven_event_loop() {
    // start + poll, as a caller that owns the loop (e.g. an API server) would drive it.
    let mut vm = VmBuilder::new(guest::config("hello", 1, ""))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(vm.exit_reason(), None);
    vm.start().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reason = loop {
        if let Some(r) = vm.poll(100).unwrap() {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "guest did not end");
    };
    assert_eq!(reason, ExitReason::Reboot);
    vm.shutdown();
    assert_eq!(vm.console().contents(), "hello from ring 3\n");
}
