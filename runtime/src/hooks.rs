//! OCI hooks run by the runtime in its own namespaces: `prestart`/`createRuntime` once the
//! container is created (before `start`), `poststart` after start, `poststop` on delete. Each
//! gets the container's state JSON on stdin. (`createContainer`/`startContainer`, which run
//! inside the container, are not supported.)

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

use crate::error::{Error, Result};

/// When hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Create,
    Poststart,
    Poststop,
}

/// Runs the hooks of `phase` in order; the first failure is returned.
#[allow(deprecated)] // prestart is deprecated in the spec but still used by tools
pub(crate) fn run(hooks: Option<&Hooks>, phase: Phase, state: &serde_json::Value) -> Result<()> {
    let Some(h) = hooks else { return Ok(()) };
    let list: Vec<&Hook> = match phase {
        Phase::Create => h
            .prestart()
            .iter()
            .flatten()
            .chain(h.create_runtime().iter().flatten())
            .collect(),
        Phase::Poststart => h.poststart().iter().flatten().collect(),
        Phase::Poststop => h.poststop().iter().flatten().collect(),
    };
    for hook in list {
        run_one(hook, state)
            .map_err(|e| Error::Setup(format!("{phase:?} hook {}: {e}", hook.path().display())))?;
    }
    Ok(())
}

fn run_one(hook: &Hook, state: &serde_json::Value) -> std::result::Result<(), String> {
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
    }
    cmd.env_clear();
    for e in hook.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state.to_string().as_bytes());
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(st) if st.success() => return Ok(()),
            Some(st) => return Err(format!("exited with {st}")),
            None if deadline.is_some_and(|d| Instant::now() > d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {}s", hook.timeout().unwrap_or(0)));
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}
