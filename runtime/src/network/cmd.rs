//! Running `ip`, `iptables` and `nsenter`, and undoing half-done setups.

use std::io::Write;
use std::process::{Command, Stdio};

use super::error::{NetError, Result};

/// Runs `program args...`; returns stdout, or an error with the command line and stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with_input(program, args, None)
}

/// Like [`run`], feeding `input` on stdin.
pub(crate) fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let line = format!("{program} {}", args.join(" "));
    tracing::debug!("run {line}");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Command {
            cmd: line.clone(),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not installed (apt-get install iproute2 iptables util-linux)")
            } else {
                e.to_string()
            },
        })?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(data.as_bytes())
            .map_err(|e| NetError::Command {
                cmd: line.clone(),
                detail: format!("write stdin: {e}"),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| NetError::Command {
        cmd: line.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Command {
            cmd: line,
            detail: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        })
    }
}

/// Whether `program` can be run at all.
pub(crate) fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `ip -batch -` with `script` inside the network namespace of `pid`.
pub(crate) fn ip_in_netns(pid: i32, script: &str) -> Result<()> {
    let ns = format!("--net=/proc/{pid}/ns/net");
    run_with_input("nsenter", &[&ns, "ip", "-batch", "-"], Some(script)).map(drop)
}

/// Cleanup steps recorded while setting something up, run in reverse unless disarmed.
#[derive(Default)]
pub(crate) struct Undo {
    steps: Vec<(String, Vec<String>)>,
}

impl Undo {
    pub(crate) fn push(&mut self, program: &str, args: &[&str]) {
        self.steps.push((
            program.to_string(),
            args.iter().map(|s| s.to_string()).collect(),
        ));
    }

    /// Keeps what was set up.
    pub(crate) fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some((p, args)) = self.steps.pop() {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Err(e) = run(&p, &a) {
                tracing::warn!("cleanup after a failed setup: {e}");
            }
        }
    }
}
