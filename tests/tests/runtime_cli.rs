//! The OCI command line (`vmctl-runtime`, runc-compatible) on real bundles, and its handling
//! of bad input: clear errors and nothing left behind.

mod runtime_common;

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output};

use runtime_common::*;

struct Bundle {
    rootfs: Rootfs,
    out: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new(script: &str) -> Bundle {
        let rootfs = Rootfs::busybox();
        let out = out_dir();
        let dir = tempfile::Builder::new()
            .prefix("vmctl-bundle-")
            .tempdir()
            .unwrap();
        let s = spec(script, rootfs.path(), out.path());
        s.save(dir.path().join("config.json")).unwrap();
        Bundle { rootfs, out, dir }
    }

    fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let p = self.dir.path().join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    }
}

/// Runs the CLI; stdio are files, since a created container keeps the runtime's stdio.
fn rt(root: &Path, args: &[&str]) -> Output {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let status = Command::new(runtime_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .status()
        .unwrap();
    let slurp = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    Output {
        status,
        stdout: slurp(out),
        stderr: slurp(err),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn status_of(root: &Path, id: &str) -> String {
    let o = rt(root, &["state", id]);
    assert!(o.status.success(), "state: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["status"].as_str().unwrap().to_string()
}

/// No state dir, cgroup or mount of `id` / `rootfs` is left.
fn assert_nothing_left(root: &Path, id: &str, rootfs: &Path) {
    assert!(!root.join(id).exists(), "state dir left behind");
    assert!(
        cgroup_dirs(id).is_empty(),
        "cgroup left behind: {:?}",
        cgroup_dirs(id)
    );
    assert!(
        mounts_mentioning(&rootfs.display().to_string()).is_empty(),
        "mounts left behind"
    );
    assert!(mounts_mentioning(id).is_empty(), "mounts left behind");
}

#[test]
fn create_start_state_kill_delete() {
    let b = Bundle::new("echo started > /out/s; exec sleep 60");
    let root = state_root();
    let id = unique_id("cli");
    let _g = Guard::new(root.path(), &id);
    let pidfile = b.out.path().join("pid");
    let o = rt(
        root.path(),
        &[
            "create",
            "--bundle",
            b.dir.path().to_str().unwrap(),
            "--pid-file",
            pidfile.to_str().unwrap(),
            &id,
        ],
    );
    assert!(o.status.success(), "create: {}", stderr(&o));
    assert_eq!(status_of(root.path(), &id), "created");
    assert!(
        read(b.out.path(), "s").is_empty(),
        "must not run before start"
    );
    let pid: i32 = read(b.out.path(), "pid").parse().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let o = rt(root.path(), &["start", &id]);
    assert!(o.status.success(), "start: {}", stderr(&o));
    assert_eq!(status_of(root.path(), &id), "running");
    let t = std::time::Instant::now();
    while read(b.out.path(), "s").is_empty() && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(read(b.out.path(), "s"), "started");
    let o = rt(root.path(), &["list", "-q"]);
    assert!(String::from_utf8_lossy(&o.stdout).lines().any(|l| l == id));
    let o = rt(root.path(), &["delete", &id]);
    assert!(
        !o.status.success() && stderr(&o).contains("running"),
        "{}",
        stderr(&o)
    );
    assert!(rt(root.path(), &["kill", &id, "KILL"]).status.success());
    let t = std::time::Instant::now();
    while status_of(root.path(), &id) != "stopped" && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(status_of(root.path(), &id), "stopped");
    let o = rt(root.path(), &["delete", &id]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    assert_nothing_left(root.path(), &id, b.rootfs.path());
}

#[test]
fn run_returns_the_exit_code_and_cleans_up() {
    let b = Bundle::new("echo out; exit 3");
    let root = state_root();
    let id = unique_id("run");
    let o = rt(
        root.path(),
        &["run", "--bundle", b.dir.path().to_str().unwrap(), &id],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "out");
    assert_nothing_left(root.path(), &id, b.rootfs.path());
}

#[test]
fn missing_bundle_is_a_clear_error() {
    let root = state_root();
    let id = unique_id("nobundle");
    let o = rt(
        root.path(),
        &["create", "--bundle", "/nonexistent/bundle", &id],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/bundle"), "{}", stderr(&o));
    assert!(!root.path().join(&id).exists());
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn invalid_config_names_the_field() {
    let b = Bundle::new("true");
    b.edit(|v| v["process"]["user"]["uid"] = serde_json::json!("root"));
    let root = state_root();
    let id = unique_id("badcfg");
    let o = rt(
        root.path(),
        &["create", "--bundle", b.dir.path().to_str().unwrap(), &id],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("process.user.uid"), "{}", stderr(&o));
    assert_nothing_left(root.path(), &id, b.rootfs.path());
    // A semantic error names its field too.
    b.edit(|v| {
        v["process"]["user"]["uid"] = serde_json::json!(0);
        v["process"]["args"] = serde_json::json!([]);
    });
    let o = rt(
        root.path(),
        &["create", "--bundle", b.dir.path().to_str().unwrap(), &id],
    );
    assert!(stderr(&o).contains("process.args"), "{}", stderr(&o));
    assert_nothing_left(root.path(), &id, b.rootfs.path());
}

#[test]
fn unknown_id_is_a_clear_error() {
    let root = state_root();
    for cmd in ["state", "start", "kill", "delete", "pause", "ps"] {
        let o = rt(root.path(), &[cmd, "no-such-container"]);
        assert!(!o.status.success(), "{cmd}");
        assert!(
            stderr(&o).contains("\"no-such-container\" does not exist"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    let o = rt(root.path(), &["state", "../etc"]);
    assert!(stderr(&o).contains("container id"), "{}", stderr(&o));
}

#[test]
fn duplicate_id_is_refused_and_the_first_survives() {
    let b = Bundle::new("exec sleep 60");
    let root = state_root();
    let id = unique_id("dup");
    let _g = Guard::new(root.path(), &id);
    let bundle = b.dir.path().to_str().unwrap();
    assert!(rt(root.path(), &["create", "--bundle", bundle, &id])
        .status
        .success());
    let o = rt(root.path(), &["create", "--bundle", bundle, &id]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(status_of(root.path(), &id), "created");
    assert!(rt(root.path(), &["delete", "--force", &id])
        .status
        .success());
    assert_nothing_left(root.path(), &id, b.rootfs.path());
}

#[test]
fn failed_setup_leaves_nothing_behind() {
    let b = Bundle::new("true");
    b.edit(|v| {
        v["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/x", "type": "nosuchfs", "source": "none"}))
    });
    let root = state_root();
    let id = unique_id("badmount");
    let o = rt(
        root.path(),
        &["create", "--bundle", b.dir.path().to_str().unwrap(), &id],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nosuchfs"), "{}", stderr(&o));
    assert_nothing_left(root.path(), &id, b.rootfs.path());
    // A bad uid map fails in the runtime process, after the fork: same guarantee.
    b.edit(|v| {
        v["mounts"].as_array_mut().unwrap().pop();
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        v["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 0, "size": 0}]);
        v["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 0, "size": 0}]);
    });
    let o = rt(
        root.path(),
        &["create", "--bundle", b.dir.path().to_str().unwrap(), &id],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("uid_map"), "{}", stderr(&o));
    assert_nothing_left(root.path(), &id, b.rootfs.path());
}

#[test]
fn console_socket_receives_the_pty_master() {
    let b = Bundle::new("echo hello-from-tty; tty");
    b.edit(|v| v["process"]["terminal"] = serde_json::json!(true));
    let root = state_root();
    let id = unique_id("tty");
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let child = Command::new(runtime_bin())
        .arg("--root")
        .arg(root.path())
        .args([
            "run",
            "--bundle",
            b.dir.path().to_str().unwrap(),
            "--console-socket",
            sock_path.to_str().unwrap(),
            &id,
        ])
        .spawn()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    let master = runtime::console::recv_fd(conn.as_fd()).unwrap();
    let mut f = std::fs::File::from(master);
    let mut text = String::new();
    let mut buf = [0u8; 256];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) | Err(_) => break, // EIO once the slave side is closed
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(text.contains("hello-from-tty"), "{text:?}");
    assert!(
        text.contains("/dev/pts/0"),
        "tty must be the container's first pty: {text:?}"
    );
    assert_nothing_left(root.path(), &id, b.rootfs.path());
}

#[test]
fn rootless_run_as_an_unprivileged_user() {
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("setpriv missing; skipped");
        return;
    }
    let b = Bundle::new("id -u > /out/uid; echo $$ > /out/pid; cat /proc/self/uid_map > /out/map");
    let state = tempfile::tempdir().unwrap();
    for p in [b.dir.path(), state.path()] {
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    let gen = Command::new("/usr/bin/setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg(runtime_bin())
        .args([
            "spec",
            "--rootless",
            "--bundle",
            b.dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        !gen.status.success(),
        "config.json exists: spec must refuse to overwrite it"
    );
    std::fs::remove_file(b.dir.path().join("config.json")).unwrap();
    let gen = Command::new("/usr/bin/setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg(runtime_bin())
        .args([
            "spec",
            "--rootless",
            "--bundle",
            b.dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", stderr(&gen));
    b.edit(|v| {
        v["root"]["path"] = serde_json::json!(b.rootfs.path());
        v["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "id -u > /out/uid; echo $$ > /out/pid; cat /proc/self/uid_map > /out/map"]);
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/out", "type": "bind", "source": b.out.path(), "options": ["rbind", "rw"]
        }));
    });
    let id = unique_id("rootless");
    let o = Command::new("/usr/bin/setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg(runtime_bin())
        .arg("--root")
        .arg(state.path())
        .args(["run", "--bundle", b.dir.path().to_str().unwrap(), &id])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(b.out.path(), "uid"), "0");
    assert_eq!(read(b.out.path(), "pid"), "1");
    assert!(read(b.out.path(), "map")
        .split_whitespace()
        .eq(["0", "1000", "1"]));
    assert!(!state.path().join(&id).exists());
}

#[test]
fn hooks_get_the_state_and_a_failing_hook_fails_create() {
    let b = Bundle::new("true");
    let log = b.out.path().to_path_buf();
    b.edit(|v| {
        let hook = |name: &str| serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}", log.display())]});
        v["hooks"] = serde_json::json!({
            "createRuntime": [hook("create")], "poststart": [hook("poststart")], "poststop": [hook("poststop")]
        });
    });
    let root = state_root();
    let id = unique_id("hooks");
    let o = rt(
        root.path(),
        &["run", "--bundle", b.dir.path().to_str().unwrap(), &id],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for (f, status) in [
        ("create", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let v: serde_json::Value = serde_json::from_str(&read(&log, f)).unwrap_or_default();
        assert_eq!(v["id"], id.as_str(), "{f}: {v}");
        assert!(
            v["status"] == status || (f == "poststart" && v["status"] == "stopped"),
            "{f}: {v}"
        );
    }
    b.edit(|v| v["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/false"}]}));
    let o = rt(
        root.path(),
        &["create", "--bundle", b.dir.path().to_str().unwrap(), &id],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/bin/false"), "{}", stderr(&o));
    assert_nothing_left(root.path(), &id, b.rootfs.path());
}
