//! `vmctl run --network bridge`: containers on a test bridge reach each other, published
//! ports are reached from the host loopback and from a separate network namespace, and no
//! veth, iptables rule or address is left after stop, rm, exit or a failed start.

mod container_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use container_common::*;

/// A host port unlikely to be used by a concurrent test process.
fn host_port() -> u16 {
    20000 + ((std::process::id() * 13 + unique() * 7919) % 30000) as u16
}

/// The address of a running container on its bridge.
fn container_ip(env: &Env, name: &str) -> String {
    let out = env.ok(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"]);
    let cidr = out.split_whitespace().skip_while(|w| *w != "inet").nth(1);
    cidr.unwrap().split('/').next().unwrap().to_string()
}

/// Starts a detached busybox httpd serving `body` on port 8080.
fn web(env: &Env, name: &str, body: &str, extra: &[&str]) -> String {
    let script = format!("echo {body} > /tmp/index.html; exec httpd -f -p 8080 -h /tmp");
    let mut args = vec!["run", "-d", "--init", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", &script]);
    env.ok(&args)
}

fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

/// A shell loop that fetches /index.html from HOST:PORT with busybox nc (its wget crashes
/// on this host) and prints the body.
fn fetch_script(host: &str, port: &str) -> String {
    format!(
        "for i in $(seq 50); do r=$(printf \"GET /index.html HTTP/1.0\\r\\n\\r\\n\" | \
         nc -w 2 {host} {port}) && [ -n \"$r\" ] && echo \"$r\" | tail -n 1 && exit 0; \
         sleep 0.1; done; exit 1"
    )
}

#[test]
fn two_containers_on_a_bridge_reach_each_other() {
    let env = Env::new();
    let id = web(&env, "srv", "pong", &[]);
    let ip = container_ip(&env, "srv");
    assert!(ip.starts_with(env.subnet.trim_end_matches("0/24")), "{ip}");
    assert_eq!(env.bridge_ports().len(), 1);
    let script = fetch_script(&ip, "8080");
    let o = env.run(&["run", "--rm", "--", "sh", "-c", &script]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "pong");
    // --network none has no route to it.
    let o = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--",
        "nc",
        "-w",
        "1",
        &ip,
        "8080",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unreachable"),
        "{}",
        text(&o.stderr)
    );
    // --network host shares the host's links (the test bridge among them).
    let o = env.run(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--",
        "ip",
        "link",
        "show",
        &env.bridge,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // `stop` detaches (the monitor and stop itself); `rm` removes the rest.
    env.ok(&["stop", "-t", "3", "srv"]);
    assert!(env.bridge_ports().is_empty(), "{:?}", env.bridge_ports());
    assert_eq!(env.attachments(), 0);
    env.ok(&["rm", "srv"]);
    env.assert_gone(&id);
    env.assert_empty();
}

#[test]
fn published_ports_from_loopback_and_another_netns() {
    let env = Env::new();
    let port = host_port();
    let publish = format!("{port}:8080");
    let id = web(&env, "pub", "published", &["-p", &publish]);
    let rules = iptables_mentioning(&id);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].contains(&format!("--dport {port}")), "{rules:?}");

    // From the host loopback.
    let addr = format!("127.0.0.1:{port}");
    let mut got = None;
    assert!(
        wait_for(10, || {
            got = http_get(&addr);
            got.as_deref().is_some_and(|r| r.contains("published"))
        }),
        "{got:?}"
    );

    // From a separate network namespace, through a veth to the host.
    let ns = TestNetns::new();
    let script = fetch_script(&ns.host_ip, &port.to_string());
    let (ok, out) = sh(&format!(
        "ip netns exec {} busybox sh -c '{script}'",
        ns.name
    ));
    assert!(ok && out.trim() == "published", "{out}");

    // A second container cannot take the same host port: the failed start leaves nothing.
    let o = env.run(&[
        "run", "-d", "--name", "clash", "-p", &publish, "--", "sleep", "60",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains(&port.to_string()),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(env.ok(&["ps", "-a", "-q"]), id);
    assert_eq!(env.bridge_ports().len(), 1);
    assert_eq!(env.attachments(), 1);
    assert_eq!(iptables_mentioning("clash").len(), 0);

    env.ok(&["rm", "-f", "pub"]);
    env.assert_gone(&id);
    assert!(http_get(&addr).is_none_or(|r| !r.contains("published")));
    env.assert_empty();
}

#[test]
fn exit_and_rm_detach_without_stop() {
    let env = Env::new();
    let port = host_port().to_string();
    // Detached: the monitor detaches when the container exits on its own.
    let id = env.ok(&[
        "run",
        "-d",
        "-p",
        &format!("{port}:80/udp"),
        "--",
        "sleep",
        "0.3",
    ]);
    assert!(wait_for(10, || env
        .ok(&["ps", "-a"])
        .contains("Exited (0)")));
    assert!(wait_for(5, || env.attachments() == 0
        && iptables_mentioning(&id).is_empty()));
    assert!(env.bridge_ports().is_empty());
    env.ok(&["rm", &id]);
    env.assert_gone(&id);
    // Foreground with --rm, and detached with --rm.
    let o = env.run(&["run", "--rm", "-p", &format!("{port}:80"), "--", "true"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    env.ok(&[
        "run",
        "-d",
        "--rm",
        "-p",
        &format!("{port}:80"),
        "--",
        "true",
    ]);
    assert!(wait_for(10, || env.ok(&["ps", "-a", "-q"]).is_empty()));
    assert!(wait_for(5, || env.attachments() == 0));
    assert!(iptables_mentioning(&format!("--dport {port} ")).is_empty());
    env.assert_empty();
}

/// A network namespace joined to the host by a veth pair on a private /30.
struct TestNetns {
    name: String,
    host_ip: String,
}

impl TestNetns {
    fn new() -> TestNetns {
        let n = unique();
        let tag = format!("{:04x}{n}", std::process::id() % 0x10000);
        let name = format!("vcn{tag}");
        let base = (n % 60) * 4;
        let net = format!("172.31.{}", std::process::id() % 250);
        let host_ip = format!("{net}.{}", base + 1);
        let cmds = format!(
            "ip netns add {name} && ip link add vcy{tag} type veth peer name vcz{tag} netns {name} \
             && ip addr add {host_ip}/30 dev vcy{tag} && ip link set vcy{tag} up \
             && ip -n {name} addr add {net}.{}/30 dev vcz{tag} && ip -n {name} link set vcz{tag} up \
             && ip -n {name} link set lo up && ip -n {name} route add default via {host_ip}",
            base + 2
        );
        let ns = TestNetns { name, host_ip };
        let (ok, out) = sh(&cmds);
        assert!(ok, "{cmds}: {out}");
        ns
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair.
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}
