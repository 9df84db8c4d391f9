//! Density: how many idle containers or VMs start one after another within a time budget,
//! and when each was up; everything is torn down afterwards.

use std::time::Instant;

use super::bundle::Bundle;
use super::container::OciRuntime;
use super::model::Density;
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
