//! The console of a guest run through the `vmctl` binary: its stdout collected on a thread,
//! searchable while the guest runs.

use std::io::Read;
use std::process::ChildStdout;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Everything a child printed so far.
pub struct Console {
    text: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Console {
    /// Starts collecting `stdout` until it closes.
    pub fn capture(mut stdout: ChildStdout) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = String::from_utf8_lossy(&buf[..n]);
                sink.lock().unwrap().push_str(&chunk);
            }
        });
        Self { text, reader }
    }

    /// Waits until the output contains `needle`; false after `limit`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.text.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Waits for the child's stdout to close and returns all it printed.
    pub fn finish(self) -> String {
        self.reader.join().expect("console reader panicked");
        Arc::try_unwrap(self.text)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|a| a.lock().unwrap().clone())
    }
}
