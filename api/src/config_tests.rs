use std::io::Write;

use super::*;
use crate::types::MacAddr;

fn file() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"x").unwrap();
    f
}

fn drive(id: &str, path: &str, root: bool) -> BlockDeviceConfig {
    BlockDeviceConfig {
        drive_id: id.into(),
        path_on_host: path.into(),
        is_root_device: root,
        ..Default::default()
    }
}

#[test]
fn full_round_trip_through_json() {
    let k = file();
    let d = file();
    let mut r = VmResources::default();
    r.set_boot_source(BootSourceConfig {
        kernel_image_path: k.path().to_str().unwrap().into(),
        initrd_path: None,
        boot_args: Some("console=ttyS0".into()),
    })
    .unwrap();
    r.insert_drive(drive("rootfs", d.path().to_str().unwrap(), true))
        .unwrap();
    r.insert_net(NetworkInterfaceConfig {
        iface_id: "eth0".into(),
        host_dev_name: "tap0".into(),
        guest_mac: Some("06:00:00:00:00:01".parse().unwrap()),
        ..Default::default()
    })
    .unwrap();
    r.set_vsock(VsockConfig {
        vsock_id: None,
        guest_cid: 3,
        uds_path: "/tmp/v.sock".into(),
    })
    .unwrap();
    let json = r.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "boot-source",
        "drives",
        "machine-config",
        "network-interfaces",
        "vsock",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {json}");
    }
    assert_eq!(VmResources::from_json(&json).unwrap(), r);
}

#[test]
fn config_file_errors_name_the_path() {
    let e = VmResources::from_json(r#"{"machine-config": {"vcpu_count": "two"}}"#).unwrap_err();
    assert!(e.0.contains("machine-config.vcpu_count"), "{e}");
    let e = VmResources::from_json(r#"{"machine-config": {"vcpu_count": 64}}"#).unwrap_err();
    assert!(e.0.contains("vcpu_count 64"), "{e}");
    let e = VmResources::from_json(r#"{"bogus": 1}"#).unwrap_err();
    assert!(e.0.contains("unknown field `bogus`"), "{e}");
    let e = VmResources::from_json(r#"{"boot-source": {"kernel_image_path": "/nonexistent/k"}}"#)
        .unwrap_err();
    assert!(e.0.contains("kernel_image_path '/nonexistent/k'"), "{e}");
}

#[test]
fn firecracker_only_sections_null_or_named() {
    let r = VmResources::from_json(r#"{"balloon": null, "mmds-config": null}"#).unwrap();
    assert_eq!(r, VmResources::default());
    let e = VmResources::from_json(r#"{"balloon": {"amount_mib": 1}}"#).unwrap_err();
    assert!(e.0.contains("'balloon' is a Firecracker feature"), "{e}");
    assert!(VmResources::from_json("{")
        .unwrap_err()
        .0
        .contains("not valid JSON"));
}

#[test]
fn drives_replace_by_id_and_single_root() {
    let a = file();
    let p = a.path().to_str().unwrap();
    let mut r = VmResources::default();
    r.insert_drive(drive("root", p, true)).unwrap();
    r.insert_drive(drive("data", p, false)).unwrap();
    let e = r.insert_drive(drive("data", p, true)).unwrap_err();
    assert!(e.0.contains("drive 'root' already is"), "{e}");
    r.insert_drive(drive("root", p, false)).unwrap();
    r.insert_drive(drive("data", p, true)).unwrap();
    assert_eq!(r.drives.len(), 2);
    assert!(r.insert_drive(drive("bad-id", p, false)).is_err());
    assert!(r.insert_drive(drive("x", "/no/such/file", false)).is_err());
}

#[test]
fn drive_update_needs_existing_drive() {
    let a = file();
    let b = file();
    let mut r = VmResources::default();
    r.insert_drive(drive("root", a.path().to_str().unwrap(), true))
        .unwrap();
    let up = BlockDeviceUpdateConfig {
        drive_id: "root".into(),
        path_on_host: Some(b.path().to_str().unwrap().into()),
        rate_limiter: None,
    };
    r.update_drive(&up).unwrap();
    assert_eq!(r.drives[0].path_on_host, b.path().to_str().unwrap());
    let e = r
        .update_drive(&BlockDeviceUpdateConfig {
            drive_id: "nope".into(),
            ..up
        })
        .unwrap_err();
    assert!(e.0.contains("'nope'"), "{e}");
}

#[test]
fn net_rejects_duplicates_and_bad_names() {
    let mut r = VmResources::default();
    let mac: MacAddr = "06:00:00:00:00:01".parse().unwrap();
    let n = |id: &str, dev: &str| NetworkInterfaceConfig {
        iface_id: id.into(),
        host_dev_name: dev.into(),
        guest_mac: Some(mac),
        ..Default::default()
    };
    r.insert_net(n("eth0", "tap0")).unwrap();
    assert!(r
        .insert_net(n("eth1", "tap0"))
        .unwrap_err()
        .0
        .contains("already used"));
    assert!(r
        .insert_net(n("eth1", "tap1"))
        .unwrap_err()
        .0
        .contains("guest_mac"));
    assert!(r.insert_net(n("eth1", "a_very_long_tap_name")).is_err());
    r.insert_net(n("eth0", "tap9")).unwrap();
    assert_eq!(r.network_interfaces.len(), 1);
}

#[test]
fn vsock_and_start_checks() {
    let mut r = VmResources::default();
    let v = |cid| VsockConfig {
        vsock_id: None,
        guest_cid: cid,
        uds_path: "/tmp/x".into(),
    };
    assert!(r.set_vsock(v(2)).unwrap_err().0.contains("guest_cid 2"));
    r.set_vsock(v(3)).unwrap();
    assert!(r
        .validate_for_start()
        .unwrap_err()
        .0
        .contains("boot-source"));
}
