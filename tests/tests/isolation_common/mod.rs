//! One behaviour suite for every isolation level: `vmctl run --isolation LEVEL IMAGE -- CMD`
//! must behave the same (output, exit code, env, working dir, user, limits, --rm, signals).
//! `suite!(level, [tests...])` instantiates the listed cases for a level.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmctl_tests::vmctl_bin;

mod lifecycle;
#[allow(unused_imports)] // not every test file uses every case
pub use lifecycle::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Container,
    Microvm,
    Hosted,
}

impl Level {
    /// How long one run may take: microVM boots take minutes on nested-PVM hosts under load.
    pub fn limit(self) -> Duration {
        match self {
            Level::Microvm => Duration::from_secs(900),
            _ => Duration::from_secs(180),
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            Level::Container => "container",
            Level::Microvm => "microvm",
            Level::Hosted => "hosted",
        }
    }
}

/// `vmctl run --isolation LEVEL --rm --network none [flags] -- cmd` with the default image
/// (vmctl/busybox:latest, embedded).
pub fn command(level: Level, flags: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new(vmctl_bin::path());
    c.args([
        "run",
        "--isolation",
        level.flag(),
        "--rm",
        "--network",
        "none",
    ])
    .args(flags)
    .arg("--")
    .args(cmd);
    c
}

/// Runs to completion with `input` on stdin.
pub fn run_with(level: Level, flags: &[&str], cmd: &[&str], input: Option<&[u8]>) -> Output {
    let mut c = command(level, flags, cmd);
    c.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn vmctl");
    if let Some(data) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(data).unwrap();
    }
    wait_output(child, level.limit())
}

pub fn run(level: Level, flags: &[&str], cmd: &[&str]) -> Output {
    run_with(level, flags, cmd, None)
}

/// Waits for `child` with a deadline (killing it after), collecting its output. Asserts that
/// every process it started (e.g. QEMU) is gone when it has exited.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let end = Instant::now() + limit;
    let mut kids = std::collections::BTreeSet::new();
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out_t = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let err_t = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let status = loop {
        kids.extend(children_of(child.id()));
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_t.join().unwrap();
            panic!(
                "vmctl did not finish within {limit:?}; stderr: {}",
                text(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    std::thread::sleep(Duration::from_millis(100));
    for k in kids {
        let alive =
            std::fs::read_to_string(format!("/proc/{k}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(
            !alive,
            "process {k} started by vmctl outlived it; stderr: {}",
            text(&out.stderr)
        );
    }
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}; stderr: {}",
        out.status,
        text(&out.stderr)
    );
}

/// Processes whose command line mentions `needle` (leftover VMMs).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = text(&c).replace('\0', " ");
            if c.contains(needle) {
                v.push(c);
            }
        }
    }
    v
}

/// Pids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(") ").map(|x| x.1) else {
            continue;
        };
        if after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            if let Ok(k) = e.file_name().to_string_lossy().parse() {
                v.push(k);
            }
        }
    }
    v
}

/// VM records left under /run/vmctl/vms whose supervisor was `pid`.
pub fn records_of(pid: u32) -> Vec<PathBuf> {
    let Ok(d) = std::fs::read_dir("/run/vmctl/vms") else {
        return Vec::new();
    };
    d.flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("state.json"))
                .is_ok_and(|s| s.contains(&format!("\"pid\": {pid},")))
        })
        .collect()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

// ---- the cases ---------------------------------------------------------------------------

pub fn output_and_exit_code(l: Level) {
    let out = run(
        l,
        &[],
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
    );
    assert_eq!(
        text(&out.stdout),
        "to-stdout\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "to-stderr\n");
    assert_eq!(out.status.code(), Some(3));
}

pub fn binary_output_is_exact(l: Level) {
    // 300 KB of random bytes on stdout, their checksum on stderr: framing must not alter,
    // reorder or lose anything.
    let out = run(
        l,
        &[],
        &[
            "sh",
            "-c",
            "head -c 300000 /dev/urandom > /tmp/r; cat /tmp/r; md5sum < /tmp/r >&2",
        ],
    );
    assert_ok(&out);
    assert_eq!(out.stdout.len(), 300_000);
    let mut md5 = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    md5.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let sum = md5.wait_with_output().unwrap();
    assert_eq!(
        text(&sum.stdout).split_whitespace().next(),
        text(&out.stderr).split_whitespace().next()
    );
}

pub fn env_and_workdir(l: Level) {
    let out = run(
        l,
        &["-e", "GREETING=hello world", "-w", "/etc"],
        &["sh", "-c", "echo \"$GREETING\"; pwd"],
    );
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "hello world\n/etc\n");
}

pub fn user(l: Level) {
    let out = run(
        l,
        &["-u", "65534:65534"],
        &[
            "sh",
            "-c",
            "id -u; id -g; touch /root/x 2>/dev/null && echo wrote || echo denied",
        ],
    );
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "65534\n65534\ndenied\n");
}

/// User names from the image's /etc/passwd (VM levels; the container level takes numbers).
pub fn user_by_name(l: Level) {
    let out = run(l, &["-u", "nobody"], &["id", "-u"]);
    assert_eq!(
        text(&out.stdout),
        "65534\n",
        "stderr: {}",
        text(&out.stderr)
    );
}

pub fn memory_limit(l: Level) {
    // Under the limit: fine. Over it (tmpfs pages are charged to the container): OOM-killed.
    let small = run(
        l,
        &["-m", "48m"],
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/f bs=1M count=8 2>/dev/null; echo ok",
        ],
    );
    assert_ok(&small);
    assert_eq!(text(&small.stdout), "ok\n");
    let big = run(
        l,
        &["-m", "48m"],
        &["dd", "if=/dev/zero", "of=/dev/shm/f", "bs=1M", "count=200"],
    );
    assert_eq!(
        big.status.code(),
        Some(137),
        "stderr: {}",
        text(&big.stderr)
    );
}

pub fn files_do_not_persist_after_rm(l: Level) {
    let mark = format!("/marker-{}", std::process::id());
    let out = run(l, &[], &["sh", "-c", &format!("touch {mark} && ls {mark}")]);
    assert_ok(&out);
    let out = run(l, &[], &["ls", &mark]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "{mark} survived --rm: {}",
        text(&out.stdout)
    );
}

/// The shell command that lists the network interfaces the workload sees, one a line.
pub const LIST_INTERFACES: &str = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";

/// `--network none`: the workload sees loopback and nothing else, at every level (in a VM
/// the guest has no NIC then).
pub fn network_none_sees_only_loopback(l: Level) {
    let out = run(l, &[], &["sh", "-c", LIST_INTERFACES]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "lo\n");
}

pub fn stdin_is_forwarded(l: Level) {
    let out = run_with(
        l,
        &["-i"],
        &["sh", "-c", "cat; echo end"],
        Some(b"line one\nline two\n"),
    );
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "line one\nline two\nend\n");
}

pub fn missing_command_fails_like_docker(l: Level) {
    let out = run(l, &[], &["/no/such/program"]);
    assert!(!out.status.success());
    assert!(
        matches!(out.status.code(), Some(126) | Some(127)),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
}

/// SIGTERM to `vmctl run` reaches the workload; the VM is torn down, nothing is left.
pub fn signal_forwarding_and_teardown(l: Level) {
    let mut c = command(
        l,
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let end = Instant::now() + l.limit();
    while !text(&seen).contains("ready") {
        assert!(Instant::now() < end, "no 'ready'");
        let mut b = [0u8; 64];
        let n = std::io::Read::read(&mut stdout, &mut b).unwrap();
        assert!(n > 0, "vmctl ended early: {}", text(&seen));
        seen.extend_from_slice(&b[..n]);
    }
    let records = records_of(pid);
    // SAFETY: kill(2) with integers on our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut rest).unwrap();
    seen.extend(rest);
    let out = wait_output(child, l.limit());
    assert_eq!(
        text(&seen),
        "ready\ngot-term\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(7));
    for r in records {
        assert!(!r.exists(), "record {} left behind", r.display());
        assert!(
            processes_mentioning(&r.display().to_string()).is_empty(),
            "VMM of {} still running",
            r.display()
        );
    }
}

/// Instantiates cases for a level: `suite!(Level::Hosted, output_and_exit_code, user, ...)`.
#[macro_export]
macro_rules! suite {
    ($level:expr, $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                isolation_common::$case($level);
            }
        )+
    };
}
