//! Density: how many idle containers or VMs start one after another within a time budget,
//! and when each was up; everything is torn down afterwards. Also the isolated-workload probe
//! (`vmctl run --isolation microvm|hosted`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::bundle::Bundle;
use super::container::OciRuntime;
use super::model::Density;
use super::proc::{self, Stream};
use super::progress;
use super::suite::Suite;
use super::vm::{self, Guest, Vmm};

/// Idle containers of `rt` (running `sleep`) within the budget.
pub fn containers(suite: &mut Suite, rt: &mut OciRuntime, bundle: &Bundle) {
    if let Err(e) = bundle.write_config(&["sleep", "3600"]) {
        return suite.skip(&format!("density {}", rt.name), format!("{e:#}"));
    }
    let budget = suite.budget();
    progress(&format!(
        "density {}: idle containers for {:.1} s",
        rt.name,
        budget.as_secs_f64()
    ));
    let (up, stopped) = rt.density(bundle, budget, suite.density_max());
    if let Err(e) = bundle.write_config(&["/bin/true"]) {
        suite.skip("containers", format!("restoring the bundle: {e:#}"));
    }
    suite.report.density.push(Density {
        level: "container".into(),
        subject: rt.name.clone(),
        budget_s: budget.as_secs_f64(),
        started: up.len(),
        up_at_ms: up,
        stopped,
    });
}

/// Idle VMs of `vmm` started one after another (each once the previous is ready) within
/// the budget; the one still booting when the budget runs out does not count.
pub fn vms(suite: &mut Suite, level: &str, name: &str, vmm: &Vmm, guest: &Guest) {
    let budget = suite.budget();
    let cap = suite.density_max();
    progress(&format!(
        "density {name}: idle VMs for {:.1} s",
        budget.as_secs_f64()
    ));
    let t0 = Instant::now();
    let deadline = t0 + budget;
    let mut running = Vec::new();
    let mut up = Vec::new();
    let mut stopped = None;
    while Instant::now() < deadline {
        if running.len() >= cap {
            stopped = Some(format!("cap of {cap} reached"));
            break;
        }
        match vm::start_idle(vmm, guest, deadline) {
            Ok(v) => {
                running.push(v);
                up.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            Err(e) => {
                stopped = Some(format!("{e:#}"));
                break;
            }
        }
    }
    progress(&format!(
        "density {name}: {} VMs up in {:.1} s; tearing down",
        up.len(),
        t0.elapsed().as_secs_f64()
    ));
    drop(running);
    suite.report.density.push(Density {
        level: level.into(),
        subject: name.into(),
        budget_s: budget.as_secs_f64(),
        started: up.len(),
        up_at_ms: up,
        stopped,
    });
}

/// The line the isolated workload prints.
const WORKLOAD_MARK: &str = "vmctl-bench-workload";

/// One `vmctl run --isolation ISO`: when the workload's output appeared, and when the VMM's
/// boot marker line did (if the VMM prints one), since process start.
pub struct Isolated {
    pub workload: Duration,
    pub marker: Option<Duration>,
}

/// Runs `vmctl run --isolation ISO --rm -- echo MARK` once, until MARK appears on stdout.
pub fn isolated_once(
    vmctl: &Path,
    image_root: &Path,
    iso: &str,
    timeout: Duration,
) -> anyhow::Result<Isolated> {
    let t0 = Instant::now();
    let mut child = Command::new(vmctl)
        .env("VMCTL_IMAGE_ROOT", image_root)
        .args(["run", "--isolation", iso, "--rm", "--network", "none"])
        .args(["--", "echo", WORKLOAD_MARK])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting vmctl run --isolation")?;
    let rx = proc::watch_lines(&mut child);
    let deadline = t0 + timeout;
    let mut marker = None;
    let mut open = 2;
    let mut last_err = String::new();
    let result = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((at, Stream::Stdout, Some(l))) if l.trim() == WORKLOAD_MARK => {
                break Ok(at.duration_since(t0));
            }
            Ok((at, Stream::Stderr, Some(l))) => {
                if l.contains("guest boot time: ") && marker.is_none() {
                    marker = Some(at.duration_since(t0));
                }
                last_err = l;
            }
            Ok((_, _, Some(_))) => {}
            Ok((_, _, None)) => {
                open -= 1;
                if open == 0 {
                    break Err("exited");
                }
            }
            Err(_) => break Err("timed out"),
        }
    };
    proc::kill_child(&mut child);
    match result {
        Ok(workload) => Ok(Isolated { workload, marker }),
        Err(why) => bail!(
            "vmctl run --isolation {iso} {why} without workload output: {}",
            if last_err.is_empty() {
                "(no message)"
            } else {
                &last_err
            }
        ),
    }
}
