//! The i8042 keyboard controller at 0x60/0x64, modelled only far enough for `reboot=k`: a write
//! of 0xfe to the command port (0x64) signals the reset event, which ends the VM.
//!
//! The status register always reads [`STATUS`]: output buffer full, input buffer empty. Linux's
//! i8042 driver then finds the output buffer never drains and reports "No controller found"
//! after 16 reads, instead of timing out on commands nobody answers (seconds of emulated
//! `udelay` on nested KVM); and the reset path's wait for an empty input buffer passes at once.

use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// Status register: OBF set, IBF clear.
pub const STATUS: u8 = 0x01;
const STATUS_OFFSET: u64 = 4;

/// Registered on the PIO bus at 0x60 with length 5 (ports 0x60..=0x64).
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// `reset_evt` is written when the guest asks for a CPU reset.
    pub fn new(reset_evt: EventFd) -> Self {
        Self {
            inner: I8042Device::new(EventFdTrigger::new(reset_evt)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(b) = data.first_mut() {
            *b = match offset {
                STATUS_OFFSET => STATUS,
                _ => self.inner.read(offset as u8),
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            if let Err(e) = self.inner.write(offset as u8, b) {
                tracing::error!("i8042: cannot signal the reset event: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals_event() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(evt.try_clone().unwrap());
        dev.write(4, &[0x01]);
        assert!(evt.read().is_err(), "only 0xfe resets");
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        let mut b = [0u8];
        dev.read(4, &mut b);
        assert_eq!(b[0] & 0x03, 0x01, "output buffer full, input buffer empty");
    }
}
