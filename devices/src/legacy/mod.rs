//! Legacy PC devices: the COM1 8250 UART, the i8042 controller (CPU reset only) and the
//! boot-time marker.

mod boot_timer;
mod i8042;
mod serial;

pub use boot_timer::{BootTime, BootTimer, BOOT_MARKER_VALUE};
pub use i8042::I8042;
pub use serial::{ConsoleOutput, Serial};

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// A [`Trigger`] that writes 1 to an [`EventFd`] (an irqfd, or an exit event).
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
