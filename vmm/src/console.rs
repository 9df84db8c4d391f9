//! Guest console input: bytes from the VMM's stdin go to the UART's receive FIFO as the guest
//! drains it.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use devices::legacy::Serial;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

const STDIN: i32 = libc::STDIN_FILENO;
/// Stop reading stdin while this much input waits for the guest.
const MAX_PENDING: usize = 64 * 1024;

/// Whether stdin can be polled (a terminal, pipe or socket; not a regular file).
pub fn stdin_pollable() -> bool {
    // SAFETY: fstat writes into a zeroed, properly sized stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: STDIN is a plain fd number and `st` is valid for writes.
    if unsafe { libc::fstat(STDIN, &mut st) } != 0 {
        return false;
    }
    matches!(
        st.st_mode & libc::S_IFMT,
        libc::S_IFCHR | libc::S_IFIFO | libc::S_IFSOCK
    )
}

pub(crate) struct StdinInput {
    serial: Arc<Mutex<Serial>>,
    input_ready: EventFd,
    pending: VecDeque<u8>,
    reading: bool,
    eof: bool,
}

impl StdinInput {
    pub fn new(serial: Arc<Mutex<Serial>>, input_ready: EventFd) -> Self {
        Self {
            serial,
            input_ready,
            pending: VecDeque::new(),
            reading: true,
            eof: false,
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = self.pending.iter().copied().collect();
        let n = self
            .serial
            .lock()
            .expect("serial lock poisoned")
            .enqueue_input(&bytes);
        self.pending.drain(..n);
    }

    fn read_stdin(&mut self, ops: &mut EventOps) {
        let mut buf = [0u8; 256];
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(STDIN, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                return;
            }
            self.eof = true;
            self.stop_reading(ops);
            return;
        }
        self.pending.extend(&buf[..n as usize]);
        self.flush();
        if self.pending.len() > MAX_PENDING {
            self.stop_reading(ops);
        }
    }

    fn stop_reading(&mut self, ops: &mut EventOps) {
        if self.reading {
            let _ = ops.remove(Events::new_raw(STDIN, EventSet::IN));
            self.reading = false;
        }
    }
}

impl MutEventSubscriber for StdinInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.input_ready.as_raw_fd() {
            let _ = self.input_ready.read();
            self.flush();
            if !self.reading && !self.eof && self.pending.len() <= MAX_PENDING / 2 {
                self.reading = ops.add(Events::new_raw(STDIN, EventSet::IN)).is_ok();
            }
        } else if events.fd() == STDIN {
            if events.event_set().intersects(EventSet::IN) {
                self.read_stdin(ops);
            } else {
                self.eof = true;
                self.stop_reading(ops);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.input_ready, EventSet::IN)) {
            tracing::warn!("console input disabled: {e}");
        }
        if let Err(e) = ops.add(Events::new_raw(STDIN, EventSet::IN)) {
            tracing::debug!("console input from stdin disabled: {e}");
            self.reading = false;
        }
    }
}
