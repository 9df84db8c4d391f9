//! Helpers of the network tests: throw-away network namespaces with a process inside,
//! test bridges with unique names and subnets, and running code inside a netns.
#![allow(dead_code)]

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use runtime::network::{BridgeConfig, BridgeNetwork, Ipv4Net};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unique within this test process.
pub fn unique() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A short tag unique across concurrently running test processes.
pub fn tag() -> String {
    format!("{:04x}{}", std::process::id() % 0x10000, unique())
}

pub fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// A named network namespace (`ip netns add`) with a sleeping process in it, the stand-in
/// for a container. Deleted on drop.
pub struct Netns {
    pub name: String,
    child: Child,
}

impl Netns {
    pub fn new() -> Self {
        let name = format!("vtn{}", tag());
        let (ok, out) = sh(&format!("ip netns add {name}"));
        assert!(ok, "ip netns add: {out}");
        let child = Command::new("ip")
            .args(["netns", "exec", &name, "sleep", "300"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child has entered the namespace.

        let want = std::fs::metadata(format!("/run/netns/{name}")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        for _ in 0..200 {
            let got = std::fs::metadata(format!("/proc/{}/ns/net", child.id())).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            });
            if got.is_ok() && got.as_ref().ok() == want.as_ref().ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }

        Self { name, child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Runs a shell command inside the namespace.
    pub fn sh(&self, cmd: &str) -> (bool, String) {
        sh(&format!("ip netns exec {} sh -c '{cmd}'", self.name))
    }

    /// Runs `f` on a thread inside the namespace (sockets it makes stay in the namespace).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

/// A test bridge with a unique name, subnet and state dir; destroyed on drop.
pub struct TestBridge {
    pub net: Option<BridgeNetwork>,
    pub name: String,
    pub state: tempfile::TempDir,
}

impl TestBridge {
    pub fn new() -> Self {
        let name = format!("vtb{}", tag());
        let n = unique();
        let subnet: Ipv4Net = format!("10.{}.{}.0/24", 200 + n % 50, std::process::id() % 250)
            .parse()
            .unwrap();
        let state = tempfile::tempdir().unwrap();
        let net = BridgeNetwork::open(BridgeConfig {
            name: name.clone(),
            subnet,
            state_dir: state.path().to_path_buf(),
        })
        .unwrap();
        Self {
            net: Some(net),
            name,
            state,
        }
    }

    pub fn net(&self) -> &BridgeNetwork {
        self.net.as_ref().unwrap()
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        if let Some(n) = self.net.take() {
            if let Err(e) = n.destroy() {
                eprintln!("destroy bridge {}: {e}", self.name);
            }
        }
    }
}

/// The `iptables-save` lines that mention `needle`.
pub fn iptables_lines(needle: &str) -> Vec<String> {
    let (_, out) = sh("iptables-save");
    out.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Whether a network device exists in the host namespace.
pub fn link_exists(name: &str) -> bool {
    sh(&format!("ip link show dev {name}")).0
}

/// A "client" namespace linked to the host by its own veth pair (not the bridge), like a
/// machine outside: returns it and the host's address on that link.
pub struct Client {
    pub ns: Netns,
    pub host_ip: String,
    veth: String,
}

impl Client {
    pub fn new() -> Self {
        let ns = Netns::new();
        let n = unique();
        let base = format!("10.{}.{}", 150 + n % 50, std::process::id() % 250);
        let veth = format!("vtc{}", tag());
        let cmds = format!(
            "ip link add {veth} type veth peer name {veth}p && ip link set {veth}p netns {ns} && \
             ip addr add {base}.1/30 dev {veth} && ip link set {veth} up && \
             ip -n {ns} addr add {base}.2/30 dev {veth}p && ip -n {ns} link set {veth}p up && \
             ip -n {ns} link set lo up && ip -n {ns} route add default via {base}.1",
            ns = ns.name
        );
        let (ok, out) = sh(&cmds);
        assert!(ok, "client setup: {out}");
        Self {
            ns,
            host_ip: format!("{base}.1"),
            veth,
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = sh(&format!("ip link del {}", self.veth));
    }
}

/// A host port unique within this process (and, by pid, very likely across processes).
pub fn port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 40, "too many test ports");
    (20000 + (std::process::id() % 1000) * 40 + n) as u16
}
