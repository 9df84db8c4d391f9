//! Bridge networking against the real kernel: veth pairs, IPAM, ping between "containers"
//! (test network namespaces), published ports reached from another namespace and from
//! loopback, clean detach, and clear errors. All traffic stays in test namespaces/loopback.

mod network_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use network_common::*;
use runtime::network::{NetError, PortMapping};

#[test]
fn two_containers_on_a_bridge_ping_each_other() {
    let br = TestBridge::new();
    let (a, b) = (Netns::new(), Netns::new());
    let ida = format!("a{}", tag());
    let idb = format!("b{}", tag());
    let att_a = br.net().attach(&ida, a.pid(), &[]).unwrap();
    let att_b = br.net().attach(&idb, b.pid(), &[]).unwrap();
    assert_ne!(att_a.ip, att_b.ip);
    assert!(br.net().subnet().contains(att_a.ip) && br.net().subnet().contains(att_b.ip));
    assert_eq!(att_a.gateway, br.net().gateway());

    let (ok, out) = a.sh("ip -4 addr show dev eth0; ip route");
    assert!(ok, "{out}");
    assert!(out.contains(&format!("inet {}/24", att_a.ip)), "{out}");
    assert!(
        out.contains(&format!("default via {}", att_a.gateway)),
        "{out}"
    );
    let (ok, out) = a.sh("ip link show lo");
    assert!(ok && out.contains("UP"), "lo is not up: {out}");

    let (ok, out) = a.sh(&format!("busybox ping -c 2 -W 3 {}", att_b.ip));
    assert!(ok, "a cannot ping b: {out}");
    let (ok, out) = b.sh(&format!("busybox ping -c 1 -W 3 {}", att_a.gateway));
    assert!(ok, "b cannot ping the gateway: {out}");

    br.net().detach(&ida).unwrap();
    br.net().detach(&idb).unwrap();
}

#[test]
fn published_ports_reach_the_container_from_another_netns_and_loopback() {
    let br = TestBridge::new();
    let c = Netns::new();
    let client = Client::new();
    let id = format!("p{}", tag());
    let (tcp, lo, udp) = (port(), port(), port());
    let publish: Vec<PortMapping> = [
        format!("{tcp}:80"),
        format!("127.0.0.1:{lo}:81"),
        format!("{udp}:82/udp"),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let att = br.net().attach(&id, c.pid(), &publish).unwrap();
    assert_eq!(att.ports, publish);

    // Servers inside the container's namespace.
    let l80 = c
        .run(|| TcpListener::bind("0.0.0.0:80").unwrap())
        .join()
        .unwrap();
    let l81 = c
        .run(|| TcpListener::bind("0.0.0.0:81").unwrap())
        .join()
        .unwrap();
    let u82 = c
        .run(|| UdpSocket::bind("0.0.0.0:82").unwrap())
        .join()
        .unwrap();
    let serve = |l: TcpListener, msg: &'static [u8]| {
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(msg).unwrap();
        })
    };
    let t80 = serve(l80, b"hello from 80");
    let t81 = serve(l81, b"hello from 81");
    let t82 = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (n, from) = u82.recv_from(&mut buf).unwrap();
        u82.send_to(&[b"echo:", &buf[..n]].concat(), from).unwrap();
    });

    // TCP and UDP from the client namespace to the host's address.
    let host = client.host_ip.clone();
    let got = client
        .ns
        .run(move || {
            let addr = format!("{host}:{tcp}").parse().unwrap();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            u.send_to(b"ping", format!("{host}:{udp}")).unwrap();
            let mut buf = [0u8; 64];
            let n = u.recv(&mut buf).unwrap();
            (out, String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .join()
        .unwrap();
    assert_eq!(got.0, "hello from 80");
    assert_eq!(got.1, "echo:ping");

    // 127.0.0.1 on the host.
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{lo}").parse().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "hello from 81");
    for t in [t80, t81, t82] {
        t.join().unwrap();
    }

    // Detach removes the DNAT rules.
    assert_eq!(iptables_lines(&format!("vmctl:{}:{id}", br.name)).len(), 3);
    br.net().detach(&id).unwrap();
    assert!(iptables_lines(&format!("vmctl:{}:{id}", br.name)).is_empty());
}

#[test]
fn detach_leaves_nothing_and_frees_the_address() {
    let br = TestBridge::new();
    let c = Netns::new();
    let id = format!("d{}", tag());
    let port = port();
    let att = br
        .net()
        .attach(&id, c.pid(), &[format!("{port}:80").parse().unwrap()])
        .unwrap();
    assert!(link_exists(&att.veth_host));
    assert_eq!(br.net().attachments().unwrap(), vec![att.clone()]);

    br.net().detach(&id).unwrap();
    assert!(!link_exists(&att.veth_host), "veth left behind");
    assert!(!c.sh("ip link show eth0").0, "eth0 left in the container");
    assert!(iptables_lines(&format!("vmctl:{}:{id}", br.name)).is_empty());
    assert!(br.net().attachments().unwrap().is_empty());
    br.net().detach(&id).unwrap(); // idempotent

    // The address is free again.
    let again = br.net().attach(&id, c.pid(), &[]).unwrap();
    assert_eq!(again.ip, att.ip);
    br.net().detach(&id).unwrap();

    // Destroying the bridge removes the bridge, its rules and its state.
    let mut br = br;
    let name = br.name.clone();
    br.net.take().unwrap().destroy().unwrap();
    assert!(!link_exists(&name));
    assert!(iptables_lines(&format!("vmctl:{name}")).is_empty());
    assert!(iptables_lines(&format!("VMCTL-{name}")).is_empty());
    assert!(!br.state.path().join(&name).exists());
}

#[test]
fn concurrent_attaches_get_distinct_addresses() {
    let br = std::sync::Arc::new(TestBridge::new());
    let nss: Vec<Netns> = (0..4).map(|_| Netns::new()).collect();
    let handles: Vec<_> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let br = br.clone();
            let pid = ns.pid();
            let id = format!("c{i}x{}", tag());
            std::thread::spawn(move || (id.clone(), br.net().attach(&id, pid, &[]).unwrap()))
        })
        .collect();
    let atts: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ips: Vec<_> = atts.iter().map(|(_, a)| a.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 4);
    for (id, _) in &atts {
        br.net().detach(id).unwrap();
    }
}

#[test]
fn failed_attach_leaves_nothing_behind() {
    let br = TestBridge::new();
    let c = Netns::new();
    let id = format!("f{}", tag());
    let port = port();
    let first = br
        .net()
        .attach(&id, c.pid(), &[format!("{port}:80").parse().unwrap()])
        .unwrap();

    // Same container id again: refused.
    let err = br.net().attach(&id, c.pid(), &[]).unwrap_err();
    assert!(matches!(err, NetError::Conflict(_)), "{err}");
    // Same host port for another container: refused, naming the port.
    let other = Netns::new();
    let id2 = format!("g{}", tag());
    let err = br
        .net()
        .attach(&id2, other.pid(), &[format!("{port}:90").parse().unwrap()])
        .unwrap_err();
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    // A second attachment into a netns that already has eth0 fails midway: rolled back.
    let id3 = format!("h{}", tag());
    let err = br.net().attach(&id3, c.pid(), &[]).unwrap_err();
    assert!(matches!(err, NetError::Command { .. }), "{err}");
    let (_, links) = sh("ip -o link show");
    let ours: Vec<&str> = links
        .lines()
        .filter(|l| l.contains(&format!("master {}", br.name)))
        .collect();
    assert_eq!(ours.len(), 1, "only the first veth may remain: {ours:?}");
    assert_eq!(br.net().attachments().unwrap(), vec![first]);
    // A process in the host's namespace (here: ourselves) is refused untouched.
    let err = br
        .net()
        .attach("hostns", std::process::id() as i32, &[])
        .unwrap_err();
    assert!(
        err.to_string().contains("host's network namespace"),
        "{err}"
    );
    assert_eq!(br.net().attachments().unwrap().len(), 1);
    // A process that does not exist.
    let err = br.net().attach("nobody", 0x3fff_fff0, &[]).unwrap_err();
    assert!(err.to_string().contains("1073741808"), "{err}");
    br.net().detach(&id).unwrap();
}

#[test]
fn bad_inputs_give_clear_errors() {
    for (bad, needle) in [
        ("80", "\"80\""),
        ("x:80", "\"x\""),
        ("8080:0", "\"0\""),
        ("70000:80", "\"70000\""),
        ("8080:80/sctp", "\"sctp\""),
        ("1.2.3:8080:80", "\"1.2.3\""),
        ("a:b:c:d", "a:b:c:d"),
    ] {
        let err = bad.parse::<PortMapping>().unwrap_err().to_string();
        assert!(
            err.contains(needle) && err.contains("HOST_PORT:CONTAINER_PORT"),
            "{bad}: {err}"
        );
    }
    let p: PortMapping = "127.0.0.1:8080:80/udp".parse().unwrap();
    assert_eq!(p.to_string(), "127.0.0.1:8080:80/udp");
    assert_eq!(
        "0.0.0.0:8080:80".parse::<PortMapping>().unwrap().host_ip,
        None
    );

    let err = "bogus"
        .parse::<runtime::network::NetworkMode>()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bogus") && err.contains("none, host or bridge"),
        "{err}"
    );
    let err = "10.0.0.0/33"
        .parse::<runtime::network::Ipv4Net>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("33"), "{err}");
    let err = "10.0.0/16"
        .parse::<runtime::network::Ipv4Net>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("10.0.0/16"), "{err}");
    let state = tempfile::tempdir().unwrap();
    let err = runtime::network::BridgeNetwork::open(runtime::network::BridgeConfig {
        name: "a-name-that-is-way-too-long".into(),
        state_dir: state.path().into(),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("a-name-that-is-way-too-long"), "{err}");
}

#[test]
fn prune_frees_what_a_dead_container_left() {
    let br = TestBridge::new();
    let id = format!("z{}", tag());
    let port = port();
    let att = {
        let c = Netns::new();
        br.net()
            .attach(&id, c.pid(), &[format!("{port}:80").parse().unwrap()])
            .unwrap()
        // The namespace dies here without a detach; its veth goes with it.
    };
    for _ in 0..100 {
        if !link_exists(&att.veth_host) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!link_exists(&att.veth_host));
    assert_eq!(iptables_lines(&format!("vmctl:{}:{id}", br.name)).len(), 1);
    assert_eq!(br.net().prune().unwrap(), vec![id.clone()]);
    assert!(br.net().attachments().unwrap().is_empty());
    assert!(iptables_lines(&format!("vmctl:{}:{id}", br.name)).is_empty());
}

#[test]
fn none_mode_gets_loopback_up() {
    let ns = Netns::new();
    assert!(
        !ns.sh("ip link show lo").1.contains(",UP"),
        "lo starts down"
    );
    runtime::network::setup_loopback(ns.pid()).unwrap();
    let (ok, out) = ns.sh("ip link show lo");
    assert!(ok && out.contains(",UP"), "{out}");
    let (ok, out) = ns.sh("busybox ping -c 1 -W 2 127.0.0.1");
    assert!(ok, "{out}");
    assert_eq!(
        "none".parse::<runtime::network::NetworkMode>().unwrap(),
        runtime::network::NetworkMode::None
    );
    assert!(!runtime::network::NetworkMode::Host.needs_netns());
}

#[test]
fn a_container_reaches_another_through_its_published_port() {
    let br = TestBridge::new();
    let (server, client) = (Netns::new(), Netns::new());
    let (ids, idc) = (format!("s{}", tag()), format!("c{}", tag()));
    let port = port();
    br.net()
        .attach(&ids, server.pid(), &[format!("{port}:80").parse().unwrap()])
        .unwrap();
    let att_c = br.net().attach(&idc, client.pid(), &[]).unwrap();
    let l = server
        .run(|| TcpListener::bind("0.0.0.0:80").unwrap())
        .join()
        .unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, peer) = l.accept().unwrap();
        s.write_all(b"hairpin").unwrap();
        peer
    });
    let gw = att_c.gateway;
    let got = client
        .run(move || {
            let addr = format!("{gw}:{port}").parse().unwrap();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .join()
        .unwrap();
    assert_eq!(got, "hairpin");
    // The server saw the gateway (masqueraded), so its reply went back through the host.
    assert_eq!(t.join().unwrap().ip().to_string(), gw.to_string());
    br.net().detach(&ids).unwrap();
    br.net().detach(&idc).unwrap();
}

#[test]
fn connect_and_disconnect_per_mode() {
    use runtime::network::{connect, disconnect, BridgeConfig, NetworkMode};
    let state = tempfile::tempdir().unwrap();
    let name = format!("vtb{}", tag());
    let cfg = BridgeConfig {
        name: name.clone(),
        subnet: format!(
            "10.{}.{}.0/24",
            200 + unique() % 50,
            std::process::id() % 250
        )
        .parse()
        .unwrap(),
        state_dir: state.path().into(),
    };
    struct Cleanup(BridgeConfig);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if link_exists(&self.0.name) {
                if let Ok(n) = runtime::network::BridgeNetwork::open(self.0.clone()) {
                    let _ = n.destroy();
                }
            }
        }
    }
    let _cleanup = Cleanup(cfg.clone());
    let ns = Netns::new();
    let p: PortMapping = format!("{}:80", port()).parse().unwrap();
    let err = connect(NetworkMode::Host, &cfg, "x", ns.pid(), &[p]).unwrap_err();
    assert!(err.to_string().contains("--network bridge"), "{err}");
    assert_eq!(
        connect(NetworkMode::Host, &cfg, "x", ns.pid(), &[]).unwrap(),
        None
    );
    assert_eq!(
        connect(NetworkMode::None, &cfg, "x", ns.pid(), &[]).unwrap(),
        None
    );
    assert!(ns.sh("ip link show lo").1.contains(",UP"));
    assert!(!link_exists(&name), "none/host must not create the bridge");
    disconnect(&cfg, "x").unwrap(); // nothing to undo

    let ns2 = Netns::new();
    let att = connect(NetworkMode::Bridge, &cfg, "y", ns2.pid(), &[p])
        .unwrap()
        .unwrap();
    assert!(link_exists(&att.veth_host));
    disconnect(&cfg, "y").unwrap();
    disconnect(&cfg, "y").unwrap();
    assert!(!link_exists(&att.veth_host));
    runtime::network::BridgeNetwork::open(cfg)
        .unwrap()
        .destroy()
        .unwrap();
    assert!(!link_exists(&name));
}
