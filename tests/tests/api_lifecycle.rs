//! Configure, boot, pause, resume, Ctrl+Alt+Del and metrics over the real socket.

mod api_common;

use api::test_support::BackendCall;
use api::types::{ActionType, InstanceInfo, VmState, VmStateRequest};
use api::VmResources;
use api_common::TestVm;
use serde_json::json;

#[test]
fn configure_boot_pause_resume_over_the_socket() {
    let vm = TestVm::start();
    let kernel = vm.file("vmlinux");
    let initrd = vm.file("initrd");
    let rootfs = vm.file("rootfs.ext4");

    let info: InstanceInfo = vm.client.instance_info().unwrap();
    assert_eq!(info.state, VmState::NotStarted);
    assert_eq!(info.app_name, "vmctl");
    let (s, v) = vm.call("GET", "/", "");
    assert_eq!((s, v["state"].as_str()), (200, Some("Not started")));
    let (s, v) = vm.call("GET", "/version", "");
    assert_eq!(s, 200);
    assert!(v["firecracker_version"].is_string(), "{v}");

    let (s, v) = vm.call("GET", "/machine-config", "");
    assert_eq!(
        (s, v["vcpu_count"].as_u64(), v["mem_size_mib"].as_u64()),
        (200, Some(1), Some(128))
    );

    let put = |path: &str, body: serde_json::Value| {
        let (s, v) = vm.call("PUT", path, &body.to_string());
        assert_eq!(s, 204, "PUT {path}: {v}");
        assert!(v.is_null(), "204 must have no body");
    };
    put(
        "/boot-source",
        json!({"kernel_image_path": kernel, "initrd_path": initrd, "boot_args": "console=ttyS0 reboot=k"}),
    );
    put(
        "/machine-config",
        json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": false}),
    );
    let (s, _) = vm.call("PATCH", "/machine-config", r#"{"mem_size_mib": 512}"#);
    assert_eq!(s, 204);
    put(
        "/drives/rootfs",
        json!({"drive_id": "rootfs", "path_on_host": rootfs, "is_root_device": true, "is_read_only": false,
        "rate_limiter": {"bandwidth": {"size": 1048576, "one_time_burst": 0, "refill_time": 100}, "ops": {"size": 100, "refill_time": 1000}}}),
    );
    put(
        "/network-interfaces/eth0",
        json!({"iface_id": "eth0", "host_dev_name": "vmtap0", "guest_mac": "06:00:ac:10:00:02",
        "rx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 10}}}),
    );
    put(
        "/vsock",
        json!({"vsock_id": "vsock0", "guest_cid": 3, "uds_path": vm.dir.path().join("v.sock")}),
    );
    let metrics_path = vm.dir.path().join("metrics.json");
    put("/metrics", json!({"metrics_path": metrics_path}));
    put(
        "/logger",
        json!({"log_path": vm.dir.path().join("log"), "level": "debug", "show_level": true, "show_log_origin": false}),
    );

    // GET /vm/config: the --config-file shape, and it parses back as a config file.
    let (s, full) = vm.call("GET", "/vm/config", "");
    assert_eq!(s, 200);
    assert_eq!(full["machine-config"]["mem_size_mib"], 512);
    assert_eq!(full["machine-config"]["vcpu_count"], 2);
    assert_eq!(full["boot-source"]["kernel_image_path"], kernel.as_str());
    assert_eq!(
        full["drives"][0]["rate_limiter"]["bandwidth"]["size"],
        1048576
    );
    assert_eq!(
        full["network-interfaces"][0]["guest_mac"],
        "06:00:ac:10:00:02"
    );
    assert_eq!(full["vsock"]["guest_cid"], 3);
    let reparsed = VmResources::from_json(&full.to_string()).unwrap();
    assert_eq!(reparsed, vm.client.vm_config().unwrap());

    vm.client.action(ActionType::InstanceStart).unwrap();
    assert_eq!(vm.client.instance_info().unwrap().state, VmState::Running);
    vm.client.set_vm_state(VmStateRequest::Paused).unwrap();
    assert_eq!(vm.client.instance_info().unwrap().state, VmState::Paused);
    vm.client.set_vm_state(VmStateRequest::Resumed).unwrap();
    assert_eq!(vm.client.instance_info().unwrap().state, VmState::Running);
    vm.client.action(ActionType::SendCtrlAltDel).unwrap();
    let (s, _) = vm.call(
        "PATCH",
        "/drives/rootfs",
        &json!({"drive_id": "rootfs", "path_on_host": vm.file("other.ext4")}).to_string(),
    );
    assert_eq!(s, 204);
    vm.client.action(ActionType::FlushMetrics).unwrap();

    let calls = vm.backend.calls();
    let BackendCall::Start(started) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert_eq!(started.machine_config.mem_size_mib, 512);
    assert_eq!(started.drives[0].drive_id, "rootfs");
    assert!(matches!(calls[0], BackendCall::ConfigureLogger(ref l) if l.show_level == Some(true)));
    assert_eq!(
        &calls[2..5],
        &[
            BackendCall::Pause,
            BackendCall::Resume,
            BackendCall::SendCtrlAltDel
        ]
    );
    assert!(matches!(calls[5], BackendCall::PatchDrive(_)));

    let text = std::fs::read_to_string(&metrics_path).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(line["api"]["requests"].as_u64().unwrap() >= 15, "{line}");
    assert!(line["vcpu_exits"]["io_out"].is_u64(), "{line}");
    vm.stop();
}

#[test]
fn preboot_resources_refused_after_start_and_postboot_before() {
    let vm = TestVm::start();
    let kernel = vm.file("k");
    for (m, p, b) in [
        ("PATCH", "/vm", r#"{"state":"Paused"}"#),
        ("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#),
    ] {
        vm.expect_fault(m, p, b, "not supported before starting the microVM");
    }
    vm.expect_fault(
        "PUT",
        "/actions",
        r#"{"action_type":"InstanceStart"}"#,
        "PUT /boot-source",
    );
    vm.expect_fault(
        "PUT",
        "/actions",
        r#"{"action_type":"FlushMetrics"}"#,
        "PUT /metrics",
    );
    let (s, _) = vm.call(
        "PUT",
        "/boot-source",
        &json!({"kernel_image_path": kernel}).to_string(),
    );
    assert_eq!(s, 204);
    let (s, _) = vm.call("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    assert_eq!(s, 204);
    let after = "not supported after starting the microVM";
    let k = json!({"kernel_image_path": kernel}).to_string();
    let drive =
        json!({"drive_id": "d", "path_on_host": kernel, "is_root_device": false}).to_string();
    for (m, p, b) in [
        ("PUT", "/boot-source", k.as_str()),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":1,"mem_size_mib":128}"#,
        ),
        ("PATCH", "/machine-config", r#"{"vcpu_count":2}"#),
        ("PUT", "/drives/d", drive.as_str()),
        (
            "PUT",
            "/network-interfaces/n",
            r#"{"iface_id":"n","host_dev_name":"tap1"}"#,
        ),
        ("PUT", "/vsock", r#"{"guest_cid":3,"uds_path":"/tmp/x"}"#),
        ("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#),
    ] {
        let msg = vm.expect_fault(m, p, b, after);
        assert!(msg.contains("only allowed before InstanceStart"), "{msg}");
    }
    // Failed requests changed nothing.
    assert_eq!(vm.client.vm_config().unwrap().machine_config.vcpu_count, 1);
}

#[test]
fn failed_start_reports_the_vmm_error() {
    let vm = TestVm::start();
    vm.backend.fail_start_with("KVM_CREATE_VM failed: EBUSY");
    let kernel = vm.file("k");
    vm.client
        .put("/boot-source", &json!({"kernel_image_path": kernel}))
        .unwrap();
    let msg = vm.expect_fault(
        "PUT",
        "/actions",
        r#"{"action_type":"InstanceStart"}"#,
        "Start microVM error",
    );
    assert!(msg.contains("EBUSY"));
    assert_eq!(
        vm.client.instance_info().unwrap().state,
        VmState::NotStarted
    );
}
