//! Metrics of a `vmctl vm` microVM on real KVM: vCPU exits by kind counted in the vCPU threads,
//! virtio-blk counters from the device, boot time; written on FlushMetrics and when the VM ends.

mod vm_lifecycle_common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use api::types::ActionType;
use api::ApiClient;
use vm_lifecycle_common::{process_alive, wait_for, VmEnv};
use vmctl_tests::guest;

fn last_line(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().last().expect("a metrics line");
    serde_json::from_str(line).unwrap()
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn block_counters_and_exits_after_a_virtio_blk_guest() {
    let env = VmEnv::new();
    let img = tempfile::Builder::new().suffix(".img").tempfile().unwrap();
    let mut data = vec![0u8; 64 * 1024];
    data[..16].copy_from_slice(b"VMCTL-BLOCK-TEST");
    img.as_file().write_all(&data).unwrap();
    let k = guest::build("virtio_blk");
    let disk = format!("{},id=data", img.path().display());
    let id = env
        .ok(&[
            "create",
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "16",
            "--disk",
            &disk,
        ])
        .trim()
        .to_string();
    let pid = env.pid(&id);
    env.ok(&["start", &id]);
    wait_for("the guest to finish", Duration::from_secs(30), || {
        !process_alive(pid)
    });
    assert!(
        env.console(&id).contains("rd=00:VMCTL-BLOCK-TEST"),
        "{}",
        env.console(&id)
    );

    let m = last_line(&env.vm_dir(&id).join("metrics.json"));
    let exits = &m["vcpu_exits"];
    assert!(n(&exits["io_out"]) > 10, "{exits}"); // the console lines
    assert!(n(&exits["mmio_write"]) > 5, "{exits}"); // virtio-mmio set-up
    assert!(n(&exits["mmio_read"]) > 2, "{exits}");
    let b = &m["block"]["data"];
    assert_eq!(n(&b["read_count"]), 1, "{b}");
    assert_eq!(n(&b["read_bytes"]), 512, "{b}");
    assert_eq!(n(&b["write_count"]), 1, "{b}");
    assert_eq!(n(&b["write_bytes"]), 512, "{b}");
    assert_eq!(n(&b["flush_count"]), 1, "{b}");
    assert_eq!(n(&b["errors"]), 0, "{b}");
    assert_eq!(n(&m["api"]["errors"]), 0, "{m}");
    env.ok(&["rm", &id]);
}

#[test]
fn flush_metrics_reports_growing_exit_counts_and_the_boot_time() {
    let env = VmEnv::new();
    let k = guest::build("ticker");
    let id = env
        .ok(&["create", "--kernel", k.to_str().unwrap(), "--memory", "16"])
        .trim()
        .to_string();
    env.ok(&["start", &id]);
    wait_for("ticks", Duration::from_secs(20), || {
        env.console(&id).contains("tick")
    });
    let client = ApiClient::new(env.vm_dir(&id).join("api.sock"));
    let metrics = env.vm_dir(&id).join("metrics.json");
    client.action(ActionType::FlushMetrics).unwrap();
    let first = last_line(&metrics);
    assert!(n(&first["boot_time_us"]) > 0, "{first}");
    let a = n(&first["vcpu_exits"]["io_out"]);
    assert!(a >= 5, "one exit per console byte: {first}");
    let ticks = env.console(&id).matches("tick").count();
    wait_for("more ticks", Duration::from_secs(20), || {
        env.console(&id).matches("tick").count() > ticks + 1
    });
    client.action(ActionType::FlushMetrics).unwrap();
    let second = last_line(&metrics);
    assert!(n(&second["vcpu_exits"]["io_out"]) >= a + 5, "{second}");
    assert!(n(&second["utc_timestamp_ms"]) >= n(&first["utc_timestamp_ms"]));
    env.ok(&["rm", "-f", &id]);
}

fn image(path: &Path, tag: &[u8; 16], kib: usize) {
    let mut data = vec![0u8; kib * 1024];
    data[..16].copy_from_slice(tag);
    std::fs::write(path, data).unwrap();
}

#[test]
fn patch_drive_path_swaps_the_disk_under_a_running_guest() {
    let env = VmEnv::new();
    let imgs = tempfile::tempdir().unwrap();
    let (a, b) = (imgs.path().join("a.img"), imgs.path().join("b.img"));
    image(&a, b"FIRST-DISK-IMAGE", 64);
    image(&b, b"SWAPPED-IN-IMAGE", 96);
    let k = guest::build("blk_swap");
    let disk = format!("{},id=data", a.display());
    let id = env
        .ok(&[
            "create",
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "16",
            "--disk",
            &disk,
        ])
        .trim()
        .to_string();
    let pid = env.pid(&id);
    env.ok(&["start", &id]);
    wait_for("the guest to wait", Duration::from_secs(30), || {
        env.console(&id).contains("waiting")
    });
    assert!(
        env.console(&id).contains("a=FIRST-DISK-IMAGE cap=80"),
        "{}",
        env.console(&id)
    );
    let client = ApiClient::new(env.vm_dir(&id).join("api.sock"));
    // A missing file is refused and changes nothing.
    let missing = imgs.path().join("missing.img");
    let e = client
        .patch(
            "/drives/data",
            &serde_json::json!({"drive_id": "data", "path_on_host": missing}),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.img"), "{e}");
    assert!(!env.console(&id).contains("b="));
    // One request per 300 ms from now on: the guest's next two reads are held apart.
    client
        .patch(
            "/drives/data",
            &serde_json::json!({"drive_id": "data",
                "rate_limiter": {"ops": {"size": 1, "refill_time": 300}}}),
        )
        .unwrap();
    client
        .patch(
            "/drives/data",
            &serde_json::json!({"drive_id": "data", "path_on_host": b}),
        )
        .unwrap();
    wait_for("the guest to finish", Duration::from_secs(30), || {
        !process_alive(pid)
    });
    let console = env.console(&id);
    assert!(
        console.contains("b=SWAPPED-IN-IMAGE cap=c0\nc=SWAPPED-IN-IMAGE cap=c0\ndone"),
        "{console}"
    );
    let m = last_line(&env.vm_dir(&id).join("metrics.json"));
    assert_eq!(n(&m["block"]["data"]["read_count"]), 3, "{m}");
    assert!(n(&m["block"]["data"]["rate_limited"]) >= 1, "{m}");
    env.ok(&["rm", &id]);
}

#[test]
fn vsock_counters_after_guest_and_host_initiated_streams() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::{UnixListener, UnixStream};
    let env = VmEnv::new();
    let socks = tempfile::tempdir().unwrap();
    let uds = socks.path().join("v.sock");
    let listener = UnixListener::bind(format!("{}_1234", uds.display())).unwrap();
    let k = guest::build("virtio_vsock");
    let spec = format!("cid=7,uds={}", uds.display());
    let id = env
        .ok(&[
            "create",
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "16",
            "--vsock",
            &spec,
        ])
        .trim()
        .to_string();
    let pid = env.pid(&id);
    env.ok(&["start", &id]);
    let t = Some(Duration::from_secs(20));
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(t).unwrap();
    let mut got = [0u8; 16];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello-from-guest");
    s.write_all(b"pong-from-host!!").unwrap();
    assert_eq!(s.read(&mut got).unwrap(), 0);
    let mut c = UnixStream::connect(&uds).unwrap();
    c.set_read_timeout(t).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("OK "), "{line:?}");
    c.write_all(b"ping-over-vsock!").unwrap();
    let mut echo = [0u8; 16];
    r.read_exact(&mut echo).unwrap();
    drop((r, c));
    wait_for("the guest to finish", Duration::from_secs(30), || {
        !process_alive(pid)
    });
    assert!(env.console(&id).contains("done"), "{}", env.console(&id));
    let m = last_line(&env.vm_dir(&id).join("metrics.json"));
    let v = &m["vsock"];
    assert_eq!(n(&v["conns_added"]), 2, "{v}");
    // Guest to host: "hello-from-guest" and the echo; host to guest: the pong and the ping.
    assert_eq!(n(&v["tx_bytes"]), 32, "{v}");
    assert!(n(&v["rx_bytes"]) >= 32, "{v}");
    env.ok(&["rm", &id]);
}
