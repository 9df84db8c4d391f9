//! vCPUs: per-boot configuration, and the thread that runs `KVM_RUN` and dispatches PIO/MMIO
//! exits to the device buses.
//!
//! Kicks: [`VcpuControl`] sends a real-time signal to a vCPU thread; the handler sets the
//! thread's `kvm_run.immediate_exit`, so `KVM_RUN` returns `EINTR` whether the signal lands
//! inside the ioctl or just before it. On every kick the thread records whether the vCPU is
//! halted with interrupts off (see [`RunState`]), samples RIP when asked, and parks while the
//! VM is paused.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use devices::bus::Bus;
use kvm_bindings::{
    kvm_mp_state, kvm_run, CpuId, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::regs::{boot_fpu, boot_regs, set_boot_sregs, set_lint, EntryMode};
use crate::arch::x86_64::{cpuid, msr};
use crate::error::{Error, Result};
use crate::symbols::SymbolMap;

const RFLAGS_IF: u64 = 1 << 9;

/// What a vCPU was doing when last kicked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    /// Running, or halted with interrupts enabled (idle).
    Running = 0,
    /// Halted with RFLAGS.IF clear: stopped for good unless an NMI or INIT arrives.
    HaltedIfClear = 1,
    /// An application processor that was never started (waiting for INIT/SIPI).
    WaitingSipi = 2,
}

impl RunState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => RunState::HaltedIfClear,
            2 => RunState::WaitingSipi,
            _ => RunState::Running,
        }
    }
}

/// Why a vCPU stopped running the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuStop {
    /// KVM_SYSTEM_EVENT reset.
    Reset,
    /// KVM_SYSTEM_EVENT shutdown.
    PowerOff,
    /// KVM_EXIT_SHUTDOWN: triple fault.
    TripleFault,
    /// KVM_EXIT_INTERNAL_ERROR with its sub-error code.
    InternalError(u32),
    /// KVM_EXIT_FAIL_ENTRY with the hardware reason.
    FailEntry(u64),
    /// Anything else that cannot continue.
    Failed(String),
}

/// A message from a vCPU thread to the VMM's event loop.
pub struct VcpuEvent {
    pub index: u8,
    pub stop: VcpuStop,
}

/// The PIO and MMIO buses vCPUs dispatch to.
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

struct Control {
    paused: bool,
    exit: bool,
    parked: usize,
    alive: usize,
    threads: Vec<Option<libc::pthread_t>>,
}

struct Shared {
    ctl: Mutex<Control>,
    cond: Condvar,
    states: Vec<AtomicU8>,
    sample_seq: AtomicU64,
    exits: super::exits::ExitCounters,
}

/// Controls every vCPU thread of a VM: kick, pause, resume, stop. Cheap to clone.
#[derive(Clone)]
pub struct VcpuControl(Arc<Shared>);

impl VcpuControl {
    pub(crate) fn new(count: u8) -> Self {
        Self(Arc::new(Shared {
            ctl: Mutex::new(Control {
                paused: false,
                exit: false,
                parked: 0,
                alive: 0,
                threads: vec![None; usize::from(count)],
            }),
            cond: Condvar::new(),
            states: (0..count).map(|_| AtomicU8::new(0)).collect(),
            sample_seq: AtomicU64::new(0),
            exits: Default::default(),
        }))
    }

    /// vCPU exits by kind, summed over all vCPUs.
    pub fn exits(&self) -> super::exits::ExitSnapshot {
        self.0.exits.snapshot()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.0.ctl.lock().expect("vcpu control lock poisoned")
    }

    /// Interrupts every running vCPU once (they re-enter the guest after their checks).
    pub fn kick_all(&self) {
        let ctl = self.lock();
        for t in ctl.threads.iter().flatten() {
            // SAFETY: `t` is a live thread: a vCPU thread clears its entry under this lock
            // before it exits, and is joined only after that.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
    }

    /// Parks every vCPU outside the guest; returns once all are parked (or after `timeout`,
    /// with an error).
    pub fn pause(&self, timeout: Duration) -> std::result::Result<(), String> {
        let deadline = Instant::now() + timeout;
        self.lock().paused = true;
        loop {
            self.kick_all();
            let ctl = self.lock();
            let (ctl, _) = self
                .0
                .cond
                .wait_timeout(ctl, Duration::from_millis(10))
                .expect("vcpu control lock poisoned");
            if ctl.parked >= ctl.alive {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {} vCPUs did not pause in time",
                    ctl.alive - ctl.parked,
                    ctl.alive
                ));
            }
        }
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) {
        self.lock().paused = false;
        self.0.cond.notify_all();
    }

    /// Whether the vCPUs are paused (or being paused).
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Tells every vCPU thread to leave its loop, and kicks them out of the guest.
    pub fn request_exit(&self) {
        self.lock().exit = true;
        self.0.cond.notify_all();
        self.kick_all();
    }

    /// The last observed state of each vCPU.
    pub fn states(&self) -> Vec<RunState> {
        self.0
            .states
            .iter()
            .map(|s| RunState::from_u8(s.load(Ordering::Acquire)))
            .collect()
    }

    /// Asks each vCPU to log its RIP at its next kick.
    pub fn request_sample(&self) {
        self.0.sample_seq.fetch_add(1, Ordering::AcqRel);
    }

    fn set_state(&self, index: u8, s: RunState) {
        self.0.states[usize::from(index)].store(s as u8, Ordering::Release);
    }

    /// Parks while paused; false once exit was requested.
    fn wait_while_paused(&self) -> bool {
        let mut ctl = self.lock();
        if ctl.paused && !ctl.exit {
            ctl.parked += 1;
            self.0.cond.notify_all();
            while ctl.paused && !ctl.exit {
                ctl = self.0.cond.wait(ctl).expect("vcpu control lock poisoned");
            }
            ctl.parked -= 1;
        }
        !ctl.exit
    }

    /// Parks until exit is requested (after a fatal stop).
    fn wait_for_exit(&self) {
        let mut ctl = self.lock();
        ctl.parked += 1;
        self.0.cond.notify_all();
        while !ctl.exit {
            ctl = self.0.cond.wait(ctl).expect("vcpu control lock poisoned");
        }
        ctl.parked -= 1;
    }

    fn register_thread(&self, index: u8) {
        let mut ctl = self.lock();
        // SAFETY: pthread_self has no preconditions.
        ctl.threads[usize::from(index)] = Some(unsafe { libc::pthread_self() });
        ctl.alive += 1;
    }

    fn unregister_thread(&self, index: u8) {
        let mut ctl = self.lock();
        ctl.threads[usize::from(index)] = None;
        ctl.alive -= 1;
        self.0.cond.notify_all();
    }
}

thread_local! {
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let ptr = KVM_RUN_PTR.with(|p| p.get());
    if !ptr.is_null() {
        // SAFETY: the pointer is this thread's mapped kvm_run, set for the life of the vCPU
        // loop; the handler runs on that same thread, so nothing else writes it concurrently.
        unsafe { std::ptr::addr_of_mut!((*ptr).immediate_exit).write_volatile(1) };
    }
}

fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler).map_err(
            |e| Error::Io {
                what: "installing the vCPU kick signal handler",
                source: e.into(),
            },
        );
    });
    res
}

/// Where a vCPU starts.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub mode: EntryMode,
    pub addr: u64,
}

/// One configured vCPU, ready to be started on its own thread.
pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
}

impl Vcpu {
    /// Creates vCPU `index` of `count` and sets CPUID, MSRs, FPU and LAPIC; with `entry`, also
    /// the registers (and makes an AP runnable instead of waiting for a SIPI).
    pub fn new(
        vm: &super::vm::Vm,
        index: u8,
        count: u8,
        base_cpuid: &CpuId,
        entry: Option<Entry>,
    ) -> Result<Self> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
        let mut c = base_cpuid.clone();
        cpuid::patch(&mut c, index, count);
        fd.set_cpuid2(&c).map_err(Error::kvm("KVM_SET_CPUID2"))?;
        let msrs = msr::boot_msrs();
        let n = fd.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))?;
        if n != msrs.as_slice().len() {
            tracing::warn!(
                "vcpu {index}: KVM accepted only {n} of {} boot MSRs",
                msrs.as_slice().len()
            );
        }
        fd.set_fpu(&boot_fpu()).map_err(Error::kvm("KVM_SET_FPU"))?;
        let mut lapic = fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
        set_lint(&mut lapic);
        fd.set_lapic(&lapic).map_err(Error::kvm("KVM_SET_LAPIC"))?;
        if let Some(e) = entry {
            if index > 0 {
                fd.set_mp_state(kvm_mp_state {
                    mp_state: KVM_MP_STATE_RUNNABLE,
                })
                .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
            }
            fd.set_regs(&boot_regs(e.mode, e.addr, index))
                .map_err(Error::kvm("KVM_SET_REGS"))?;
            let mut sregs = fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
            set_boot_sregs(&mut sregs, e.mode);
            fd.set_sregs(&sregs).map_err(Error::kvm("KVM_SET_SREGS"))?;
            tracing::debug!(
                "vcpu {index}: mp_state {:?} rip {:#x}",
                fd.get_mp_state().map(|m| m.mp_state),
                fd.get_regs().map(|r| r.rip).unwrap_or(0)
            );
        }
        Ok(Self { fd, index })
    }

    /// Starts the vCPU thread. `events` + `notify` report stops to the VMM.
    pub fn start(
        self,
        ctl: VcpuControl,
        buses: Arc<Buses>,
        events: Sender<VcpuEvent>,
        notify: EventFd,
        sample: bool,
        symbols: Option<Arc<SymbolMap>>,
    ) -> Result<std::thread::JoinHandle<()>> {
        install_kick_handler()?;
        let name = format!("vcpu{}", self.index);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let index = self.index;
                ctl.register_thread(index);
                let mut runner = Runner {
                    fd: self.fd,
                    index,
                    ctl: ctl.clone(),
                    buses,
                    sample,
                    sampled: 0,
                    symbols,
                };
                if let Some(stop) = runner.run() {
                    let _ = events.send(VcpuEvent { index, stop });
                    let _ = notify.write(1);
                    ctl.wait_for_exit();
                }
                KVM_RUN_PTR.with(|p| p.set(std::ptr::null_mut()));
                ctl.unregister_thread(index);
            })
            .map_err(Error::io("spawning a vCPU thread"))
    }
}

enum Outcome {
    Continue,
    Kicked,
    Hlt,
    Stop(VcpuStop),
}

struct Runner {
    fd: VcpuFd,
    index: u8,
    ctl: VcpuControl,
    buses: Arc<Buses>,
    sample: bool,
    sampled: u64,
    symbols: Option<Arc<SymbolMap>>,
}

impl Runner {
    /// Runs until exit is requested (None) or the guest stops (Some).
    fn run(&mut self) -> Option<VcpuStop> {
        KVM_RUN_PTR.with(|p| p.set(self.fd.get_kvm_run() as *mut kvm_run));
        loop {
            if !self.ctl.wait_while_paused() {
                return None;
            }
            match self.run_once() {
                Outcome::Continue => self.ctl.set_state(self.index, RunState::Running),
                Outcome::Kicked => {
                    self.fd.set_kvm_immediate_exit(0);
                    self.on_kick();
                }
                Outcome::Hlt => {
                    // Only without an in-kernel LAPIC does HLT exit here.
                    let if_clear = self
                        .fd
                        .get_regs()
                        .map(|r| r.rflags & RFLAGS_IF == 0)
                        .unwrap_or(false);
                    if if_clear {
                        self.ctl.set_state(self.index, RunState::HaltedIfClear);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Outcome::Stop(stop) => return Some(stop),
            }
        }
    }

    fn run_once(&mut self) -> Outcome {
        let buses = &self.buses;
        let exit = self.fd.run();
        self.ctl.0.exits.count(&exit);
        match exit {
            Ok(VcpuExit::IoIn(port, data)) => {
                data.fill(0);
                buses.pio.read(u64::from(port), data);
                Outcome::Continue
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                buses.pio.write(u64::from(port), data);
                Outcome::Continue
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0);
                if !buses.mmio.read(addr, data) {
                    tracing::debug!("vcpu {}: unhandled MMIO read at {addr:#x}", self.index);
                }
                Outcome::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !buses.mmio.write(addr, data) {
                    tracing::debug!("vcpu {}: unhandled MMIO write at {addr:#x}", self.index);
                }
                Outcome::Continue
            }
            Ok(VcpuExit::Hlt) => Outcome::Hlt,
            Ok(VcpuExit::Shutdown) => Outcome::Stop(VcpuStop::TripleFault),
            Ok(VcpuExit::FailEntry(reason, _)) => Outcome::Stop(VcpuStop::FailEntry(reason)),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active
                // union member.
                let sub = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                Outcome::Stop(VcpuStop::InternalError(sub))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Outcome::Stop(VcpuStop::Reset),
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Outcome::Stop(VcpuStop::PowerOff),
                other => Outcome::Stop(VcpuStop::Failed(format!("system event {other}"))),
            },
            Ok(VcpuExit::Intr) => Outcome::Kicked,
            Ok(other) => Outcome::Stop(VcpuStop::Failed(format!("unexpected exit {other:?}"))),
            Err(e) if e.errno() == libc::EINTR => Outcome::Kicked,
            Err(e) if e.errno() == libc::EAGAIN => Outcome::Continue,
            Err(e) => Outcome::Stop(VcpuStop::Failed(format!("KVM_RUN: {e}"))),
        }
    }

    fn on_kick(&mut self) {
        let mp = self
            .fd
            .get_mp_state()
            .map(|m| m.mp_state)
            .unwrap_or(KVM_MP_STATE_RUNNABLE);
        let regs = self.fd.get_regs().ok();
        let state = match mp {
            KVM_MP_STATE_HALTED if regs.is_some_and(|r| r.rflags & RFLAGS_IF == 0) => {
                RunState::HaltedIfClear
            }
            KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED => RunState::WaitingSipi,
            _ => RunState::Running,
        };
        self.ctl.set_state(self.index, state);
        let seq = self.ctl.0.sample_seq.load(Ordering::Acquire);
        if self.sample && seq != self.sampled {
            self.sampled = seq;
            if let Some(r) = regs {
                let line = format!(
                    "vcpu {} sample: rip={:#x}{} rsp={:#x} rflags={:#x} rax={:#x} mp_state={mp} ({state:?})",
                    self.index,
                    r.rip,
                    self.symbols
                        .as_ref()
                        .and_then(|m| m.describe(r.rip))
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default(),
                    r.rsp,
                    r.rflags,
                    r.rax
                );
                eprintln!("{line}");
            }
        }
    }
}
