//! Every malformed request is a 4xx with a fault message, and the server keeps serving.

mod api_common;

use api_common::{raw_exchange, TestVm};
use serde_json::json;

#[test]
fn unknown_paths_and_methods_are_400() {
    let vm = TestVm::start();
    for (m, p) in [
        ("GET", "/nope"),
        ("DELETE", "/"),
        ("POST", "/actions"),
        ("GET", "/drives/x/y"),
        ("PATCH", "/boot-source"),
        ("GET", "/vsock"),
    ] {
        let body = if m == "GET" || m == "DELETE" {
            ""
        } else {
            "{}"
        };
        let msg = vm.expect_fault(m, p, body, "Invalid request method and/or path");
        assert!(msg.contains(&format!("{m} {p}")), "{msg}");
    }
}

#[test]
fn bad_bodies_are_400_naming_the_field() {
    let vm = TestVm::start();
    let k = vm.file("k");
    vm.expect_fault(
        "PUT",
        "/boot-source",
        "this is not json",
        "deserializing the json body",
    );
    vm.expect_fault(
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path": 5}"#,
        "kernel_image_path",
    );
    vm.expect_fault(
        "PUT",
        "/boot-source",
        &json!({"kernel_image_path": k, "typo": 1}).to_string(),
        "unknown field `typo`",
    );
    vm.expect_fault(
        "PUT",
        "/boot-source",
        r#"{"kernel_image_path": "/does/not/exist"}"#,
        "kernel_image_path '/does/not/exist'",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": "2", "mem_size_mib": 128}"#,
        "field 'vcpu_count'",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1e400, "mem_size_mib": 128}"#,
        "deserializing",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 340282366920938463463374607431768211456, "mem_size_mib": 128}"#,
        "vcpu_count",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 18446744073709551616}"#,
        "mem_size_mib",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 0, "mem_size_mib": 128}"#,
        "vcpu_count 0 is out of range",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 33, "mem_size_mib": 128}"#,
        "use 1 to 32",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 3, "mem_size_mib": 128, "smt": true}"#,
        "odd",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 1}"#,
        "mem_size_mib 1",
    );
    vm.expect_fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2"}"#,
        "cpu_template",
    );
    vm.expect_fault(
        "PATCH",
        "/machine-config",
        r#"{"vcpu_count": -1}"#,
        "vcpu_count",
    );
    vm.expect_fault("PUT", "/actions", r#"{"action_type": "Reboot"}"#, "Reboot");
    vm.expect_fault("PUT", "/actions", r#"{}"#, "action_type");
    vm.expect_fault("PATCH", "/vm", r#"{"state": "Stopped"}"#, "Stopped");
    vm.expect_fault(
        "PUT",
        "/vsock",
        r#"{"guest_cid": 2, "uds_path": "/tmp/v"}"#,
        "guest_cid 2",
    );
    vm.expect_fault(
        "PUT",
        "/vsock",
        r#"{"guest_cid": 4294967296, "uds_path": "/tmp/v"}"#,
        "guest_cid",
    );
    vm.expect_fault(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "zz"}"#,
        "guest_mac 'zz'",
    );
    vm.expect_fault(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "this_name_is_too_long"}"#,
        "host_dev_name",
    );
    vm.expect_fault(
        "PUT",
        "/logger",
        r#"{"log_path": "/tmp/l", "level": "loud"}"#,
        "level \"loud\"",
    );
    vm.expect_fault(
        "PUT",
        "/drives/d",
        &json!({"drive_id": "d", "path_on_host": k, "is_root_device": true,
        "rate_limiter": {"bandwidth": {"size": 100, "refill_time": 0}}})
        .to_string(),
        "rate_limiter.bandwidth.refill_time",
    );
    vm.expect_fault("PUT", "/drives/d", r#"[1, 2, 3]"#, "deserializing");
    vm.expect_fault("PUT", "/drives/d", &"[".repeat(10_000), "deserializing");
    vm.expect_fault("GET", "/", "{}", "GET request cannot have a body");
    vm.expect_fault("PUT", "/actions", "", "Empty PUT request");
    // Still serving.
    assert_eq!(vm.call("GET", "/", "").0, 200);
}

#[test]
fn ids_are_checked_like_firecracker() {
    let vm = TestVm::start();
    let p = vm.file("disk");
    let body =
        |id: &str| json!({"drive_id": id, "path_on_host": p, "is_root_device": false}).to_string();
    vm.expect_fault(
        "PUT",
        "/drives/bad-id",
        &body("bad-id"),
        "alphanumeric characters and underscores",
    );
    vm.expect_fault("PUT", "/drives/bad%20id", &body("bad id"), "alphanumeric");
    let long = "a".repeat(65);
    vm.expect_fault(
        "PUT",
        &format!("/drives/{long}"),
        &body(&long),
        "limit is 64",
    );
    vm.expect_fault(
        "PUT",
        "/drives/one",
        &body("two"),
        "The id from the path does not match the id from the body",
    );
    vm.expect_fault(
        "PUT",
        "/network-interfaces/a",
        r#"{"iface_id":"b","host_dev_name":"t"}"#,
        "does not match",
    );
    let ok = "a_Z_09".repeat(10);
    assert_eq!(vm.call("PUT", &format!("/drives/{ok}"), &body(&ok)).0, 204);
    // Two root devices.
    let root =
        |id: &str| json!({"drive_id": id, "path_on_host": p, "is_root_device": true}).to_string();
    assert_eq!(vm.call("PUT", "/drives/r1", &root("r1")).0, 204);
    vm.expect_fault("PUT", "/drives/r2", &root("r2"), "only one root device");
}

#[test]
fn malformed_http_is_answered_and_does_not_kill_the_server() {
    let vm = TestVm::start();
    let out = raw_exchange(&vm.sock, b"NOT HTTP AT ALL\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    let out = raw_exchange(
        &vm.sock,
        b"PUT /actions HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    let out = raw_exchange(&vm.sock, &[0xff; 300]);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 4"), "{out:?}");
    // Chunked body works and is checked like any other.
    let out = raw_exchange(
        &vm.sock,
        b"PUT /actions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"act\r\n0\r\n\r\n",
    );
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("fault_message"),
        "{out:?}"
    );
    assert_eq!(vm.call("GET", "/", "").0, 200);
}

#[test]
fn random_bytes_on_the_socket_never_kill_the_server() {
    use std::io::{Read, Write};
    let vm = TestVm::start();
    // A fixed-seed xorshift generator: reproducible garbage, some of it starting like HTTP.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let prefixes: [&[u8]; 4] = [
        b"",
        b"PUT /actions HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
        b"PATCH /vm HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n",
    ];
    for i in 0..200 {
        let mut bytes = prefixes[i % prefixes.len()].to_vec();
        let len = (next() % 300) as usize;
        bytes.extend((0..len).map(|_| next() as u8));
        let mut s = std::os::unix::net::UnixStream::connect(&vm.sock).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if !out.is_empty() {
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 4"), "input {i} got {text:?}");
        }
    }
    let (status, v) = vm.call("GET", "/", "");
    assert_eq!(status, 200, "{v}");
}
