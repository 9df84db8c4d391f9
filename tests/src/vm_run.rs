//! Runs a VM in this process with a time limit and returns how it ended and what it printed.

use std::time::{Duration, Instant};

use vmm::{BootTime, ExitReason, VmBuilder};

/// The result of [`run`].
#[derive(Debug)]
pub struct GuestRun {
    pub reason: ExitReason,
    pub console: String,
    pub boot_time: Option<BootTime>,
    pub wall: Duration,
}

/// Builds and runs the VM; stops it after `limit` (the reason is then `ExitReason::Stopped`).
pub fn run(builder: VmBuilder, limit: Duration) -> anyhow::Result<GuestRun> {
    let start = Instant::now();
    let mut vm = builder.build()?;
    let stop = vm.stop_handle()?;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            stop.stop();
        }
    });
    let reason = vm.run();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    Ok(GuestRun {
        reason: reason?,
        console: vm.console().contents(),
        boot_time: vm.boot_time(),
        wall: start.elapsed(),
    })
}

/// Runs test guest `name` (see [`crate::guest::config`]) with a 30 s limit.
pub fn run_guest(name: &str, vcpus: u8, cmdline: &str) -> anyhow::Result<GuestRun> {
    let builder = VmBuilder::new(crate::guest::config(name, vcpus, cmdline))?;
    run(builder, Duration::from_secs(30))
}
