//! Process helpers for measurements: timed commands with their peak RSS, waiting for a pid
//! that is not our child, memory from /proc/PID/smaps, console line watchers.

use std::io::{BufRead, BufReader, Read, Seek};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Makes this process the reaper of orphaned descendants (container processes whose runtime
/// exited re-parent to us, so their exit can be waited for exactly).
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            "PR_SET_CHILD_SUBREAPER failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Reaps exited orphans without blocking (call only while no Command child is outstanding).
pub fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on any child, non-blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// A finished command: wall time, peak RSS, success, stderr tail.
pub struct Timed {
    pub elapsed: Duration,
    pub max_rss_kib: u64,
    pub ok: bool,
    pub stderr: String,
}

/// Runs `cmd` with stdin and stdout on /dev/null and stderr in a temporary file (a pipe would
/// be held open by a container process the command leaves behind), timing it with wait4.
pub fn run_timed(cmd: &mut Command) -> anyhow::Result<Timed> {
    let mut errfile = tempfile::tempfile().context("temporary file for stderr")?;
    let prog = format!("{:?}", cmd.get_program());
    let t0 = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errfile.try_clone()?)
        .spawn()
        .with_context(|| format!("starting {prog}"))?;
    let (status, rusage) = wait4(child.id() as i32)?;
    let elapsed = t0.elapsed();
    let mut stderr = String::new();
    errfile.rewind()?;
    errfile.read_to_string(&mut stderr)?;
    Ok(Timed {
        elapsed,
        max_rss_kib: rusage.ru_maxrss as u64,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stderr: stderr.trim().to_string(),
    })
}

fn wait4(pid: i32) -> anyhow::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; the out-pointers are valid for the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == pid {
            return Ok((status, ru));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("wait4({pid}): {err}");
        }
    }
}

/// Waits until `pid` has exited: waitpid when it is our child (or re-parented orphan), else
/// polling /proc every millisecond.
pub fn wait_pid_exit(pid: i32, timeout: Duration) -> anyhow::Result<()> {
    let mut status = 0;
    // SAFETY: plain waitpid; fails with ECHILD when pid is not our child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    if rc == pid {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() > deadline {
            bail!("process {pid} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Parent pid and command name of `pid`.
pub fn ppid_comm(pid: i32) -> Option<(i32, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = s.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some((ppid, comm))
}

/// All descendants of `root` (not `root` itself), with their command names.
pub fn descendants(root: i32) -> Vec<(i32, String)> {
    let mut all = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
                if let Some((ppid, comm)) = ppid_comm(pid) {
                    all.push((pid, ppid, comm));
                }
            }
        }
    }
    let mut out: Vec<(i32, String)> = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, comm) in &all {
            if *ppid == p && !out.iter().any(|(q, _)| q == pid) {
                out.push((*pid, comm.clone()));
                frontier.push(*pid);
            }
        }
    }
    out
}

/// How much larger than the guest RAM size its mapping may be (alignment, guard pages).
const GUEST_SLACK_KIB: u64 = 8 * 1024;

/// RSS and PSS of a process, KiB, and the resident part of its largest private anonymous
/// mapping of `guest_min_kib` (or slightly more) (the guest RAM of a VMM), if any.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcMem {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub guest_rss_kib: Option<u64>,
    pub guest_pss_kib: Option<u64>,
}

pub fn proc_mem(pid: i32, guest_min_kib: Option<u64>) -> anyhow::Result<ProcMem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    Ok(parse_smaps(&text, guest_min_kib))
}

fn parse_smaps(text: &str, guest_min_kib: Option<u64>) -> ProcMem {
    let mut m = ProcMem::default();
    // (size, rss, pss) of the current mapping, and whether it is anonymous.
    let mut cur: Option<(u64, u64, u64, bool)> = None;
    let mut best: Option<(u64, u64, u64)> = None;
    let close = |cur: Option<(u64, u64, u64, bool)>, best: &mut Option<(u64, u64, u64)>| {
        if let (Some((size, rss, pss, true)), Some(min)) = (cur, guest_min_kib) {
            // The guest RAM mapping is the guest size, give or take alignment padding; a
            // bigger one (QEMU's TCG code buffer) is something else.
            let fits = size >= min && size <= min + GUEST_SLACK_KIB;
            if fits && best.is_none_or(|b| size < b.0) {
                *best = Some((size, rss, pss));
            }
        }
    };
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let first = it.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            close(cur.take(), &mut best);
            // "start-end perms offset dev inode [path]"
            let fields: Vec<&str> = line.split_whitespace().collect();
            let anon = fields.len() < 6;
            cur = Some((0, 0, 0, anon));
            continue;
        }
        let val = || {
            it.clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if let Some(c) = cur.as_mut() {
            match first {
                "Size:" => c.0 = val(),
                "Rss:" => {
                    c.1 = val();
                    m.rss_kib += c.1;
                }
                "Pss:" => {
                    c.2 = val();
                    m.pss_kib += c.2;
                }
                _ => {}
            }
        }
    }
    close(cur, &mut best);
    if let Some((_, rss, pss)) = best {
        m.guest_rss_kib = Some(rss);
        m.guest_pss_kib = Some(pss);
    }
    m
}

/// Which stream a console line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A line of a child's output and when it arrived; None marks the end of a stream.
pub type LineEvent = (Instant, Stream, Option<String>);

/// Reads the child's stdout and stderr (both must be piped) line by line on two threads.
pub fn watch_lines(child: &mut Child) -> mpsc::Receiver<LineEvent> {
    let (tx, rx) = mpsc::channel();
    let readers: [(Stream, Option<Box<dyn Read + Send>>); 2] = [
        (
            Stream::Stdout,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            Stream::Stderr,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    for (stream, reader) in readers {
        let Some(reader) = reader else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if tx.send((Instant::now(), stream, Some(line))).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send((Instant::now(), stream, None));
        });
    }
    rx
}

/// Kills (SIGKILL) and reaps a child; errors are ignored (it may be gone already).
pub fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_guest_mapping_is_the_big_anonymous_one() {
        let text = "\
55d0-55e0 r-xp 00000000 08:01 123 /usr/bin/qemu
Size:                 64 kB
Rss:                  60 kB
Pss:                  30 kB
7e00-7e10 rwxp 00000000 00:00 0
Size:            1048576 kB
Rss:                 500 kB
Pss:                 500 kB
7f00-7f10 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:               20000 kB
Pss:               20000 kB
7f20-7f30 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                1000 kB
Pss:                1000 kB
";
        let m = parse_smaps(text, Some(256 * 1024));
        assert_eq!(m.rss_kib, 21560);
        assert_eq!(m.pss_kib, 21530);
        assert_eq!(m.guest_rss_kib, Some(20000));
        assert_eq!(parse_smaps(text, None).guest_rss_kib, None);
    }

    #[test]
    fn timed_command_and_own_memory() {
        let t = run_timed(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap();
        assert!(!t.ok);
        assert_eq!(t.stderr, "oops");
        assert!(t.max_rss_kib > 0);
        let me = proc_mem(std::process::id() as i32, None).unwrap();
        assert!(me.rss_kib > 0 && me.pss_kib > 0);
    }
}
