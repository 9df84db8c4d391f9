use std::io::Write;

use super::*;
use crate::test_support::{BackendCall, RecordingBackend};
use crate::types::{BlockDeviceConfig, BootSourceConfig, MachineConfig, MetricsConfig};

fn kernel() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"kernel").unwrap();
    f
}

fn boot(path: &std::path::Path) -> VmmAction {
    VmmAction::PutBootSource(BootSourceConfig {
        kernel_image_path: path.to_str().unwrap().into(),
        ..Default::default()
    })
}

#[test]
fn start_requires_boot_source_and_locks_preboot_resources() {
    let rec = RecordingBackend::new();
    let mut c = Controller::new("vm1", rec.clone());
    let e = c.handle(VmmAction::InstanceStart).unwrap_err();
    assert!(e.to_string().contains("PUT /boot-source"), "{e}");
    assert!(rec.calls().is_empty());

    let k = kernel();
    c.handle(boot(k.path())).unwrap();
    c.handle(VmmAction::PutMachineConfig(MachineConfig {
        vcpu_count: 2,
        mem_size_mib: 256,
        ..Default::default()
    }))
    .unwrap();
    c.handle(VmmAction::InstanceStart).unwrap();
    assert_eq!(c.state(), VmState::Running);
    match &rec.calls()[..] {
        [BackendCall::Start(r)] => assert_eq!(r.machine_config.vcpu_count, 2),
        other => panic!("{other:?}"),
    }

    for action in [boot(k.path()), VmmAction::InstanceStart] {
        let e = c.handle(action).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("The requested operation is not supported after starting the microVM"),
            "{e}"
        );
    }
    // GETs still work after boot.
    let VmmResponse::InstanceInfo(info) = c.handle(VmmAction::GetInstanceInfo).unwrap() else {
        panic!()
    };
    assert_eq!(
        (info.id.as_str(), info.state, info.app_name.as_str()),
        ("vm1", VmState::Running, "vmctl")
    );
}

#[test]
fn post_boot_actions_refused_before_boot() {
    let rec = RecordingBackend::new();
    let mut c = Controller::new("vm", rec.clone());
    for a in [
        VmmAction::Pause,
        VmmAction::Resume,
        VmmAction::SendCtrlAltDel,
    ] {
        let e = c.handle(a).unwrap_err();
        assert!(matches!(e, ActionError::NotAllowedBeforeBoot(_)), "{e}");
    }
    assert!(rec.calls().is_empty());
}

#[test]
fn pause_resume_and_failed_start() {
    let rec = RecordingBackend::new();
    let mut c = Controller::new("vm", rec.clone());
    let k = kernel();
    c.handle(boot(k.path())).unwrap();
    rec.fail_start_with("no KVM");
    let e = c.handle(VmmAction::InstanceStart).unwrap_err();
    assert_eq!(e.to_string(), "Start microVM error: no KVM");
    assert_eq!(c.state(), VmState::NotStarted);
    let rec2 = RecordingBackend::new();
    let mut c = Controller::new("vm", rec2.clone());
    c.handle(boot(k.path())).unwrap();
    c.handle(VmmAction::InstanceStart).unwrap();
    c.handle(VmmAction::Pause).unwrap();
    c.handle(VmmAction::Pause).unwrap(); // already paused: no second backend call
    assert_eq!(c.state(), VmState::Paused);
    c.handle(VmmAction::Resume).unwrap();
    c.handle(VmmAction::SendCtrlAltDel).unwrap();
    let calls = rec2.calls();
    assert_eq!(
        &calls[1..],
        &[
            BackendCall::Pause,
            BackendCall::Resume,
            BackendCall::SendCtrlAltDel
        ]
    );
}

#[test]
fn patch_drive_after_boot_reaches_backend() {
    let rec = RecordingBackend::new();
    let mut c = Controller::new("vm", rec.clone());
    let k = kernel();
    let d2 = kernel();
    c.handle(boot(k.path())).unwrap();
    c.handle(VmmAction::PutDrive(BlockDeviceConfig {
        drive_id: "root".into(),
        path_on_host: k.path().to_str().unwrap().into(),
        is_root_device: true,
        ..Default::default()
    }))
    .unwrap();
    let up = BlockDeviceUpdateConfig {
        drive_id: "root".into(),
        path_on_host: Some(d2.path().to_str().unwrap().into()),
        rate_limiter: None,
    };
    assert!(matches!(
        c.handle(VmmAction::PatchDrive(up.clone())).unwrap_err(),
        ActionError::NotAllowedBeforeBoot(_)
    ));
    c.handle(VmmAction::InstanceStart).unwrap();
    c.handle(VmmAction::PatchDrive(up.clone())).unwrap();
    assert_eq!(rec.calls().last(), Some(&BackendCall::PatchDrive(up)));
    assert_eq!(
        c.resources().drives[0].path_on_host,
        d2.path().to_str().unwrap()
    );
}

#[test]
fn metrics_flush_writes_backend_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.json");
    let rec = RecordingBackend::new();
    let mut m = VmmMetrics {
        boot_time_us: Some(1234),
        ..Default::default()
    };
    m.vcpu_exits.mmio_write = 42;
    rec.set_metrics(m);
    let mut c = Controller::new("vm", rec);
    assert!(c
        .handle(VmmAction::FlushMetrics)
        .unwrap_err()
        .to_string()
        .contains("PUT /metrics"));
    c.handle(VmmAction::PutMetrics(MetricsConfig {
        metrics_path: path.to_str().unwrap().into(),
    }))
    .unwrap();
    c.handle(VmmAction::FlushMetrics).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let line: crate::metrics::MetricsLine = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line.vmm.boot_time_us, Some(1234));
    assert_eq!(line.vmm.vcpu_exits.mmio_write, 42);
    assert_eq!(line.api.requests, 3);
    assert_eq!(line.api.errors, 1);
}

#[test]
fn apply_config_uses_the_same_checks() {
    let k = kernel();
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"}}, "machine-config": {{"vcpu_count": 2, "mem_size_mib": 64}}}}"#,
        k.path().display()
    );
    let res = VmResources::from_json(&json).unwrap();
    let mut c = Controller::new("vm", RecordingBackend::new());
    c.apply_config(res.clone()).unwrap();
    assert_eq!(c.resources(), &res);
    c.handle(VmmAction::InstanceStart).unwrap();
    assert!(c.apply_config(res).is_err());
}
