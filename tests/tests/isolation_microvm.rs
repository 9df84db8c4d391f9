//! `--isolation microvm` (vmctl's own KVM VMM). Boots here take a minute or more (guest ring 0
//! is emulated on nested-PVM hosts), so this is a documented subset that covers every feature
//! once, sharing boots:
//! - `features_in_one_boot`: stdout, stderr, exit code, env, working dir, numeric user, stdin,
//!   `--network none` (loopback only), and --memory (VM sizing plus the container's cgroup
//!   limit must be set up; the OOM kill itself is checked by the hosted suite, same agent code);
//! - `signal_forwarding_and_teardown`: SIGTERM reaches the workload, the guest shuts down,
//!   no VMM process, record, socket or temp file is left;
//! - `detach_logs_stop_rm`: `run -d`, `ps` (ISOLATION microvm), `logs -f`, `stop` (SIGTERM
//!   through the agent, guest and VMM gone), `ps -a` (Exited), `rm`, in one boot.
//!
//! What the hosted suite covers beyond this (OOM kill, --rm, binary output, bad input,
//! protocol mismatch, boot timeout) runs the same agent and host code over another transport.

mod isolation_common;

use isolation_common::{run_with, text, Level, LIST_INTERFACES};

suite!(
    Level::Microvm,
    signal_forwarding_and_teardown,
    detach_logs_stop_rm
);

#[test]
fn features_in_one_boot() {
    let script = format!(
        "cat; echo \"$GREETING\"; pwd; id -u; id -g; {LIST_INTERFACES}; echo to-stderr >&2; exit 3"
    );
    let out = run_with(
        Level::Microvm,
        &[
            "-i",
            "-e",
            "GREETING=hello world",
            "-w",
            "/etc",
            "-u",
            "65534:65534",
            "-m",
            "40m",
        ],
        &["sh", "-c", &script],
        Some(b"from stdin\n"),
    );
    assert_eq!(text(&out.stderr), "to-stderr\n");
    assert_eq!(
        text(&out.stdout),
        "from stdin\nhello world\n/etc\n65534\n65534\nlo\n"
    );
    assert_eq!(out.status.code(), Some(3));
}
