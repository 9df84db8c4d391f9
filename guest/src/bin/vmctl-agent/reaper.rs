//! Zombie reaping for PID 1: one thread waits for every child; processes the agent started
//! are registered (under the same lock the reaper takes before deciding) so their exit
//! status is kept for whoever waits on them; everything else (orphans) is just reaped.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

#[derive(Default)]
struct Table {
    /// Registered pid -> exit code once it exited.
    watched: HashMap<i32, Option<i32>>,
}

struct Reaper {
    table: Mutex<Table>,
    cond: Condvar,
}

fn reaper() -> &'static Reaper {
    static R: OnceLock<Reaper> = OnceLock::new();
    R.get_or_init(|| Reaper {
        table: Mutex::new(Table::default()),
        cond: Condvar::new(),
    })
}

/// Starts the reaping thread.
pub fn start() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(reap_loop)
        .map(|_| ())
}

fn reap_loop() {
    loop {
        let (pid, code) = match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, c)) => (p.as_raw(), c),
            Ok(WaitStatus::Signaled(p, s, _)) => (p.as_raw(), 128 + s as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => continue,
        };
        let r = reaper();
        let mut t = r.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = t.watched.get_mut(&pid) {
            *slot = Some(code);
            r.cond.notify_all();
        }
    }
}

/// Holds the table while a child is spawned, so its exit cannot be decided on before it is
/// registered.
pub struct SpawnGuard(MutexGuard<'static, Table>);

pub fn lock() -> SpawnGuard {
    SpawnGuard(reaper().table.lock().unwrap_or_else(|e| e.into_inner()))
}

impl SpawnGuard {
    /// Keeps `pid`'s exit status for [`wait`].
    pub fn watch(&mut self, pid: i32) {
        self.0.watched.insert(pid, None);
    }
}

/// Waits for a watched pid's exit code (and forgets it).
pub fn wait(pid: i32) -> i32 {
    let r = reaper();
    let mut t = r.table.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match t.watched.get(&pid) {
            Some(Some(code)) => {
                let code = *code;
                t.watched.remove(&pid);
                return code;
            }
            Some(None) => t = r.cond.wait(t).unwrap_or_else(|e| e.into_inner()),
            None => return -1,
        }
    }
}
