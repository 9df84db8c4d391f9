//! Shared harness of the API tests: a real server on a real Unix socket in a temp dir, with
//! `RecordingBackend` (the VMM test double) answering on a VMM thread.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use api::test_support::RecordingBackend;
use api::{ApiClient, ApiServer, Controller, ServerConfig};

pub struct TestVm {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub client: ApiClient,
    pub backend: RecordingBackend,
    server: Option<ApiServer>,
    vmm: Option<JoinHandle<()>>,
}

impl TestVm {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let mut cfg = ServerConfig::new(&sock);
        tune(&mut cfg);
        let (server, endpoint) = ApiServer::start(cfg).unwrap();
        let backend = RecordingBackend::new();
        let mut controller = Controller::new("test_vm", backend.clone());
        let vmm = std::thread::spawn(move || endpoint.run(&mut controller));
        let client = ApiClient::new(&sock).with_timeout(Duration::from_secs(20));
        Self {
            dir,
            sock,
            client,
            backend,
            server: Some(server),
            vmm: Some(vmm),
        }
    }

    /// Creates a file in the temp dir and returns its path as a string.
    pub fn file(&self, name: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, b"not really a kernel").unwrap();
        p.to_str().unwrap().to_string()
    }

    /// Sends `method path` with a raw body; returns (status, body as JSON or Null).
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let b = (!body.is_empty()).then_some(body.as_bytes());
        let r = self.client.request(method, path, b).unwrap();
        let v = if r.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&r.body)
                )
            })
        };
        (r.status, v)
    }

    /// Asserts a 400 whose fault_message contains `needle`; returns the message.
    pub fn expect_fault(&self, method: &str, path: &str, body: &str, needle: &str) -> String {
        let (status, v) = self.call(method, path, body);
        let msg = v["fault_message"].as_str().unwrap_or_default().to_string();
        assert_eq!(status, 400, "{method} {path} {body}: {v}");
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} lacks {needle:?}"
        );
        msg
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        if let Some(t) = self.vmm.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes raw bytes to the socket and reads the whole answer (the server closes or the
/// timeout hits).
pub fn raw_exchange(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One complete response is enough.
                let text = String::from_utf8_lossy(&out);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if out.len() >= head_end + 4 + len {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
