//! Networking of VM-backed runs: a VM's TAP sits on the SAME bridge and IPAM as containers
//! (a container and a VM get distinct addresses in one subnet and talk to each other), `-p`
//! publishes to a VM, `--network host` is refused for VMs, and no TAP, address lease or DNAT
//! rule is left after a normal end, SIGTERM, or a SIGKILL of the supervisor followed by the
//! record's release (what `vmctl rm` does). Each test has its own bridge, subnet, state root and
//! VM record root (tests/tests/container_common). Hosted VMs run under QEMU (TCG here:
//! seconds); one microVM test covers the API code path plus networking in a single boot.

mod container_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use container_common::*;

/// A host port unlikely to be used by a concurrent test process.
fn host_port() -> u16 {
    21000 + ((std::process::id() * 17 + unique() * 7919) % 29000) as u16
}

/// The test's VM record root: short (the vsock socket path in it must fit 107 bytes), unique
/// per test bridge, removed by [`VmRoot`] when the test ends.
fn vm_root(env: &Env) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/tmp/vn-{}", env.bridge))
}

struct VmRoot(std::path::PathBuf);

impl VmRoot {
    fn new(env: &Env) -> VmRoot {
        VmRoot(vm_root(env))
    }
}

impl Drop for VmRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vmctl run --isolation LEVEL` with the test's env and VM record root.
fn vm_cmd(env: &Env, level: &str, flags: &[&str], cmd: &[&str]) -> Command {
    let mut c = env.cmd(&["run", "--isolation", level]);
    c.env("VMCTL_VM_ROOT", vm_root(env))
        .args(flags)
        .arg("--")
        .args(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn wait_child(mut child: Child, limit: Duration) -> Output {
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("vmctl did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn vm_run(env: &Env, level: &str, flags: &[&str], cmd: &[&str]) -> Output {
    let limit = Duration::from_secs(if level == "microvm" { 900 } else { 180 });
    wait_child(vm_cmd(env, level, flags, cmd).spawn().unwrap(), limit)
}

/// The address of a running container on its bridge.
fn container_ip(env: &Env, name: &str) -> String {
    let out = env.ok(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"]);
    let cidr = out.split_whitespace().skip_while(|w| *w != "inet").nth(1);
    cidr.unwrap().split('/').next().unwrap().to_string()
}

/// A detached container serving `body` with busybox httpd on port 8080.
fn web(env: &Env, name: &str, body: &str) {
    let script = format!("echo {body} > /tmp/index.html; exec httpd -f -p 8080 -h /tmp");
    env.ok(&[
        "run", "-d", "--init", "--name", name, "--", "sh", "-c", &script,
    ]);
}

/// Fetches /index.html from HOST:PORT with busybox nc (`wait` seconds per try), retrying, and
/// prints the body.
fn fetch_script(host: &str, port: &str, wait: u32) -> String {
    format!(
        "for i in $(seq 100); do r=$(printf \"GET /index.html HTTP/1.0\\r\\n\\r\\n\" | \
         nc -w {wait} {host} {port}) && [ -n \"$r\" ] && echo \"$r\" | tail -n 1 && break; \
         sleep 0.1; done"
    )
}

fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

/// TAP devices on the test bridge.
fn taps(env: &Env) -> Vec<String> {
    env.bridge_ports()
        .into_iter()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|n| n.starts_with("vt"))
        })
        .collect()
}

/// Asserts that no VM of this test left a TAP, lease, DNAT rule or record.
fn assert_vm_gone(env: &Env) {
    assert!(taps(env).is_empty(), "TAP left: {:?}", taps(env));
    let ipam = env
        .root
        .path()
        .join("network")
        .join(&env.bridge)
        .join("ipam.json");
    if let Ok(b) = std::fs::read(&ipam) {
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        for a in v["attachments"].as_object().unwrap().values() {
            assert!(
                !a["veth_host"].as_str().unwrap().starts_with("vt"),
                "VM lease left: {a}"
            );
        }
    }
    // Port rules carry "vmctl:BRIDGE:ID" (the bridge's own rules only "vmctl:BRIDGE").
    let rules = iptables_mentioning(&format!("vmctl:{}:", env.bridge));
    assert!(rules.is_empty(), "DNAT rules left: {rules:?}");
    let left: Vec<_> = std::fs::read_dir(vm_root(env))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "records left: {left:?}");
}

/// Prints the VM's eth0 address, then the container's page fetched by address (`wait` seconds
/// per try: a microVM's network stack is guest ring-0 work, emulated and slow on nested-PVM
/// hosts, where the first ARP and handshake take tens of seconds).
fn vm_fetch_script(ip: &str, wait: u32) -> String {
    format!(
        "ip -4 -o addr show eth0 | awk '{{print $4}}'; {}",
        fetch_script(ip, "8080", wait)
    )
}

fn check_fetch(env: &Env, out: &Output, container: &str) {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let (vm_ip, prefix) = lines[0].split_once('/').unwrap();
    let net = env.subnet.trim_end_matches("0/24");
    assert!(vm_ip.starts_with(net) && prefix == "24", "{}", lines[0]);
    assert_ne!(vm_ip, container);
    assert_eq!(lines[1], "pong", "{stdout}");
}

#[test]
fn hosted_vm_and_container_share_the_bridge() {
    let env = Env::new();
    let _vms = VmRoot::new(&env);
    web(&env, "srv", "pong");
    let ip = container_ip(&env, "srv");
    let t = Instant::now();
    let out = vm_run(
        &env,
        "hosted",
        &["--rm"],
        &["sh", "-c", &vm_fetch_script(&ip, 2)],
    );
    eprintln!("hosted run with networking: {:?}", t.elapsed());
    check_fetch(&env, &out, &ip);
    assert_vm_gone(&env);
    // The container's attachment is untouched.
    assert_eq!(env.attachments(), 1);
}

#[test]
fn microvm_through_the_api_on_the_bridge() {
    let env = Env::new();
    let _vms = VmRoot::new(&env);
    web(&env, "srv", "pong");
    let ip = container_ip(&env, "srv");
    let t = Instant::now();
    let script = vm_fetch_script(&ip, 90);
    let out = vm_run(&env, "microvm", &["--rm"], &["sh", "-c", &script]);
    eprintln!("microvm run with networking: {:?}", t.elapsed());
    check_fetch(&env, &out, &ip);
    assert_vm_gone(&env);
    assert_eq!(env.attachments(), 1);
}

#[test]
fn published_port_reaches_a_hosted_vm_until_sigterm() {
    let env = Env::new();
    let _vms = VmRoot::new(&env);
    let port = host_port();
    let publish = format!("127.0.0.1:{port}:80");
    let script = "echo vm-page > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    let child = vm_cmd(
        &env,
        "hosted",
        &["--rm", "--init", "-p", &publish],
        &["sh", "-c", script],
    )
    .spawn()
    .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let got = wait_for(120, || {
        http_get(&addr).is_some_and(|r| r.trim_end().ends_with("vm-page"))
    });
    let rules = iptables_mentioning(&format!("vmctl:{}:", env.bridge));
    assert!(rules.iter().any(|r| r.contains("DNAT")), "{rules:?}");
    assert_eq!(taps(&env).len(), 1);
    // SAFETY: kill(2) with integers on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait_child(child, Duration::from_secs(60));
    assert!(got, "no answer on {addr}; stderr: {}", text(&out.stderr));
    assert_vm_gone(&env);
    assert!(http_get(&addr).is_none());
}

#[test]
fn killed_supervisor_leaves_a_record_that_releases_the_network() {
    let env = Env::new();
    let _vms = VmRoot::new(&env);
    let port = host_port();
    let publish = format!("127.0.0.1:{port}:80");
    let mut child = vm_cmd(
        &env,
        "hosted",
        &["--name", "victim", "-p", &publish],
        &["sh", "-c", "echo up; sleep 600"],
    )
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut b = [0u8; 3];
    stdout.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"up\n");
    // SAFETY: kill(2) with integers on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert_eq!(
        taps(&env).len(),
        1,
        "the TAP outlives a SIGKILLed supervisor"
    );
    // What `vmctl rm` does (guest::registry::remove): release from the record, then remove it.
    let dirs: Vec<_> = std::fs::read_dir(vm_root(&env))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(dirs.len(), 1);
    let state = std::fs::read(dirs[0].path().join("state.json")).unwrap();
    let rec: guest::registry::Record = serde_json::from_slice(&state).unwrap();
    let net = rec
        .network
        .clone()
        .expect("the record names the VM's network");
    assert_eq!(net.bridge, env.bridge);
    wait_for(10, || {
        !std::path::Path::new(&format!("/proc/{}", rec.vmm_pid)).exists()
    });
    net.release(&rec.id).unwrap();
    net.release(&rec.id).unwrap(); // idempotent
    std::fs::remove_dir_all(dirs[0].path()).unwrap();
    assert_vm_gone(&env);
}

#[test]
fn host_network_and_bad_ports_are_refused_before_any_vm() {
    let env = Env::new();
    let _vms = VmRoot::new(&env);
    for (flags, want) in [
        (
            &["--network", "host"][..],
            "--network host is not possible for a VM",
        ),
        (
            &["--network", "none", "-p", "8080:80"][..],
            "needs --network bridge",
        ),
        (&["-p", "80:eighty"][..], "invalid port mapping"),
    ] {
        let out = vm_run(&env, "hosted", flags, &["true"]);
        assert_eq!(out.status.code(), Some(125), "{flags:?}");
        assert!(
            text(&out.stderr).contains(want),
            "{flags:?}: {}",
            text(&out.stderr)
        );
        assert_vm_gone(&env);
    }
}
