//! The VMM process loop (`api::runner::run_vmm`): --api-sock, --config-file, --no-api,
//! periodic metrics and exit status, with the recording VMM test double.

use std::path::Path;
use std::time::{Duration, Instant};

use api::runner::{run_vmm, RunError, VmmOptions};
use api::test_support::{BackendCall, RecordingBackend};
use api::types::{ActionType, VmState};
use api::ApiClient;
use serde_json::json;

fn wait_for_socket(path: &Path) {
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "API socket never came up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn config_file(dir: &Path, extra: serde_json::Value) -> std::path::PathBuf {
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"k").unwrap();
    let mut cfg = json!({
        "boot-source": {"kernel_image_path": kernel, "boot_args": "console=ttyS0"},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let path = dir.join("vm.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

#[test]
fn api_sock_serves_until_the_vm_ends_and_returns_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fc.sock");
    let backend = RecordingBackend::new();
    let opts = VmmOptions {
        api_sock: Some(sock.clone()),
        id: "vm7".into(),
        ..VmmOptions::new()
    };
    let b = backend.clone();
    let vmm = std::thread::spawn(move || run_vmm(opts, b));
    wait_for_socket(&sock);
    let client = ApiClient::new(&sock);
    assert_eq!(client.instance_info().unwrap().id, "vm7");
    let kernel = dir.path().join("k");
    std::fs::write(&kernel, b"k").unwrap();
    client
        .put("/boot-source", &json!({"kernel_image_path": kernel}))
        .unwrap();
    client.action(ActionType::InstanceStart).unwrap();
    assert_eq!(client.instance_info().unwrap().state, VmState::Running);
    backend.exit_with(3);
    assert_eq!(vmm.join().unwrap().unwrap(), 3);
    assert!(!sock.exists(), "the socket is removed when the VMM ends");
}

#[test]
fn config_file_with_api_boots_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fc.sock");
    let cfg = config_file(dir.path(), json!({}));
    let backend = RecordingBackend::new();
    let opts = VmmOptions {
        api_sock: Some(sock.clone()),
        config_file: Some(cfg),
        ..VmmOptions::new()
    };
    let b = backend.clone();
    let vmm = std::thread::spawn(move || run_vmm(opts, b));
    wait_for_socket(&sock);
    let client = ApiClient::new(&sock);
    assert_eq!(client.instance_info().unwrap().state, VmState::Running);
    assert_eq!(client.vm_config().unwrap().machine_config.vcpu_count, 2);
    backend.exit_with(0);
    assert_eq!(vmm.join().unwrap().unwrap(), 0);
}

#[test]
fn no_api_boots_from_the_config_file_and_flushes_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.jsonl");
    let cfg = config_file(dir.path(), json!({"metrics": {"metrics_path": metrics}}));
    let backend = RecordingBackend::new();
    let opts = VmmOptions {
        config_file: Some(cfg),
        metrics_interval: Duration::from_millis(100),
        ..VmmOptions::new()
    };
    let b = backend.clone();
    let vmm = std::thread::spawn(move || run_vmm(opts, b));
    let t = Instant::now();
    while std::fs::read_to_string(&metrics)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 2
    {
        assert!(t.elapsed() < Duration::from_secs(10), "no periodic metrics");
        std::thread::sleep(Duration::from_millis(20));
    }
    backend.exit_with(1);
    assert_eq!(vmm.join().unwrap().unwrap(), 1);
    let BackendCall::Start(started) = &backend.calls()[0] else {
        panic!()
    };
    assert_eq!(started.machine_config.mem_size_mib, 256);
    for line in std::fs::read_to_string(&metrics).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["utc_timestamp_ms"].as_u64().unwrap() > 0);
    }
}

#[test]
fn bad_invocations_are_clear_errors() {
    let e = run_vmm(VmmOptions::new(), RecordingBackend::new()).unwrap_err();
    assert!(matches!(e, RunError::NothingToRun), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        r#"{"machine-config": {"vcpu_count": 99, "mem_size_mib": 128}}"#,
    )
    .unwrap();
    let opts = VmmOptions {
        config_file: Some(path.clone()),
        ..VmmOptions::new()
    };
    let e = run_vmm(opts, RecordingBackend::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.json") && e.contains("vcpu_count 99"), "{e}");
    let opts = VmmOptions {
        config_file: Some(dir.path().join("missing.json")),
        ..VmmOptions::new()
    };
    let e = run_vmm(opts, RecordingBackend::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");
    // Config file without a boot source: InstanceStart fails with the reason.
    std::fs::write(
        &path,
        r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#,
    )
    .unwrap();
    let opts = VmmOptions {
        config_file: Some(path),
        ..VmmOptions::new()
    };
    let e = run_vmm(opts, RecordingBackend::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("boot-source"), "{e}");
}
