//! docker habits beyond a foreground run, the same at every level: `run -d`, `ps` (with the
//! ISOLATION column), `logs [-f]`, `stop`, `rm [-f]`, and `-t`/`-it` terminals.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmctl_tests::vmctl_bin;

use super::{processes_mentioning, text, Level};

/// A unique name for this test run (parallel-safe).
pub fn unique_name(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("t-{what}-{}-{n}", std::process::id())
}

/// `vmctl ARGS` to completion.
pub fn vmctl(args: &[&str]) -> Output {
    Command::new(vmctl_bin::path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmctl")
}

/// Removes the named workload (whatever state it is in) when dropped.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = vmctl(&["rm", "-f", &self.0]);
    }
}

/// `vmctl run -d --isolation L --network none --name NAME [flags] -- cmd`; returns the printed
/// id and how long `run -d` took.
pub fn detach(l: Level, name: &str, flags: &[&str], cmd: &[&str]) -> (String, Duration) {
    let start = Instant::now();
    let out = Command::new(vmctl_bin::path())
        .args(["run", "-d", "--isolation", l.flag(), "--network", "none"])
        .args(["--name", name])
        .args(flags)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run vmctl");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "run -d failed: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_string();
    assert!(
        id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "run -d printed {id:?}"
    );
    (id, took)
}

/// The `vmctl ps [-a]` line of `name`.
pub fn ps_line(all: bool, name: &str) -> Option<String> {
    let out = vmctl(if all { &["ps", "-a"] } else { &["ps"] });
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .map(str::to_string)
}

/// The record directory of a VM-backed run (None for containers).
fn record_dir(l: Level, id: &str) -> Option<PathBuf> {
    (l != Level::Container).then(|| PathBuf::from("/run/vmctl/vms").join(id))
}

/// Asserts the VM of `dir` left no VMM process and no socket.
fn assert_no_vm_leftovers(dir: &std::path::Path) {
    let procs = processes_mentioning(&dir.display().to_string());
    assert!(
        procs.is_empty(),
        "VMM of {} still runs: {procs:?}",
        dir.display()
    );
    for sock in ["agent.sock", "vsock.sock"] {
        assert!(!dir.join(sock).exists(), "{sock} left in {}", dir.display());
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `run -d` returns promptly with the id; `ps` lists it (its isolation, "Up"); `logs -f ID`
/// follows its output and ends when it does; `stop` delivers SIGTERM to the workload and
/// tears the VM down; `ps -a` shows "Exited (7)"; `rm` removes it without leftovers.
pub fn detach_logs_stop_rm(l: Level) {
    let name = unique_name("life");
    let _c = Cleanup(name.clone());
    let script = "trap 'echo got-term; exit 7' TERM; echo started; while true; do sleep 0.1; done";
    let (id, took) = detach(l, &name, &[], &["sh", "-c", script]);
    assert!(took < Duration::from_secs(20), "run -d took {took:?}");
    let line = ps_line(false, &name).expect("ps lists the detached run");
    assert!(line.contains(l.flag()) && line.contains("Up "), "{line}");
    assert!(line.starts_with(&id[..12]), "{line}");
    // logs -f by id: follows until the workload ends.
    let mut follow = Command::new(vmctl_bin::path())
        .args(["logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let console = vmctl_tests::console::Console::capture(follow.stdout.take().unwrap());
    assert!(
        console.wait_for("started\n", l.limit()),
        "logs -f never showed 'started'"
    );
    // Guest ring 0 is slow on nested-PVM hosts: the trap may take long to run there.
    let grace = if l == Level::Microvm { "300" } else { "20" };
    let stop = vmctl(&["stop", "-t", grace, &name]);
    assert!(stop.status.success(), "stop: {}", text(&stop.stderr));
    assert_eq!(text(&stop.stdout).trim(), name);
    assert!(
        wait_until(Duration::from_secs(20), || follow
            .try_wait()
            .unwrap()
            .is_some()),
        "logs -f did not end with the workload"
    );
    assert_eq!(console.finish(), "started\ngot-term\n");
    assert_eq!(text(&vmctl(&["logs", &name]).stdout), "started\ngot-term\n");
    assert!(
        ps_line(false, &name).is_none(),
        "ps (without -a) lists a stopped run"
    );
    let line = ps_line(true, &name).expect("ps -a lists the stopped run");
    assert!(line.contains("Exited (7)"), "{line}");
    if let Some(dir) = record_dir(l, &id) {
        assert_no_vm_leftovers(&dir);
    }
    let rm = vmctl(&["rm", &id[..12]]);
    assert!(rm.status.success(), "rm: {}", text(&rm.stderr));
    assert!(ps_line(true, &name).is_none(), "rm left it in ps -a");
    if let Some(dir) = record_dir(l, &id) {
        assert!(!dir.exists(), "rm left {}", dir.display());
    }
    let again = vmctl(&["logs", &name]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains(&name),
        "{}",
        text(&again.stderr)
    );
}

/// `rm` refuses a running workload; `rm -f` kills and removes it, leaving nothing.
pub fn rm_force_of_a_running_one(l: Level) {
    let name = unique_name("rmf");
    let _c = Cleanup(name.clone());
    let (id, _) = detach(l, &name, &[], &["sh", "-c", "echo up; sleep 1000"]);
    if l != Level::Container {
        // Refusal is immediate even while the guest boots.
        let rm = vmctl(&["rm", &name]);
        assert!(!rm.status.success());
        assert!(text(&rm.stderr).contains("rm -f"), "{}", text(&rm.stderr));
    }
    assert!(
        wait_until(l.limit(), || text(&vmctl(&["logs", &name]).stdout)
            == "up\n"),
        "no output"
    );
    let rm = vmctl(&["rm", &name]);
    assert!(!rm.status.success(), "rm removed a running workload");
    assert!(text(&rm.stderr).contains("rm -f"), "{}", text(&rm.stderr));
    let start = Instant::now();
    let rm = vmctl(&["rm", "-f", &name]);
    assert!(rm.status.success(), "rm -f: {}", text(&rm.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert!(ps_line(true, &name).is_none());
    if let Some(dir) = record_dir(l, &id) {
        assert!(!dir.exists(), "rm -f left {}", dir.display());
        assert_no_vm_leftovers(&dir);
    }
}

/// A supervisor killed with SIGKILL leaves a record: `ps -a` shows it dead, `rm` cleans it
/// (VM levels).
pub fn killed_supervisor_is_dead_and_removable(l: Level) {
    let name = unique_name("dead");
    let _c = Cleanup(name.clone());
    let (id, _) = detach(l, &name, &[], &["sh", "-c", "echo up; sleep 1000"]);
    let dir = record_dir(l, &id).expect("a VM level");
    assert!(
        wait_until(l.limit(), || text(&vmctl(&["logs", &name]).stdout)
            == "up\n"),
        "no output"
    );
    let state = std::fs::read_to_string(dir.join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    let pid = v["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) with integers; the pid is the supervisor of our own run.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(10), || ps_line(true, &name)
            .is_some_and(|l| l.contains("Dead"))),
        "ps -a: {:?}",
        ps_line(true, &name)
    );
    assert!(
        ps_line(false, &name).is_none(),
        "ps lists a dead run as running"
    );
    let rm = vmctl(&["rm", &name]);
    assert!(rm.status.success(), "rm: {}", text(&rm.stderr));
    assert!(!dir.exists(), "rm left {}", dir.display());
    assert_no_vm_leftovers(&dir);
}

/// Unknown names and ambiguous id prefixes are clear errors; a name is unique across
/// containers and VMs. (Resolution is one code path for every level: `other` is a second,
/// cheap level whose workloads make an id prefix ambiguous.)
pub fn unknown_and_ambiguous_names(l: Level) {
    let out = vmctl(&["stop", "no-such-thing-anywhere"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no-such-thing-anywhere") && err.contains("ps -a"),
        "{err}"
    );
    let name = unique_name("uniq");
    let _c = Cleanup(name.clone());
    let (first, _) = detach(l, &name, &[], &["true"]);
    for other in [Level::Container, Level::Hosted] {
        let out = Command::new(vmctl_bin::path())
            .args([
                "run",
                "-d",
                "--isolation",
                other.flag(),
                "--network",
                "none",
            ])
            .args(["--name", &name, "--", "true"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "a second {name} was created");
        assert!(
            text(&out.stderr).contains("in use"),
            "{}",
            text(&out.stderr)
        );
    }
    // Containers until two ids share their first digit (at most 17, pigeonhole).
    let mut seen: Vec<(String, Cleanup)> = vec![(first.clone(), Cleanup(String::new()))];
    let prefix = loop {
        let n = unique_name("amb");
        let (id, _) = detach(Level::Container, &n, &[], &["true"]);
        let clash = seen.iter().any(|(s, _)| s[..1] == id[..1]);
        seen.push((id.clone(), Cleanup(n)));
        if clash {
            break id[..1].to_string();
        }
        assert!(seen.len() <= 17);
    };
    let out = vmctl(&["logs", &prefix]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("ambiguous") && err.contains(&prefix), "{err}");
    // A longer prefix still finds the one.
    let out = vmctl(&["logs", &first[..12]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `-t` without a terminal on our side: the workload still has a pty (as with docker), and
/// its output has the pty's \r\n.
pub fn tty_without_a_host_terminal(l: Level) {
    let out = super::run(
        l,
        &["-t"],
        &[
            "sh",
            "-c",
            "tty; [ -t 0 ] && echo in-tty; [ -t 1 ] && echo out-tty; echo err >&2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    let lines: Vec<&str> = o.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{o:?}");
    assert_eq!(&lines[1..], ["in-tty", "out-tty", "err", ""], "{o:?}");
}

/// `-it` under a terminal: the window size reaches the workload, typed input (in raw mode:
/// our \r) reaches it through its pty, and our terminal is restored afterwards.
pub fn interactive_tty_under_a_pty(l: Level) {
    let ws = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).unwrap();
    let slave_fd = pty.slave.as_raw_fd();
    let mut cmd = super::command(
        l,
        &["-i", "-t"],
        &[
            "sh",
            "-c",
            "stty size; echo ready; read x; echo got:$x; stty size",
        ],
    );
    let dup = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
    cmd.stdin(dup(&pty.slave))
        .stdout(dup(&pty.slave))
        .stderr(dup(&pty.slave));
    // SAFETY: setsid and TIOCSCTTY (async-signal-safe) between fork and exec: the pty becomes
    // vmctl's controlling terminal.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            libc::setsid();
            libc::ioctl(slave_fd, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = reader.read(&mut b) {
            if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_for = |needle: &str, seen: &mut Vec<u8>| {
        let end = Instant::now() + l.limit();
        while !text(seen).contains(needle) {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => seen.extend(b),
                Err(_) => panic!("no {needle:?} in {:?}", text(seen)),
            }
        }
    };
    wait_for("ready\r\n", &mut seen);
    assert!(text(&seen).contains("33 101\r\n"), "{:?}", text(&seen));
    // A new size: the kernel sends vmctl (the terminal's foreground) SIGWINCH.
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives across the call, on our pty master.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0);
    std::thread::sleep(Duration::from_secs(1));
    master.write_all(b"hello\r").unwrap();
    wait_for("got:hello\r\n40 120\r\n", &mut seen);
    let end = Instant::now() + l.limit();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "vmctl -it did not end");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{:?}", text(&seen));
}
