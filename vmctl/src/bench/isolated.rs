//! The container-in-VM probe: `vmctl run --isolation microvm|hosted --rm -- echo MARK`, timed
//! from process start to MARK on stdout, and split into phases from what the run leaves outside
//! the guest, without hooks in vmctl itself:
//!
//! - the VMM (or QEMU) process start: the VM record's `vmm_pid` (`state.json` in a
//!   bench-private `VMCTL_VM_ROOT`) and that process' start time from `/proc/PID/stat`
//!   (clock ticks since boot, 10 ms resolution);
//! - the guest boot marker: the VMM's `guest boot time: X ms since VMM process start, Y ms
//!   since VM start` line, in the record's `console.log` (the VMM's stderr goes there) or on
//!   the run's stderr; vmctl's VMM only (QEMU has no marker device);
//! - the agent's hello: vmctl's `guest agent ready` log line (info level, asked for with
//!   `VMCTL_LOG`), on the run's stderr.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::proc::{self, Stream};

/// The line the isolated workload prints.
const WORKLOAD_MARK: &str = "vmctl-bench-workload";
/// The VMM's boot marker line (devices::legacy::boot_timer).
const BOOT_LINE: &str = "guest boot time: ";
/// vmctl's log line once the agent said hello (microvm.rs and hosted.rs).
const HELLO_LINE: &str = "guest agent ready";
/// Logs vmctl asks for: its own info lines (the hello), the rest as by default.
const LOG_FILTER: &str = "warn,api::controller=error,vmctl=info";
/// How long a run may take to end after the workload's output.
const FINISH_WAIT: Duration = Duration::from_secs(30);
/// How often the console file and the record are looked at.
const POLL: Duration = Duration::from_millis(10);

/// Which run: the isolation level and, for hosted, the accelerator (`VMCTL_ACCEL`).
#[derive(Clone, Debug)]
pub struct Probe {
    pub isolation: &'static str,
    pub accel: Option<&'static str>,
}

impl Probe {
    /// The subject's name in the report.
    pub fn subject(&self) -> String {
        match self.accel {
            Some(a) => format!("vmctl --isolation {} ({a})", self.isolation),
            None => format!("vmctl --isolation {}", self.isolation),
        }
    }
}

/// One run's times, all since the `vmctl run` process started.
#[derive(Clone, Debug, Default)]
pub struct Isolated {
    /// The workload's output arrived.
    pub workload: Duration,
    /// The VMM (QEMU) process started.
    pub vmm_start: Option<Duration>,
    /// The boot marker line arrived.
    pub marker: Option<Duration>,
    /// The marker line's own numbers: ms since VMM process start, ms since VM start.
    pub marker_ms: Option<(f64, f64)>,
    /// The agent's hello was logged.
    pub hello: Option<Duration>,
}

/// The phases, as (metric, ms) in report order; those that were not seen are left out.
pub fn phases(r: &Isolated) -> Vec<(&'static str, f64)> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let diff = |a: Duration, b: Duration| ms(a.saturating_sub(b));
    let mut v = vec![("to-workload-output", ms(r.workload))];
    if let Some(s) = r.vmm_start {
        v.push(("prepare", ms(s)));
    }
    if let Some((proc_ms, vm_ms)) = r.marker_ms {
        v.push(("vmm-setup", proc_ms - vm_ms));
        v.push(("kernel-to-marker", vm_ms));
    }
    if let Some(m) = r.marker {
        v.push(("boot-to-marker", ms(m)));
    }
    if let (Some(h), Some(m)) = (r.hello, r.marker) {
        v.push(("marker-to-agent", diff(h, m)));
    }
    if let (Some(h), Some(s)) = (r.hello, r.vmm_start) {
        v.push(("vmm-to-agent", diff(h, s)));
    }
    if let Some(h) = r.hello {
        v.push(("agent-to-workload", diff(r.workload, h)));
    }
    v
}

/// Every metric [`phases`] can give, in report order.
pub const METRICS: &[&str] = &[
    "to-workload-output",
    "prepare",
    "vmm-setup",
    "kernel-to-marker",
    "boot-to-marker",
    "marker-to-agent",
    "vmm-to-agent",
    "agent-to-workload",
];

/// Parses "guest boot time: X ms since VMM process start, Y ms since VM start".
pub fn parse_boot_line(line: &str) -> Option<(f64, f64)> {
    let rest = line.split_once(BOOT_LINE)?.1;
    let mut nums = rest
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok());
    Some((nums.next()?, nums.next()?))
}

/// Clock ticks since boot now (the clock of /proc/PID/stat's start time).
fn boottime_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// A process' start time in ms since boot, from /proc/PID/stat (field 22, clock ticks).
fn proc_start_ms(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: count fields after its closing parenthesis.
    let after = stat.rsplit_once(')')?.1;
    let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks * 1000.0 / hz)
}

/// Follows the run's VM record in `root`: its VMM pid and the new lines of its console.
struct RecordWatch {
    root: PathBuf,
    dir: Option<PathBuf>,
    console_pos: u64,
    partial: String,
    vmm_pid_seen: bool,
}

impl RecordWatch {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            dir: None,
            console_pos: 0,
            partial: String::new(),
            vmm_pid_seen: false,
        }
    }

    /// The VMM pid once the record names one other than `supervisor`.
    fn vmm_pid(&mut self, supervisor: i32) -> Option<i32> {
        if self.vmm_pid_seen {
            return None;
        }
        let dir = self.dir()?;
        let text = std::fs::read(dir.join("state.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let pid = v.get("vmm_pid")?.as_i64()? as i32;
        if pid <= 0 || pid == supervisor {
            return None;
        }
        self.vmm_pid_seen = true;
        Some(pid)
    }

    fn dir(&mut self) -> Option<PathBuf> {
        if self.dir.is_none() {
            self.dir = std::fs::read_dir(&self.root)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.is_dir());
        }
        self.dir.clone()
    }

    /// Complete console lines written since the last call.
    fn console_lines(&mut self) -> Vec<String> {
        let Some(dir) = self.dir() else {
            return Vec::new();
        };
        let Ok(mut f) = std::fs::File::open(dir.join("console.log")) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.console_pos)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.console_pos += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_string).collect();
        self.partial = lines.pop().unwrap_or_default();
        lines
    }
}

/// Runs `vmctl run --isolation ISO --rm -- echo MARK` once, until MARK appears on stdout.
pub fn run_once(
    vmctl: &Path,
    image_root: &Path,
    probe: &Probe,
    timeout: Duration,
) -> anyhow::Result<Isolated> {
    // Short: the record's vsock socket path (root + 64-hex id + /vsock.sock) must fit a
    // sockaddr_un (107 bytes).
    let vm_root = tempfile::Builder::new()
        .prefix("vmb")
        .tempdir_in("/tmp")
        .context("temporary VMCTL_VM_ROOT")?;
    let mut cmd = Command::new(vmctl);
    cmd.env("VMCTL_IMAGE_ROOT", image_root)
        .env("VMCTL_VM_ROOT", vm_root.path())
        .env("VMCTL_LOG", LOG_FILTER)
        .args(["run", "--isolation", probe.isolation, "--rm"])
        .args(["--network", "none", "--", "echo", WORKLOAD_MARK])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(a) = probe.accel {
        cmd.env("VMCTL_ACCEL", a);
    }
    let t0_boot = boottime_ms();
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting vmctl run --isolation")?;
    let rx = proc::watch_lines(&mut child);
    let mut watch = RecordWatch::new(vm_root.path());
    let deadline = t0 + timeout;
    let mut r = Isolated::default();
    let mut open = 2;
    let mut last_err = String::new();
    let on_line = |r: &mut Isolated, at: Duration, l: &str| {
        if let Some(n) = parse_boot_line(l) {
            if r.marker.is_none() {
                r.marker = Some(at);
                r.marker_ms = Some(n);
            }
        }
    };
    let result = loop {
        if let Some(pid) = watch.vmm_pid(child.id() as i32) {
            r.vmm_start = proc_start_ms(pid)
                .map(|s| Duration::from_secs_f64(((s - t0_boot) / 1000.0).max(0.0)));
        }
        for l in watch.console_lines() {
            on_line(&mut r, t0.elapsed(), &l);
        }
        if Instant::now() >= deadline {
            break Err("timed out");
        }
        match rx.recv_timeout(POLL) {
            Ok((at, Stream::Stdout, Some(l))) if l.trim() == WORKLOAD_MARK => {
                r.workload = at.duration_since(t0);
                break Ok(());
            }
            Ok((at, Stream::Stderr, Some(l))) => {
                let at = at.duration_since(t0);
                on_line(&mut r, at, &l);
                if l.contains(HELLO_LINE) && r.hello.is_none() {
                    r.hello = Some(at);
                } else if !l.contains(" INFO ") {
                    last_err = l;
                }
            }
            Ok((_, _, Some(_))) => {}
            Ok((_, _, None)) => {
                open -= 1;
                if open == 0 {
                    break Err("exited");
                }
            }
            Err(_) => {}
        }
    };
    finish(&mut child);
    match result {
        Ok(()) => Ok(r),
        Err(why) => bail!(
            "vmctl run --isolation {} {why} without workload output: {}",
            probe.isolation,
            if last_err.is_empty() {
                "(no message)"
            } else {
                &last_err
            }
        ),
    }
}

/// Lets the run clean up after itself (the guest powers off, `--rm` removes the record):
/// waits up to [`FINISH_WAIT`], then SIGTERM (vmctl stops the VM), then SIGKILL.
fn finish(child: &mut std::process::Child) {
    let wait = |child: &mut std::process::Child, d: Duration| {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    if wait(child, FINISH_WAIT) {
        return;
    }
    // SAFETY: kill with our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if !wait(child, Duration::from_secs(10)) {
        proc::kill_child(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_line() {
        let l = "guest boot time: 31234 ms since VMM process start, 31200 ms since VM start";
        assert_eq!(parse_boot_line(l), Some((31234.0, 31200.0)));
        assert_eq!(parse_boot_line("hello"), None);
    }

    #[test]
    fn phases_from_times() {
        let s = Duration::from_millis;
        let r = Isolated {
            workload: s(10_000),
            vmm_start: Some(s(100)),
            marker: Some(s(8_000)),
            marker_ms: Some((7_900.0, 7_850.0)),
            hello: Some(s(9_000)),
        };
        let p = phases(&r);
        let get = |m: &str| p.iter().find(|(k, _)| *k == m).map(|(_, v)| *v);
        assert_eq!(get("prepare"), Some(100.0));
        assert_eq!(get("vmm-setup"), Some(50.0));
        assert_eq!(get("kernel-to-marker"), Some(7_850.0));
        assert_eq!(get("marker-to-agent"), Some(1_000.0));
        assert_eq!(get("vmm-to-agent"), Some(8_900.0));
        assert_eq!(get("agent-to-workload"), Some(1_000.0));
        // Without a marker (QEMU): no marker phases.
        let q = phases(&Isolated {
            marker: None,
            marker_ms: None,
            ..r
        });
        assert!(q.iter().all(|(k, _)| !k.contains("marker")));
        assert!(p.iter().all(|(k, _)| METRICS.contains(k)));
    }

    #[test]
    fn own_start_time_is_recent() {
        let now = boottime_ms();
        let start = proc_start_ms(std::process::id() as i32).expect("own /proc stat");
        assert!(
            start <= now + 20.0 && start > 0.0,
            "start {start} now {now}"
        );
    }
}
