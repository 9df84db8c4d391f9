//! Why a VM ended, and the event-loop subscriber that decides it: i8042 reset, vCPU stops,
//! SIGINT/SIGTERM, and the periodic tick that kicks vCPUs to detect a guest that halted every
//! CPU with interrupts off (Linux `poweroff -f` without ACPI) and to sample RIPs.

use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::legacy::ConsoleOutput;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::vstate::vcpu::{RunState, VcpuControl, VcpuEvent, VcpuStop};

/// How the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine (i8042 0xfe, `reboot=k`): a normal end.
    Reboot,
    /// Every vCPU halted with interrupts off (or KVM reported a shutdown system event): the
    /// guest powered off.
    PowerOff,
    /// A vCPU triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault { vcpu: u8 },
    /// KVM could not run a vCPU (KVM_EXIT_INTERNAL_ERROR, e.g. emulation failure).
    InternalError { vcpu: u8, suberror: u32 },
    /// KVM_EXIT_FAIL_ENTRY.
    FailEntry { vcpu: u8, reason: u64 },
    /// Any other vCPU failure.
    VcpuFailed { vcpu: u8, message: String },
    /// The VMM got SIGINT or SIGTERM.
    Signal(i32),
    /// The host stopped the VM ([`crate::StopHandle::stop`]).
    Stopped,
    /// The guest kernel panicked (its console showed "Kernel panic - not syncing") and then
    /// rebooted or halted.
    GuestPanic { line: String },
}

impl ExitReason {
    /// A clean guest-initiated end (reboot or power-off).
    pub fn is_success(&self) -> bool {
        matches!(self, ExitReason::Reboot | ExitReason::PowerOff)
    }

    /// Process exit status: 0 for reboot/power-off/host stop, 128+N for a signal, 1 for a
    /// failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::Reboot | ExitReason::PowerOff | ExitReason::Stopped => 0,
            ExitReason::Signal(n) => 128 + n,
            _ => 1,
        }
    }

    fn from_stop(ev: VcpuEvent) -> Self {
        let vcpu = ev.index;
        match ev.stop {
            VcpuStop::Reset => ExitReason::Reboot,
            VcpuStop::PowerOff => ExitReason::PowerOff,
            VcpuStop::TripleFault => ExitReason::TripleFault { vcpu },
            VcpuStop::InternalError(suberror) => ExitReason::InternalError { vcpu, suberror },
            VcpuStop::FailEntry(reason) => ExitReason::FailEntry { vcpu, reason },
            VcpuStop::Failed(message) => ExitReason::VcpuFailed { vcpu, message },
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Reboot => write!(f, "guest rebooted"),
            ExitReason::PowerOff => write!(f, "guest powered off (all vCPUs halted)"),
            ExitReason::TripleFault { vcpu } => {
                write!(f, "vCPU {vcpu} triple-faulted (KVM_EXIT_SHUTDOWN)")
            }
            ExitReason::InternalError { vcpu, suberror } => {
                write!(f, "KVM internal error on vCPU {vcpu} (suberror {suberror})")
            }
            ExitReason::FailEntry { vcpu, reason } => {
                write!(
                    f,
                    "KVM could not enter vCPU {vcpu} (hardware reason {reason:#x})"
                )
            }
            ExitReason::VcpuFailed { vcpu, message } => write!(f, "vCPU {vcpu} failed: {message}"),
            ExitReason::Signal(n) => write!(f, "stopped by signal {n}"),
            ExitReason::Stopped => write!(f, "stopped by the host"),
            ExitReason::GuestPanic { line } => write!(f, "guest kernel panicked: {line}"),
        }
    }
}

/// How often vCPUs are kicked to check for a halted guest. Each kick is an exit of every vCPU,
/// so it is kept rare: a powered-off guest is noticed within about two ticks.
pub const TICK: Duration = Duration::from_millis(500);
/// RIP samples are taken every this many ticks (once a second).
const SAMPLE_EVERY: u64 = 2;
/// Consecutive all-halted ticks before the VM counts as powered off.
const HALTED_TICKS: u32 = 2;

/// Shared slot the event loop checks after every dispatch.
pub type ExitSlot = Arc<Mutex<Option<ExitReason>>>;

pub(crate) struct Supervisor {
    pub reset_evt: EventFd,
    pub vcpu_evt: EventFd,
    pub vcpu_events: Receiver<VcpuEvent>,
    pub signal_evt: EventFd,
    pub stop_evt: EventFd,
    pub tick: TimerFd,
    pub vcpus: VcpuControl,
    pub sample: bool,
    pub exit: ExitSlot,
    pub console: ConsoleOutput,
    pub ticks: u64,
    pub halted_ticks: u32,
}

impl Supervisor {
    fn finish(&self, reason: ExitReason) {
        let reason = match (reason, self.console.panic_line()) {
            (ExitReason::Reboot | ExitReason::PowerOff, Some(line)) => {
                ExitReason::GuestPanic { line }
            }
            (r, _) => r,
        };
        let mut slot = self.exit.lock().expect("exit slot poisoned");
        if slot.is_none() {
            tracing::info!("VM exit: {reason}");
            *slot = Some(reason);
        }
    }

    fn on_tick(&mut self) {
        let _ = self.tick.wait();
        self.ticks += 1;
        if self.vcpus.is_paused() {
            self.halted_ticks = 0;
            return;
        }
        let states = self.vcpus.states();
        let all_stopped = states.iter().all(|s| *s != RunState::Running);
        let any_halted = states.contains(&RunState::HaltedIfClear);
        if all_stopped && any_halted {
            self.halted_ticks += 1;
            if self.halted_ticks >= HALTED_TICKS {
                self.finish(ExitReason::PowerOff);
                return;
            }
        } else {
            self.halted_ticks = 0;
        }
        if self.sample && self.ticks % SAMPLE_EVERY == 0 {
            self.vcpus.request_sample();
        }
        self.vcpus.kick_all();
    }
}

impl MutEventSubscriber for Supervisor {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            self.finish(ExitReason::Reboot);
        } else if fd == self.vcpu_evt.as_raw_fd() {
            let _ = self.vcpu_evt.read();
            while let Ok(ev) = self.vcpu_events.try_recv() {
                self.finish(ExitReason::from_stop(ev));
            }
        } else if fd == self.signal_evt.as_raw_fd() {
            let _ = self.signal_evt.read();
            self.finish(ExitReason::Signal(crate::signals::last_signal()));
        } else if fd == self.stop_evt.as_raw_fd() {
            let _ = self.stop_evt.read();
            self.finish(ExitReason::Stopped);
        } else if fd == self.tick.as_raw_fd() {
            self.on_tick();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [
            self.reset_evt.as_raw_fd(),
            self.vcpu_evt.as_raw_fd(),
            self.signal_evt.as_raw_fd(),
            self.stop_evt.as_raw_fd(),
            self.tick.as_raw_fd(),
        ] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                tracing::error!("cannot watch fd {fd}: {e}");
            }
        }
    }
}
