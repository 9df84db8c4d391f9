//! `vmctl vm` end to end on real KVM with the ticker test guest (prints "tick" ten times a
//! second from ring 3): create, start, pause (the console stops growing), resume, ps, logs,
//! inspect, stop, rm.

mod vm_lifecycle_common;

use std::time::Duration;

use vm_lifecycle_common::{process_alive, wait_for, VmEnv};
use vmctl_tests::guest;

#[test]
fn create_start_pause_resume_stop_rm() {
    let env = VmEnv::new();
    let k = guest::build("ticker");
    let name = format!("ticker-{}", std::process::id());
    let id = env
        .ok(&[
            "create",
            "--name",
            &name,
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "16",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 12, "id {id:?}");
    let pid = env.pid(&id);
    assert!(process_alive(pid));
    let sock = env.vm_dir(&id).join("api.sock");
    assert!(sock.exists());

    // Created: configured over the API, not booted.
    let row = env.ps_row(&id);
    assert_eq!(row[1], name);
    assert_eq!(row[2], "created");
    assert_eq!(row[3], pid.to_string());
    let config = env.ok(&["inspect", &name]);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["boot-source"]["kernel_image_path"],
        k.to_str().unwrap()
    );
    assert_eq!(config["machine-config"]["mem_size_mib"], 16);
    assert!(!env.console(&id).contains("tick"));

    env.ok(&["start", &id]);
    wait_for("ticks on the console", Duration::from_secs(20), || {
        env.console(&id).matches("tick").count() >= 2
    });
    assert_eq!(env.ps_row(&id)[2], "running");
    let logs = env.ok(&["logs", &name]);
    assert!(logs.contains("tick\ntick\n"), "{logs}");

    // Paused: the console stops growing.
    env.ok(&["pause", &name]);
    assert_eq!(env.ps_row(&id)[2], "paused");
    let before = env.console(&id).len();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(env.console(&id).len(), before, "the guest ran while paused");

    env.ok(&["resume", &name]);
    assert_eq!(env.ps_row(&id)[2], "running");
    wait_for("ticks after resume", Duration::from_secs(10), || {
        env.console(&id).len() > before
    });

    // rm of a running VM needs -f.
    env.fails(&["rm", &id], &["is running", "vmctl vm stop"]);

    env.ok(&["stop", "-t", "5", &name]);
    assert!(!process_alive(pid), "VMM pid {pid} survived stop");
    let row = env.ps_row(&id);
    assert_eq!((row[2].as_str(), row[3].as_str()), ("exited", "-"));
    // The configuration of an exited VM is still there to inspect; the API is not.
    assert!(env.ok(&["inspect", &id]).contains("kernel_image_path"));
    env.fails(&["pause", &id], &["has exited"]);

    env.ok(&["rm", &name]);
    assert!(!env.vm_dir(&id).exists());
    assert!(!sock.exists());
    assert!(!env.ok(&["ps"]).contains(&id));
}

#[test]
fn rm_force_kills_a_running_vm_and_logs_follow_ends_with_it() {
    let env = VmEnv::new();
    let k = guest::build("ticker");
    let id = env
        .ok(&["create", "--kernel", k.to_str().unwrap(), "--memory", "16"])
        .trim()
        .to_string();
    env.ok(&["start", &id]);
    let pid = env.pid(&id);
    // logs -f follows until the VMM is gone.
    let follower = std::process::Command::new(vmctl_tests::vmctl_bin::path())
        .args(["vm", "logs", "-f", &id])
        .env("VMCTL_VM_ROOT", env.root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("ticks", Duration::from_secs(20), || {
        env.console(&id).contains("tick")
    });
    env.ok(&["rm", "-f", &id]);
    assert!(!process_alive(pid));
    assert!(!env.vm_dir(&id).exists());
    let out = follower.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("tick"));
}

#[test]
fn a_guest_that_ends_shows_as_exited() {
    let env = VmEnv::new();
    let k = guest::build("hello");
    let id = env
        .ok(&["create", "--kernel", k.to_str().unwrap(), "--memory", "16"])
        .trim()
        .to_string();
    env.ok(&["start", &id]);
    let pid = env.pid(&id);
    wait_for("the VMM to exit", Duration::from_secs(20), || {
        !process_alive(pid)
    });
    assert_eq!(env.ps_row(&id)[2], "exited");
    assert!(env.ok(&["logs", &id]).contains("hello from ring 3"));
    env.ok(&["rm", &id]);
}

#[test]
fn vmctl_run_serves_the_api_while_the_guest_runs() {
    use api::types::{VmState, VmStateRequest};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run.sock");
    let k = guest::build("ticker");
    let mut child = std::process::Command::new(vmctl_tests::vmctl_bin::path())
        .args(["run", "--memory", "16", "--name", "runvm", "--api-sock"])
        .arg(&sock)
        .arg("--kernel")
        .arg(&k)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for("the API socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let client = api::ApiClient::new(&sock);
    let info = client.instance_info().unwrap();
    assert_eq!((info.id.as_str(), info.state), ("runvm", VmState::Running));
    let config = client.vm_config().unwrap();
    assert_eq!(config.machine_config.mem_size_mib, 16);
    client.set_vm_state(VmStateRequest::Paused).unwrap();
    assert_eq!(client.instance_info().unwrap().state, VmState::Paused);
    client.set_vm_state(VmStateRequest::Resumed).unwrap();
    // Ticks come every ~0.1 s; let a few reach stdout.
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("tick"), "{out}");
    assert!(!sock.exists(), "the API socket outlived vmctl run");
}
