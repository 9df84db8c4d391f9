//! `vmctl bench` with a tiny configuration: containers only, two runs, runc as the one peer.
//! Checks the JSON has real samples, the SVG is written, `--compare` reads the JSON back, a
//! missing peer is a "skipped" line and bad options fail clearly.

use std::path::Path;
use std::process::{Command, Output};

use vmctl_tests::vmctl_bin;

fn bench(image_root: &Path, args: &[&str]) -> Output {
    Command::new(vmctl_bin::path())
        .arg("bench")
        .args(args)
        .env("VMCTL_IMAGE_ROOT", image_root)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running vmctl bench")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json(path: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&t).expect("bench.json parses")
}

#[test]
fn containers_with_runc_write_samples_plot_and_compare() {
    let images = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first");
    let tiny = [
        "--levels",
        "container",
        "--peers",
        "runc",
        "--runs",
        "2",
        "--warmup",
        "0",
    ];
    let o = bench(
        images.path(),
        &[&tiny[..], &["--out", first.to_str().unwrap()]].concat(),
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("[bench "), "no progress lines: {stderr}");

    let j = json(&first.join("bench.json"));
    assert_eq!(j["schema"], 1);
    assert!(!j["env"]["host_kernel"].as_str().unwrap().is_empty());
    assert!(!j["env"]["kvm"].as_str().unwrap().is_empty());
    let series = j["series"].as_array().expect("series");
    let start: Vec<&serde_json::Value> = series
        .iter()
        .filter(|s| s["level"] == "container" && s["metric"] == "start")
        .collect();
    assert!(!start.is_empty(), "no container start series: {j}");
    for s in &start {
        let samples = s["samples_ms"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "{s}");
        for v in samples {
            let v = v.as_f64().unwrap();
            assert!(v > 0.1 && v < 30_000.0, "implausible start latency {v} ms");
        }
        let median = s["summary"]["median"].as_f64().unwrap();
        assert!(median > 0.1, "{s}");
    }
    // runc is the one peer: measured, or skipped with its reason (never silently absent).
    let runc_measured = start.iter().any(|s| s["subject"] == "runc");
    let runc_skipped = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["what"] == "runc");
    assert!(runc_measured || runc_skipped, "{j}");
    assert!(stdout.contains("| level | subject | metric |"), "{stdout}");
    assert!(stdout.contains("Targets"), "{stdout}");

    let svg = std::fs::read_to_string(first.join("bench.svg")).expect("bench.svg written");
    assert!(svg.starts_with("<svg"), "not an SVG");
    let subject = start[0]["subject"].as_str().unwrap();
    assert!(svg.contains(subject), "plot lacks {subject}");

    // A second run compared with the first.
    let second = out.path().join("second");
    let o = bench(
        images.path(),
        &[
            &tiny[..],
            &["--out", second.to_str().unwrap()],
            &["--compare", first.join("bench.json").to_str().unwrap()],
        ]
        .concat(),
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("Compared with the run of"), "{stdout}");
    assert!(
        stdout.contains(&format!("container/{subject}/start")),
        "{stdout}"
    );
}

#[test]
fn missing_peer_is_skipped_with_a_reason() {
    let images = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = bench(
        images.path(),
        &[
            "--levels",
            "container",
            "--peers",
            "runc",
            "--runc",
            "/nonexistent/runc",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--out",
            out.path().to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "stderr: {stderr}");
    assert!(
        stdout.contains("runc: skipped: /nonexistent/runc not installed"),
        "{stdout}"
    );
    let j = json(&out.path().join("bench.json"));
    assert!(j["series"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["subject"] != "runc"));
}

#[test]
fn bad_options_fail_with_the_value_and_the_choices() {
    let images = tempfile::tempdir().unwrap();
    let o = bench(images.path(), &["--levels", "warp"]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("\"warp\"") && stderr.contains("container,microvm"),
        "{stderr}"
    );
    let o = bench(images.path(), &["--compare", "/nonexistent/old.json"]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(stderr.contains("/nonexistent/old.json"), "{stderr}");
}

/// crun (installed by scripts/setup.sh) is measured beside ours, also on a hybrid cgroup host
/// like the build machines, which crun refuses as it is: there the runtimes see the unified
/// hierarchy in a private mount namespace, and the run says so.
#[test]
fn crun_is_measured_on_this_host() {
    if !Path::new("/usr/bin/crun").exists() {
        eprintln!("crun not installed: nothing to check");
        return;
    }
    let images = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let args = ["--levels", "container", "--peers", "crun", "--runs", "2"];
    let o = bench(
        images.path(),
        &[&args[..], &["--out", out.path().to_str().unwrap()]].concat(),
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let j = json(&out.path().join("bench.json"));
    let crun = j["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == "crun" && s["metric"] == "start")
        .unwrap_or_else(|| panic!("no crun start series: {stderr}"));
    assert_eq!(crun["samples_ms"].as_array().unwrap().len(), 2);
    let hybrid = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        && Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    let view = j["settings"]["cgroup_view"].as_str();
    assert_eq!(
        view.is_some(),
        hybrid,
        "cgroup view {view:?} on a hybrid host: {hybrid}"
    );
    if hybrid {
        assert!(
            stdout.contains("Containers: hybrid cgroup host"),
            "{stdout}"
        );
    }
    // The view was the bench's own: the host's /sys/fs/cgroup is as it was.
    if hybrid {
        assert!(!Path::new("/sys/fs/cgroup/cgroup.controllers").exists());
    }
}
