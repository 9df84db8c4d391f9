//! The COM1 8250 UART (vm-superio's model) on the PIO bus, interrupting through an EventFd
//! (an irqfd on IRQ 4). Output goes to a [`ConsoleOutput`]: an optional sink (stdout) plus a
//! bounded in-memory copy that tests and error reports read.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use vm_superio::serial::SerialEvents;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// How much console output is kept in memory.
const KEEP_BYTES: usize = 1 << 20;
/// What Linux prints when it panics.
const PANIC_MARKER: &str = "Kernel panic - not syncing";

#[derive(Default)]
struct Kept {
    bytes: VecDeque<u8>,
    line: Vec<u8>,
    panic_line: Option<String>,
}

/// Where the guest console goes: an optional sink and a bounded in-memory copy. It also notes
/// the first Linux panic line, so a VM that reboots after `panic=N` counts as failed.
#[derive(Clone)]
pub struct ConsoleOutput {
    sink: Option<Arc<Mutex<dyn Write + Send>>>,
    kept: Arc<Mutex<Kept>>,
}

impl ConsoleOutput {
    /// Console output copied to `sink` (e.g. stdout) when given.
    pub fn new(sink: Option<Arc<Mutex<dyn Write + Send>>>) -> Self {
        Self {
            sink,
            kept: Arc::default(),
        }
    }

    /// The first "Kernel panic - not syncing" line the guest printed, if any.
    pub fn panic_line(&self) -> Option<String> {
        self.kept
            .lock()
            .expect("console lock poisoned")
            .panic_line
            .clone()
    }

    /// Everything kept so far (the last MiB), lossily decoded.
    pub fn contents(&self) -> String {
        let kept = self.kept.lock().expect("console lock poisoned");
        let (a, b) = kept.bytes.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// The last `n` lines of the kept output.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let text = self.contents();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        {
            let mut kept = self.kept.lock().expect("console lock poisoned");
            kept.bytes.extend(buf);
            let excess = kept.bytes.len().saturating_sub(KEEP_BYTES);
            kept.bytes.drain(..excess);
            for &b in buf {
                if b == b'\n' {
                    let line = String::from_utf8_lossy(&kept.line).into_owned();
                    if kept.panic_line.is_none() && line.contains(PANIC_MARKER) {
                        kept.panic_line = Some(line.trim_end().to_string());
                    }
                    kept.line.clear();
                } else if kept.line.len() < 4096 {
                    kept.line.push(b);
                }
            }
        }
        if let Some(sink) = &self.sink {
            let mut s = sink.lock().expect("console sink lock poisoned");
            // A closed stdout must not stop the guest: drop output we cannot write. Flush at
            // once so prompts without a newline show up.
            let _ = s.write_all(buf).and_then(|()| s.flush());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(sink) = &self.sink {
            let _ = sink.lock().expect("console sink lock poisoned").flush();
        }
        Ok(())
    }
}

/// Signals `input_ready` when the guest has drained the receive FIFO, so a backend holding
/// more input can push it.
struct InputEvents {
    input_ready: Option<EventFd>,
}

impl SerialEvents for InputEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Some(evt) = &self.input_ready {
            let _ = evt.write(1);
        }
    }
}

/// The UART, registered on the PIO bus at 0x3f8 with length 8.
pub struct Serial {
    inner: vm_superio::Serial<EventFdTrigger, InputEvents, ConsoleOutput>,
}

impl Serial {
    /// `irq` is written to raise the UART interrupt; `input_ready` (optional) is written when
    /// the receive FIFO becomes empty.
    pub fn new(irq: EventFd, out: ConsoleOutput, input_ready: Option<EventFd>) -> Self {
        let events = InputEvents { input_ready };
        Self {
            inner: vm_superio::Serial::with_events(EventFdTrigger::new(irq), events, out),
        }
    }

    /// Queues guest input; returns how many bytes fit in the receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.inner.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        match self.inner.enqueue_raw_bytes(&bytes[..room]) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("serial: input dropped: {e:?}");
                0
            }
        }
    }

    /// The console output this UART writes to.
    pub fn output(&self) -> &ConsoleOutput {
        self.inner.writer()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(b) = data.first_mut() {
            *b = self.inner.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            if let Err(e) = self.inner.write(offset as u8, b) {
                tracing::warn!("serial: write at offset {offset}: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_kept_and_input_raises_irq() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = ConsoleOutput::new(None);
        let mut s = Serial::new(irq.try_clone().unwrap(), out.clone(), None);
        for b in b"hi\nthere\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(out.contents(), "hi\nthere\n");
        assert_eq!(out.last_lines(1), vec!["there".to_string()]);
        assert_eq!(out.panic_line(), None);
        for b in b"[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(
            out.panic_line().as_deref(),
            Some("[ 1.0] Kernel panic - not syncing: Attempted to kill init!")
        );
        // Enable the "received data available" interrupt, then feed input.
        s.write(1, &[0x01]);
        assert_eq!(s.enqueue_input(b"x"), 1);
        assert_eq!(irq.read().unwrap(), 1);
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b[0], b'x');
    }
}
