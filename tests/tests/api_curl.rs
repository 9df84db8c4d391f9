//! Firecracker's getting-started sequence, driven by curl exactly as Firecracker documents it
//! (`curl --unix-socket ... -X PUT 'http://localhost/...'`): an unmodified HTTP client that
//! knows nothing of vmctl configures and boots the microVM.

mod api_common;

use std::process::Command;

use api::test_support::BackendCall;
use api_common::TestVm;

/// Runs curl against the socket; returns (status, body).
fn curl(vm: &TestVm, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--unix-socket",
    ])
    .arg(&vm.sock)
    .args(["-X", method, &format!("http://localhost{path}")])
    .args(["-H", "Accept: application/json"])
    .args(["-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd
        .output()
        .expect("curl must be installed (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[test]
fn firecracker_getting_started_with_curl() {
    let vm = TestVm::start();
    let kernel = vm.file("hello-vmlinux.bin");
    let rootfs = vm.file("hello-rootfs.ext4");
    let steps = [
        (
            "PUT",
            "/logger",
            format!(
                r#"{{"log_path": "{}", "level": "Debug", "show_level": true, "show_log_origin": true}}"#,
                vm.dir.path().join("fc.log").display()
            ),
        ),
        (
            "PUT",
            "/boot-source",
            format!(
                r#"{{"kernel_image_path": "{kernel}", "boot_args": "console=ttyS0 reboot=k panic=1 pci=off"}}"#
            ),
        ),
        (
            "PUT",
            "/drives/rootfs",
            format!(
                r#"{{"drive_id": "rootfs", "path_on_host": "{rootfs}", "is_root_device": true, "is_read_only": false}}"#
            ),
        ),
        (
            "PUT",
            "/network-interfaces/net1",
            r#"{"iface_id": "net1", "guest_mac": "06:00:AC:10:00:02", "host_dev_name": "tap0"}"#
                .to_string(),
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 2, "mem_size_mib": 1024, "smt": false, "track_dirty_pages": false}"#
                .to_string(),
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#.to_string(),
        ),
        ("PATCH", "/vm", r#"{"state": "Paused"}"#.to_string()),
        ("PATCH", "/vm", r#"{"state": "Resumed"}"#.to_string()),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "SendCtrlAltDel"}"#.to_string(),
        ),
    ];
    for (method, path, body) in &steps {
        let (code, out) = curl(&vm, method, path, Some(body));
        assert_eq!(code, 204, "{method} {path}: {out}");
        assert!(out.is_empty(), "204 with a body: {out:?}");
    }
    let (code, out) = curl(&vm, "GET", "/", None);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "Running");
    let (code, out) = curl(&vm, "GET", "/vm/config", None);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["network-interfaces"][0]["guest_mac"], "06:00:ac:10:00:02");
    assert_eq!(v["machine-config"]["mem_size_mib"], 1024);
    let (code, out) = curl(
        &vm,
        "PUT",
        "/boot-source",
        Some(r#"{"kernel_image_path": "/x"}"#),
    );
    assert_eq!(code, 400);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["fault_message"]
        .as_str()
        .unwrap()
        .contains("not supported after starting"));
    let started = vm
        .backend
        .calls()
        .iter()
        .any(|c| matches!(c, BackendCall::Start(_)));
    assert!(started);
}
