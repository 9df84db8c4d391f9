//! Socket-level behaviour: permissions, stale and live sockets, body limit, concurrency,
//! stalled clients and a slow VMM.

mod api_common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use api::server::DEFAULT_MAX_BODY_BYTES;
use api::{ApiServer, ServerConfig};
use api_common::{raw_exchange, TestVm};

#[test]
fn socket_is_0600() {
    let vm = TestVm::start();
    let mode = std::fs::metadata(&vm.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn stale_socket_is_replaced_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    // A socket file whose process is gone: bound, then the listener closed.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let (server, _endpoint) = ApiServer::start(ServerConfig::new(&sock)).unwrap();
    // A live server on the path: refused with a clear error, and the live socket is untouched.
    let err = ApiServer::start(ServerConfig::new(&sock))
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by a running process"), "{err}");
    assert!(UnixStream::connect(&sock).is_ok());
    // A regular file is not a socket.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = ApiServer::start(ServerConfig::new(&file))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a socket"), "{err}");
    server.shutdown();
    assert!(!sock.exists(), "shutdown removes the socket file");
}

#[test]
fn body_limit_default_and_configured() {
    let vm = TestVm::start();
    let big = format!(
        r#"{{"kernel_image_path": "{}"}}"#,
        "a".repeat(DEFAULT_MAX_BODY_BYTES)
    );
    let r = vm
        .client
        .request("PUT", "/boot-source", Some(big.as_bytes()))
        .unwrap();
    assert_eq!(r.status, 413);
    assert!(r.fault_message().unwrap().contains("51200"));
    // Just under the limit is parsed (and fails on the missing file, not on size).
    let fits = format!(
        r#"{{"kernel_image_path": "/{}"}}"#,
        "a".repeat(DEFAULT_MAX_BODY_BYTES - 30)
    );
    assert!(fits.len() <= DEFAULT_MAX_BODY_BYTES);
    vm.expect_fault("PUT", "/boot-source", &fits, "kernel_image_path");
    // A chunked body without Content-Length is limited too.
    let mut req =
        b"PUT /boot-source HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..60 {
        req.extend_from_slice(format!("{:x}\r\n{}\r\n", 1000, "b".repeat(1000)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let out = raw_exchange(&vm.sock, &req);
    assert!(out.starts_with("HTTP/1.1 413"), "{out:.200}");

    // A body far past the limit: the server answers 413 and closes without reading it all.
    let huge = vec![b'x'; 4 << 20];
    let r = vm
        .client
        .request("PUT", "/boot-source", Some(&huge))
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(vm.call("GET", "/", "").0, 200);

    let small = TestVm::start_with(|c| c.max_body_bytes = 100);
    let r = small
        .client
        .request("PUT", "/vsock", Some(&[b' '; 101]))
        .unwrap();
    assert_eq!(r.status, 413);
    assert!(r.fault_message().unwrap().contains("limit of 100 bytes"));
}

#[test]
fn hundred_concurrent_gets_all_answered() {
    let vm = TestVm::start();
    let start = Instant::now();
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let client = vm.client.clone();
            std::thread::spawn(move || client.instance_info().map(|i| i.id))
        })
        .collect();
    let ids: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(ids.len(), 100);
    assert!(ids.iter().all(|id| id == "test_vm"));
    eprintln!("100 concurrent GET / answered in {:?}", start.elapsed());
    let start = Instant::now();
    for _ in 0..200 {
        vm.client.instance_info().unwrap();
    }
    eprintln!(
        "sequential GET / (new connection each): {:?} per request",
        start.elapsed() / 200
    );
}

#[test]
fn half_request_does_not_block_others() {
    let vm = TestVm::start_with(|c| c.read_timeout = Duration::from_secs(5));
    // Half a request line, then half a body: both stall.
    let mut stalled_head = UnixStream::connect(&vm.sock).unwrap();
    stalled_head.write_all(b"PUT /actions HT").unwrap();
    let mut stalled_body = UnixStream::connect(&vm.sock).unwrap();
    stalled_body
        .write_all(b"PUT /actions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"action")
        .unwrap();
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(vm.call("GET", "/", "").0, 200);
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "served in {:?}",
        t.elapsed()
    );
    // The stalled body gets a 408 after the read timeout; the stalled head is closed.
    stalled_body
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut stalled_body, &mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    stalled_head
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let r = std::io::Read::read_to_end(&mut stalled_head, &mut out);
    assert!(
        r.is_ok(),
        "server closes a connection whose headers never finish: {r:?}"
    );
    assert_eq!(vm.call("GET", "/", "").0, 200);
}

#[test]
fn slow_vmm_does_not_block_the_api_thread() {
    let vm = TestVm::start();
    vm.client
        .put(
            "/boot-source",
            &serde_json::json!({"kernel_image_path": vm.file("k")}),
        )
        .unwrap();
    vm.backend.set_delay(Duration::from_secs(3));
    let client = vm.client.clone();
    let slow = std::thread::spawn(move || {
        let t = Instant::now();
        client
            .request(
                "PUT",
                "/actions",
                Some(br#"{"action_type":"InstanceStart"}"#),
            )
            .unwrap();
        t.elapsed()
    });
    std::thread::sleep(Duration::from_millis(200));
    // While the VMM is busy, requests the API thread can answer alone come back at once.
    let t = Instant::now();
    vm.expect_fault("GET", "/nope", "", "Invalid request");
    vm.expect_fault("PUT", "/machine-config", "{", "deserializing");
    let fast = t.elapsed();
    let slow = slow.join().unwrap();
    assert!(
        fast < Duration::from_millis(1500),
        "API answered in {fast:?} while the VMM was busy"
    );
    assert!(slow >= Duration::from_millis(2900), "{slow:?}");
}

#[test]
fn keep_alive_connection_serves_several_requests() {
    let vm = TestVm::start();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut s = UnixStream::connect(&vm.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert!(out.contains("firecracker_version"));
}
