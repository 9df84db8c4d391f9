//! A built VM: starts the vCPU threads, runs the event loop until the guest ends, tears down.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use devices::bus::Bus;
use devices::legacy::{BootTime, BootTimer, ConsoleOutput};
use event_manager::EventManager;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::BOOT_TIMER_ADDR;
use crate::error::{Error, Result};
use crate::exit::{ExitReason, ExitSlot};
use crate::vstate::vcpu::{Buses, Vcpu, VcpuControl, VcpuEvent};
use crate::vstate::vm::Vm;
use crate::Subscriber;

pub(crate) struct Parts {
    pub vm: Vm,
    pub mem: GuestMemoryMmap,
    pub vcpus: Vec<Vcpu>,
    pub control: VcpuControl,
    pub pio: Bus,
    pub mmio: Bus,
    pub em: EventManager<Subscriber>,
    pub exit: ExitSlot,
    pub vcpu_tx: Sender<VcpuEvent>,
    pub vcpu_evt: EventFd,
    pub signal_evt: EventFd,
    pub stop_evt: EventFd,
    pub console: ConsoleOutput,
    pub process_start: Instant,
    pub sample: bool,
    pub symbols: Option<Arc<crate::symbols::SymbolMap>>,
}

/// A VM ready to run. [`Vmm::run`] blocks until the guest reboots, powers off, fails, or the
/// process gets SIGINT/SIGTERM.
pub struct Vmm {
    p: Parts,
    boot_timer: BootTimer,
    started: bool,
    threads: Vec<JoinHandle<()>>,
    signals: Option<crate::signals::SignalGuard>,
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Vmm {
    pub(crate) fn new(p: Parts) -> Self {
        let boot_timer = BootTimer::new(p.process_start);
        Self {
            p,
            boot_timer,
            started: false,
            threads: Vec::new(),
            signals: None,
        }
    }

    /// A handle that ends [`Vmm::run`] from another thread ([`ExitReason::Stopped`]).
    pub fn stop_handle(&self) -> Result<StopHandle> {
        let evt = self
            .p
            .stop_evt
            .try_clone()
            .map_err(Error::io("eventfd clone"))?;
        Ok(StopHandle { evt })
    }

    /// Adds an event-loop subscriber (also possible before [`Vmm::run`] only, as `run` holds
    /// the loop).
    pub fn add_subscriber(&mut self, subscriber: Subscriber) -> event_manager::SubscriberId {
        use event_manager::SubscriberOps;
        self.p.em.add_subscriber(subscriber)
    }

    /// Pause/resume handle for the vCPUs.
    pub fn vcpu_control(&self) -> VcpuControl {
        self.p.control.clone()
    }

    /// The console output (kept copy).
    pub fn console(&self) -> ConsoleOutput {
        self.p.console.clone()
    }

    /// The boot-time marker; [`BootTimer::boot_time`] is set once the guest wrote it.
    pub fn boot_timer(&self) -> BootTimer {
        self.boot_timer.clone()
    }

    /// The boot time the guest reported, if it did.
    pub fn boot_time(&self) -> Option<BootTime> {
        self.boot_timer.boot_time()
    }

    /// Guest memory.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.p.mem
    }

    /// Runs the VM to its end: [`Vmm::start`], [`Vmm::poll`] until the guest ends,
    /// [`Vmm::shutdown`].
    pub fn run(&mut self) -> Result<ExitReason> {
        let result = self.start().and_then(|()| loop {
            if let Some(reason) = self.poll(500)? {
                break Ok(reason);
            }
        });
        self.shutdown();
        result
    }

    /// Starts the vCPU threads (once; later calls do nothing). For callers that drive the
    /// event loop themselves with [`Vmm::poll`].
    pub fn start(&mut self) -> Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        self.signals = Some(
            crate::signals::register(&self.p.signal_evt)
                .map_err(Error::io("installing SIGINT/SIGTERM handlers"))?,
        );
        self.boot_timer.reset_vm_start();
        let mut mmio = self.p.mmio.clone();
        mmio.insert(
            Arc::new(Mutex::new(self.boot_timer.clone())),
            BOOT_TIMER_ADDR,
            0x1000,
        )
        .map_err(|e| Error::Device(e.to_string()))?;
        let buses = Arc::new(Buses {
            pio: self.p.pio.clone(),
            mmio,
        });
        for vcpu in self.p.vcpus.drain(..) {
            let notify = self
                .p
                .vcpu_evt
                .try_clone()
                .map_err(Error::io("eventfd clone"))?;
            let t = vcpu.start(
                self.p.control.clone(),
                buses.clone(),
                self.p.vcpu_tx.clone(),
                notify,
                self.p.sample,
                self.p.symbols.clone(),
            )?;
            self.threads.push(t);
        }
        Ok(())
    }

    /// Dispatches the event loop once (waiting at most `timeout_ms`, -1 for ever); returns
    /// why the VM ended once it has.
    pub fn poll(&mut self, timeout_ms: i32) -> Result<Option<ExitReason>> {
        if let Some(reason) = self.exit_reason() {
            return Ok(Some(reason));
        }
        match self.p.em.run_with_timeout(timeout_ms) {
            Ok(_) => {}
            Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EINTR => {}
            Err(e) => return Err(Error::EventLoop(e.to_string())),
        }
        Ok(self.exit_reason())
    }

    /// Why the VM ended, once it has.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.p.exit.lock().expect("exit slot poisoned").clone()
    }

    /// Stops and joins the vCPU threads (also done on drop).
    pub fn shutdown(&mut self) {
        self.p.control.request_exit();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a vCPU thread panicked");
            }
        }
        self.signals = None;
    }

    /// The KVM VM (for device set-up that needs it after build).
    pub fn vm_fd(&self) -> &kvm_ioctls::VmFd {
        self.p.vm.fd()
    }
}

/// Ends a running VM from any thread.
pub struct StopHandle {
    evt: EventFd,
}

impl StopHandle {
    /// Asks the VMM's event loop to stop the VM.
    pub fn stop(&self) {
        if let Err(e) = self.evt.write(1) {
            tracing::error!("cannot signal the VM to stop: {e}");
        }
    }
}
