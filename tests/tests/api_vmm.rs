//! The API against the real KVM VMM (`vmm::api_backend::KvmBackend`) with the ring-3 test
//! guests: configure and boot over the socket, pause/resume a running guest, metrics with the
//! guest's boot time, and the `vmctl-vmm` process (--api-sock, --no-api --config-file).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use api::runner::{run_vmm, VmmOptions};
use api::types::{ActionType, MachineConfig, VmState, VmStateRequest};
use api::{ApiClient, Controller, VmmAction, VmmBackend};
use serde_json::json;
use vm_memory::{Bytes, GuestAddress};
use vmm::api_backend::KvmBackend;

/// Where the counter guest keeps its count.
const COUNTER_ADDR: u64 = 0x5000;

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn guest(name: &str) -> String {
    vmctl_tests::guest::build(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn small_machine() -> MachineConfig {
    MachineConfig {
        vcpu_count: 1,
        mem_size_mib: 16,
        ..Default::default()
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn boot_a_guest_over_the_api_and_collect_its_boot_time() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let metrics = dir.path().join("metrics.jsonl");
    let console = Captured::default();
    let backend = KvmBackend::new(Some(Arc::new(Mutex::new(console.clone()))), false);
    let opts = VmmOptions {
        api_sock: Some(sock.clone()),
        id: "hello_vm".into(),
        ..VmmOptions::new()
    };
    let vmm = std::thread::spawn(move || run_vmm(opts, backend));
    wait_for("the API socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let client = ApiClient::new(&sock);
    client
        .put(
            "/boot-source",
            &json!({"kernel_image_path": guest("hello")}),
        )
        .unwrap();
    client.put("/machine-config", &small_machine()).unwrap();
    client
        .put("/metrics", &json!({"metrics_path": metrics}))
        .unwrap();
    let t = Instant::now();
    client.action(ActionType::InstanceStart).unwrap();
    // The guest prints, writes the boot marker and resets: the VMM returns status 0.
    let code = vmm.join().unwrap().unwrap();
    let wall = t.elapsed();
    assert_eq!(code, 0);
    assert!(
        console.text().contains("hello from ring 3"),
        "{}",
        console.text()
    );
    assert!(!sock.exists());
    let text = std::fs::read_to_string(&metrics).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let boot_us = last["boot_time_us"]
        .as_u64()
        .expect("boot time in the metrics");
    eprintln!("InstanceStart to VMM exit: {wall:?}; boot_time_us since process start: {boot_us}");
}

#[test]
fn pause_and_resume_a_running_guest() {
    let mut c = Controller::new("counter", KvmBackend::new(None, false));
    c.handle(VmmAction::PutBootSource(api::types::BootSourceConfig {
        kernel_image_path: guest("counter"),
        ..Default::default()
    }))
    .unwrap();
    c.handle(VmmAction::PutMachineConfig(small_machine()))
        .unwrap();
    c.handle(VmmAction::InstanceStart).unwrap();
    let mem = c.backend().guest_memory().unwrap();
    let count = || mem.read_obj::<u64>(GuestAddress(COUNTER_ADDR)).unwrap();
    wait_for("the guest to count", Duration::from_secs(20), || {
        count() > 1000
    });

    let t = Instant::now();
    c.handle(VmmAction::Pause).unwrap();
    eprintln!("pause took {:?}", t.elapsed());
    assert_eq!(c.state(), VmState::Paused);
    let a = count();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count(), a, "the counter moved while paused");

    c.handle(VmmAction::Resume).unwrap();
    wait_for("the guest to count again", Duration::from_secs(20), || {
        count() > a + 1000
    });
    assert!(
        c.backend_mut().exit_code().is_none(),
        "the guest is still running"
    );
    let e = c.handle(VmmAction::SendCtrlAltDel).unwrap_err().to_string();
    assert!(e.contains("not supported"), "{e}");
    // Dropping the controller stops the VM and joins its thread.
}

/// `target/<profile>/vmctl-vmm`, built once.
fn vmm_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "vmm", "--bin", "vmctl-vmm", "--quiet"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "cargo build -p vmm --bin vmctl-vmm failed"
        );
        profile_dir.join("vmctl-vmm")
    })
    .clone()
}

#[test]
fn vmctl_vmm_process_with_api_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fc.sock");
    let mut child = Command::new(vmm_binary())
        .args(["--api-sock", sock.to_str().unwrap(), "--id", "proc_vm"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the API socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let client = ApiClient::new(&sock);
    assert_eq!(client.instance_info().unwrap().id, "proc_vm");
    client
        .put(
            "/boot-source",
            &json!({"kernel_image_path": guest("counter")}),
        )
        .unwrap();
    client.put("/machine-config", &small_machine()).unwrap();
    client.action(ActionType::InstanceStart).unwrap();
    assert_eq!(client.instance_info().unwrap().state, VmState::Running);
    client.set_vm_state(VmStateRequest::Paused).unwrap();
    assert_eq!(client.instance_info().unwrap().state, VmState::Paused);
    client.set_vm_state(VmStateRequest::Resumed).unwrap();
    let err = client
        .put(
            "/boot-source",
            &json!({"kernel_image_path": guest("hello")}),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not supported after starting the microVM"),
        "{err}"
    );
    // A second VMM on the same socket is refused while this one lives.
    let out = Command::new(vmm_binary())
        .args(["--api-sock", sock.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by a running process"));
    // SIGTERM ends the VM; the process exits 128 + 15 and removes its socket.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(!sock.exists());
}

#[test]
fn vmctl_vmm_no_api_boots_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vm.json");
    let doc = json!({
        "boot-source": {"kernel_image_path": guest("hello")},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 16},
    });
    std::fs::write(&cfg, doc.to_string()).unwrap();
    let out = Command::new(vmm_binary())
        .args(["--no-api", "--config-file", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from ring 3"));
    let out = Command::new(vmm_binary()).arg("--no-api").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-api needs --config-file"));
}

/// Boots test guest `name` through the API with `drive` attached (PUT /drives); returns the
/// VMM's exit status and the guest console.
fn boot_with_drive(name: &str, drive: serde_json::Value) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let console = Captured::default();
    let backend = KvmBackend::new(Some(Arc::new(Mutex::new(console.clone()))), false);
    let opts = VmmOptions {
        api_sock: Some(sock.clone()),
        ..VmmOptions::new()
    };
    let vmm = std::thread::spawn(move || run_vmm(opts, backend));
    wait_for("the API socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let client = ApiClient::new(&sock);
    client
        .put("/boot-source", &json!({"kernel_image_path": guest(name)}))
        .unwrap();
    client.put("/machine-config", &small_machine()).unwrap();
    let id = drive["drive_id"].as_str().unwrap().to_string();
    client.put(&format!("/drives/{id}"), &drive).unwrap();
    client.action(ActionType::InstanceStart).unwrap();
    let code = vmm.join().unwrap().unwrap();
    (code, console.text())
}

#[test]
fn drive_put_over_the_api_is_a_virtio_blk_disk_in_the_guest() {
    let mut img = tempfile::NamedTempFile::new().unwrap();
    let mut data = vec![0u8; 64 * 1024];
    data[..16].copy_from_slice(b"VMCTL-BLOCK-TEST");
    img.write_all(&data).unwrap();
    let drive = |ro: bool| {
        json!({"drive_id": "api_disk", "path_on_host": img.path(), "is_root_device": true,
               "is_read_only": ro})
    };
    let (code, console) = boot_with_drive("virtio_blk", drive(false));
    assert_eq!(code, 0, "{console}");
    assert!(console.contains("rd=00:VMCTL-BLOCK-TEST"), "{console}");
    assert!(console.contains("wr=00"), "{console}");
    assert!(console.contains("id=00:api_disk"), "{console:?}");
    let after = std::fs::read(img.path()).unwrap();
    assert_eq!(&after[512..528], b"written-by-guest");
    // is_read_only reaches the device: the guest's write fails with IOERR.
    let (code, console) = boot_with_drive("virtio_blk", drive(true));
    assert_eq!(code, 0, "{console}");
    assert!(console.contains("wr=01"), "{console}");
}

#[test]
fn vmctl_vmm_sigterm_before_boot_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fc.sock");
    let mut child = Command::new(vmm_binary())
        .args(["--api-sock", sock.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the API socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert!(!sock.exists(), "the socket is removed on SIGTERM");
}
