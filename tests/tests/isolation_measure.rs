//! Time from `vmctl run` to the workload's first output, per isolation level, same image,
//! same run. Not part of the normal suite (it boots several VMs, some slow on nested hosts):
//! `cargo test -p vmctl-tests --test isolation_measure -- --ignored --nocapture`
//! Levels come from `VMCTL_MEASURE_LEVELS` (default "container,hosted,microvm"); a level that
//! fails is reported with its error instead of a number.

mod isolation_common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use isolation_common::{command, text, Level};

fn first_output(level: Level) -> Result<(Duration, Duration), String> {
    let start = Instant::now();
    let mut child = command(level, &[], &["echo", "first-output"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = child.stdout.take().unwrap();
    let mut b = [0u8; 1];
    let n = out.read(&mut b).map_err(|e| e.to_string())?;
    let first = start.elapsed();
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    if n == 0 || !o.status.success() {
        return Err(format!("{:?}: {}", o.status, text(&o.stderr).trim()));
    }
    Ok((first, start.elapsed()))
}

#[test]
#[ignore]
fn time_to_first_output() {
    let levels =
        std::env::var("VMCTL_MEASURE_LEVELS").unwrap_or_else(|_| "container,hosted,microvm".into());
    let runs: usize = std::env::var("VMCTL_MEASURE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!("level      run  first-output  exit");
    for name in levels.split(',') {
        let level = match name {
            "container" => Level::Container,
            "hosted" => Level::Hosted,
            "microvm" => Level::Microvm,
            other => panic!("unknown level {other}"),
        };
        for i in 0..runs {
            match first_output(level) {
                Ok((f, e)) => println!(
                    "{name:<10} {i:>3}  {:>10.3} s  {:>6.3} s",
                    f.as_secs_f64(),
                    e.as_secs_f64()
                ),
                Err(e) => {
                    println!("{name:<10} {i:>3}  failed: {e}");
                    break;
                }
            }
        }
    }
}
