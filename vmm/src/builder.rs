//! From a [`VmConfig`] to a ready [`Vmm`]: validation, KVM VM, memory, legacy devices, extra
//! MMIO devices and event subscribers, kernel loading, vCPUs.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use devices::bus::{Bus, BusDevice};
use devices::legacy::{ConsoleOutput, Serial, I8042};
use event_manager::{EventManager, SubscriberOps};
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::arch::x86_64::layout::{
    I8042_PORT, SERIAL_IRQ, SERIAL_PORT, VIRTIO_MMIO_BASE, VIRTIO_MMIO_IRQ_BASE, VIRTIO_MMIO_SIZE,
    VIRTIO_MMIO_SLOTS,
};
use crate::arch::x86_64::mptable;
use crate::console::{stdin_pollable, StdinInput};
use crate::error::{Error, Result};
use crate::exit::{Supervisor, TICK};
use crate::machine::Vmm;
use crate::vstate::vcpu::{Vcpu, VcpuControl};
use crate::vstate::{memory, vm::Vm};
use crate::{boot, Subscriber};

/// Offset of the virtio-mmio QueueNotify register, where ioeventfds are registered.
pub const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;

/// What to boot and with what.
#[derive(Clone)]
pub struct VmConfig {
    /// Kernel image: ELF vmlinux (PVH entry when it has the note, else 64-bit) or bzImage.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The complete guest command line (see [`crate::cmdline::compose`]); the builder appends
    /// `virtio_mmio.device=` entries for added devices.
    pub cmdline: String,
    pub vcpus: u8,
    pub mem_mib: u64,
    /// Where console output goes besides the in-memory copy (e.g. stdout).
    pub console: Option<Arc<Mutex<dyn Write + Send>>>,
    /// Feed the VMM's stdin to the UART (when it is a terminal, pipe or socket).
    pub stdin_input: bool,
    /// Start every vCPU at the kernel entry (64-bit boots: RBX = vCPU index) instead of leaving
    /// APs waiting for INIT/SIPI. For test guests; Linux starts its APs itself.
    pub start_all_vcpus_at_entry: bool,
    /// Log every vCPU's RIP once a second.
    pub sample_rip: bool,
    /// A `System.map` to name sampled RIPs with (default: `System.map` next to the kernel,
    /// if there is one).
    pub system_map: Option<PathBuf>,
    /// The reference for "since VMM process start" boot times.
    pub process_start: Instant,
}

impl VmConfig {
    /// 1 vCPU, 128 MiB, empty command line, console kept in memory only.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            vcpus: 1,
            mem_mib: 128,
            console: None,
            stdin_input: false,
            start_all_vcpus_at_entry: false,
            sample_rip: false,
            system_map: None,
            process_start: crate::process_start(),
        }
    }

    /// The checks [`VmBuilder::new`] makes before touching KVM: vCPU count, memory size,
    /// readable kernel and initrd, command line length. Errors name the vmctl flag.
    pub fn validate(&self) -> Result<()> {
        validate(self)
    }
}

/// Where an added MMIO device was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    pub base: u64,
    pub irq: u32,
}

/// Builds a VM step by step; see the crate docs for the order.
pub struct VmBuilder {
    config: VmConfig,
    vm: Vm,
    mem: GuestMemoryMmap,
    pio: Bus,
    mmio: Bus,
    cmdline_extra: Vec<String>,
    mmio_slots: u32,
    subscribers: Vec<Subscriber>,
    serial: Arc<Mutex<Serial>>,
    console: ConsoleOutput,
    reset_evt: EventFd,
    input_ready: EventFd,
    vcpus: VcpuControl,
}

fn new_evt(what: &'static str) -> Result<EventFd> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io(what))
}

fn validate(config: &VmConfig) -> Result<()> {
    if config.vcpus == 0 {
        return Err(Error::NoVcpus);
    }
    if config.vcpus > mptable::MAX_CPUS {
        return Err(Error::TooManyVcpus {
            requested: config.vcpus,
            max: usize::from(mptable::MAX_CPUS),
            why: "the MP table's space in the memory map",
        });
    }
    memory::validate_size(config.mem_mib)?;
    std::fs::File::open(&config.kernel).map_err(|source| Error::KernelRead {
        path: config.kernel.clone(),
        source,
    })?;
    if let Some(p) = &config.initrd {
        std::fs::File::open(p).map_err(|source| Error::InitrdRead {
            path: p.clone(),
            source,
        })?;
    }
    boot::check_cmdline(&config.cmdline)?;
    Ok(())
}

impl VmBuilder {
    /// Validates `config`, creates the KVM VM, guest memory and the legacy devices.
    pub fn new(config: VmConfig) -> Result<Self> {
        validate(&config)?;
        let vm = Vm::new()?;
        if usize::from(config.vcpus) > vm.max_vcpus() {
            return Err(Error::TooManyVcpus {
                requested: config.vcpus,
                max: vm.max_vcpus(),
                why: "KVM_CAP_MAX_VCPUS",
            });
        }
        let mem = memory::create(config.mem_mib)?;
        vm.register_memory(&mem)?;

        let mut pio = Bus::new();
        let serial_irq = new_evt("serial irq eventfd")?;
        vm.fd()
            .register_irqfd(&serial_irq, SERIAL_IRQ)
            .map_err(Error::kvm("KVM_IRQFD (serial)"))?;
        let input_ready = new_evt("serial input eventfd")?;
        let console = ConsoleOutput::new(config.console.clone());
        let serial_input = input_ready
            .try_clone()
            .map_err(Error::io("eventfd clone"))?;
        let serial = Arc::new(Mutex::new(Serial::new(
            serial_irq,
            console.clone(),
            Some(serial_input),
        )));
        pio.insert(serial.clone(), SERIAL_PORT, 8)
            .map_err(|e| Error::Device(e.to_string()))?;
        let reset_evt = new_evt("reset eventfd")?;
        let i8042 = I8042::new(reset_evt.try_clone().map_err(Error::io("eventfd clone"))?);
        pio.insert(Arc::new(Mutex::new(i8042)), I8042_PORT, 5)
            .map_err(|e| Error::Device(e.to_string()))?;

        let vcpus = VcpuControl::new(config.vcpus);
        Ok(Self {
            config,
            vm,
            mem,
            pio,
            mmio: Bus::new(),
            cmdline_extra: Vec::new(),
            mmio_slots: 0,
            subscribers: Vec::new(),
            serial,
            console,
            reset_evt,
            input_ready,
            vcpus,
        })
    }

    /// Guest memory, for device backends (virtio queues).
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The console output (kept copy) of the UART.
    pub fn console(&self) -> ConsoleOutput {
        self.console.clone()
    }

    /// Pause/resume handle for the vCPUs, usable before and after the VM starts.
    pub fn vcpu_control(&self) -> VcpuControl {
        self.vcpus.clone()
    }

    /// Attaches a virtio-mmio device in the next free slot: bus range `base..base+0x1000`,
    /// one ioeventfd per `(notify, queue_index)` at `base + 0x50` matching the 32-bit queue
    /// index, `irq` as the irqfd of the slot's IRQ line, and
    /// `virtio_mmio.device=4K@base:irq` on the command line.
    pub fn add_mmio_device(
        &mut self,
        dev: Arc<Mutex<dyn BusDevice>>,
        ioevents: Vec<(EventFd, u32)>,
        irq: EventFd,
    ) -> Result<MmioSlot> {
        let n = self.mmio_slots;
        if n >= VIRTIO_MMIO_SLOTS {
            return Err(Error::NoMmioSlot(VIRTIO_MMIO_SLOTS));
        }
        let slot = MmioSlot {
            base: VIRTIO_MMIO_BASE + u64::from(n) * VIRTIO_MMIO_SIZE,
            irq: VIRTIO_MMIO_IRQ_BASE + n,
        };
        self.mmio
            .insert(dev, slot.base, VIRTIO_MMIO_SIZE)
            .map_err(|e| Error::Device(e.to_string()))?;
        let notify = IoEventAddress::Mmio(slot.base + VIRTIO_MMIO_QUEUE_NOTIFY);
        for (evt, queue) in &ioevents {
            self.vm
                .fd()
                .register_ioevent(evt, &notify, *queue)
                .map_err(Error::kvm("KVM_IOEVENTFD"))?;
        }
        self.vm
            .fd()
            .register_irqfd(&irq, slot.irq)
            .map_err(Error::kvm("KVM_IRQFD"))?;
        self.cmdline_extra.push(format!(
            "virtio_mmio.device=4K@{:#x}:{}",
            slot.base, slot.irq
        ));
        self.mmio_slots += 1;
        Ok(slot)
    }

    /// Attaches a device on the PIO bus at `base..base+len`.
    pub fn add_pio_device(
        &mut self,
        dev: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<()> {
        self.pio
            .insert(dev, base, len)
            .map_err(|e| Error::Device(e.to_string()))
    }

    /// Adds a subscriber (e.g. a device backend's fds) to the VMM's event loop.
    pub fn add_subscriber(&mut self, subscriber: Subscriber) {
        self.subscribers.push(subscriber);
    }

    /// The command line the guest will get.
    pub fn cmdline(&self) -> String {
        let mut parts = vec![self.config.cmdline.trim().to_string()];
        parts.extend(self.cmdline_extra.iter().cloned());
        parts.retain(|p| !p.is_empty());
        parts.join(" ")
    }

    /// Loads the kernel, initrd and boot structures, creates the vCPUs and the event loop.
    pub fn build(self) -> Result<Vmm> {
        let cmdline = self.cmdline();
        let c = &self.config;
        let mem_size = c.mem_mib << 20;
        let loaded = boot::load_kernel(&self.mem, &c.kernel, mem_size)?;
        boot::setup(
            &self.mem,
            &loaded,
            c.initrd.as_deref(),
            &cmdline,
            mem_size,
            c.vcpus,
        )?;
        tracing::info!("guest command line: {cmdline}");

        let cpuid = self.vm.supported_cpuid()?;
        let mut vcpus = Vec::with_capacity(usize::from(c.vcpus));
        for i in 0..c.vcpus {
            let entry = (i == 0 || c.start_all_vcpus_at_entry).then_some(loaded.entry);
            vcpus.push(Vcpu::new(&self.vm, i, c.vcpus, &cpuid, entry)?);
        }

        let (tx, rx) = mpsc::channel();
        let vcpu_evt = new_evt("vcpu eventfd")?;
        let signal_evt = new_evt("signal eventfd")?;
        let mut tick = TimerFd::new().map_err(|e| Error::io("timerfd")(e.into()))?;
        tick.reset(TICK, Some(TICK))
            .map_err(|e| Error::io("timerfd")(e.into()))?;
        let exit = Arc::new(Mutex::new(None));
        let stop_evt = new_evt("stop eventfd")?;
        let clone = |e: &EventFd| e.try_clone().map_err(Error::io("eventfd clone"));
        let supervisor = Supervisor {
            reset_evt: self.reset_evt,
            vcpu_evt: clone(&vcpu_evt)?,
            vcpu_events: rx,
            signal_evt: clone(&signal_evt)?,
            stop_evt: clone(&stop_evt)?,
            tick,
            vcpus: self.vcpus.clone(),
            sample: c.sample_rip,
            exit: exit.clone(),
            console: self.console.clone(),
            ticks: 0,
            halted_ticks: 0,
        };
        let mut em: EventManager<Subscriber> =
            EventManager::new().map_err(|e| Error::EventLoop(e.to_string()))?;
        em.add_subscriber(Arc::new(Mutex::new(supervisor)));
        if c.stdin_input && stdin_pollable() {
            em.add_subscriber(Arc::new(Mutex::new(StdinInput::new(
                self.serial.clone(),
                self.input_ready,
            ))));
        }
        for s in self.subscribers {
            em.add_subscriber(s);
        }
        Ok(Vmm::new(crate::machine::Parts {
            vm: self.vm,
            mem: self.mem,
            vcpus,
            control: self.vcpus,
            pio: self.pio,
            mmio: self.mmio,
            em,
            exit,
            vcpu_tx: tx,
            vcpu_evt,
            signal_evt,
            stop_evt,
            console: self.console,
            process_start: c.process_start,
            sample: c.sample_rip,
            symbols: if c.sample_rip { load_symbols(c) } else { None },
        }))
    }
}

/// The System.map for RIP samples: the configured one, else one next to the kernel.
fn load_symbols(c: &VmConfig) -> Option<Arc<crate::symbols::SymbolMap>> {
    let path = c.system_map.clone().or_else(|| {
        let p = c.kernel.parent()?.join("System.map");
        p.exists().then_some(p)
    })?;
    match crate::symbols::SymbolMap::load(&path) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            tracing::warn!("cannot read {} for RIP samples: {e}", path.display());
            None
        }
    }
}
