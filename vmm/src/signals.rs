//! SIGINT/SIGTERM -> an EventFd per running VM, so the event loop tears the VM down cleanly.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use vmm_sys_util::eventfd::EventFd;

const SLOTS: usize = 16;
static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(num: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    LAST_SIGNAL.store(num, Ordering::SeqCst);
    for slot in &FDS {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            let one: u64 = 1;
            // SAFETY: write(2) is async-signal-safe; `one` is a valid 8-byte buffer and `fd` an
            // eventfd kept open while registered.
            unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), 8) };
        }
    }
}

/// The signal that fired last (0 if none).
pub fn last_signal() -> i32 {
    LAST_SIGNAL.load(Ordering::SeqCst)
}

/// Registration of one VM's eventfd; unregistered on drop.
pub struct SignalGuard {
    slot: usize,
}

/// Installs the handlers (once) and registers `evt` to be written on SIGINT/SIGTERM.
pub fn register(evt: &EventFd) -> std::io::Result<SignalGuard> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            if let Err(e) = vmm_sys_util::signal::register_signal_handler(sig, on_signal) {
                res = Err(std::io::Error::from(e));
            }
        }
    });
    res?;
    use std::os::fd::AsRawFd;
    for (slot, s) in FDS.iter().enumerate() {
        if s.compare_exchange(-1, evt.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Ok(SignalGuard { slot });
        }
    }
    Err(std::io::Error::other(
        "too many VMs in one process for signal handling",
    ))
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        FDS[self.slot].store(-1, Ordering::SeqCst);
    }
}
