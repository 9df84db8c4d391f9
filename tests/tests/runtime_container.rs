//! The runtime library on real namespaces, cgroups and overlayfs (run as root).

mod runtime_common;

use std::time::{Duration, Instant};

use runtime::{Container, ContainerBuilder, Status};
use runtime_common::*;

fn run(
    id: &str,
    root: &std::path::Path,
    spec: runtime::oci_spec::runtime::Spec,
) -> (i32, runtime::Stats) {
    let mut c = ContainerBuilder::new(id, root)
        .spec(spec)
        .create()
        .expect("create");
    c.start().expect("start");
    let code = c.wait().expect("wait");
    let stats = c.stats().unwrap_or_default();
    c.delete(false).expect("delete");
    (code, stats)
}

#[test]
fn workload_is_pid_1_with_its_own_hostname() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let id = unique_id("pid1");
    let spec = spec(
        "echo $$ > /out/pid; hostname > /out/host; cat /proc/1/cmdline > /out/cmd; true",
        rootfs.path(),
        out.path(),
    );
    let spec = edit(&spec, |v| v["hostname"] = serde_json::json!("box-1"));
    let (code, _) = run(&id, root.path(), spec);
    assert_eq!(code, 0);
    assert_eq!(read(out.path(), "pid"), "1");
    assert_eq!(read(out.path(), "host"), "box-1");
    assert!(
        read(out.path(), "cmd").starts_with("/bin/sh\0-c"),
        "{:?}",
        read(out.path(), "cmd")
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "box-1", "the host's hostname must not change");
}

#[test]
fn exit_code_and_missing_program_are_reported() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let (code, _) = run(
        &unique_id("exit"),
        root.path(),
        spec("exit 7", rootfs.path(), out.path()),
    );
    assert_eq!(code, 7);
    let s = edit(&spec("", rootfs.path(), out.path()), |v| {
        v["process"]["args"] = serde_json::json!(["nosuch"])
    });
    let id = unique_id("noexec");
    let mut c = ContainerBuilder::new(&id, root.path())
        .spec(s)
        .create()
        .unwrap();
    let err = c.start().unwrap_err().to_string();
    assert!(err.contains("nosuch") && err.contains("not found"), "{err}");
    let _ = c.wait();
    c.delete(true).unwrap();
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn memory_limit_oom_kills_the_workload_not_the_host() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let s = spec(
        "head -c 400000000 /dev/zero | tail > /dev/null",
        rootfs.path(),
        out.path(),
    );
    let s = edit(&s, |v| {
        v["linux"]["resources"]["memory"] = serde_json::json!({"limit": 32 << 20, "swap": 32 << 20})
    });
    let (code, stats) = run(&unique_id("oom"), root.path(), s);
    assert_eq!(code, 137, "tail must be SIGKILLed by the OOM killer");
    assert!(stats.oom_kills >= 1, "{stats:?}");
    assert_eq!(stats.memory_limit, Some(32 << 20));
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    // Bounded: at most 64 sleepers; the limit must stop it well before.
    let script = "(i=0; while [ $i -lt 64 ]; do sleep 30 & i=$((i+1)); done) 2>/out/err; echo done > /out/n; exec sleep 30";
    let s = edit(&spec(script, rootfs.path(), out.path()), |v| {
        v["linux"]["resources"]["pids"] = serde_json::json!({"limit": 10})
    });
    let id = unique_id("pids");
    let _g = Guard::new(root.path(), &id);
    let mut c = ContainerBuilder::new(&id, root.path())
        .spec(s)
        .create()
        .unwrap();
    c.start().unwrap();
    let t = Instant::now();
    while read(out.path(), "n").is_empty() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = c.stats().unwrap();
    assert!(stats.pids_current <= 10, "{stats:?}");
    assert!(
        read(out.path(), "err").contains("fork"),
        "forks must fail: {:?}",
        read(out.path(), "err")
    );
    c.delete(true).unwrap();
}

#[test]
fn overlay_writes_do_not_touch_the_layers() {
    let (lower, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let id = unique_id("overlay");
    let s = spec(
        "echo hi > /new; echo changed > /etc/hostname; rm /bin/ls; cat /etc/hostname > /out/h",
        std::path::Path::new("/"),
        out.path(),
    );
    let mut c = ContainerBuilder::new(&id, root.path())
        .spec(s)
        .image_layers(vec![lower.path().into()])
        .create()
        .unwrap();
    c.start().unwrap();
    assert_eq!(c.wait().unwrap(), 0);
    assert_eq!(read(out.path(), "h"), "changed");
    assert!(!lower.path().join("new").exists());
    assert_eq!(read(lower.path(), "etc/hostname"), "lower");
    assert!(lower.path().join("bin/ls").symlink_metadata().is_ok());
    let upper = c.dir().join("upper");
    assert_eq!(read(&upper, "new"), "hi");
    c.delete(false).unwrap();
    assert!(!upper.exists());
    assert!(mounts_mentioning(&id).is_empty());
}

#[test]
fn dropped_capabilities_refuse_mount() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let script = "mount -t tmpfs none /mnt; echo $? > /out/rc";
    // Seccomp off, so only the capability set decides.
    let no_seccomp = |v: &mut serde_json::Value| {
        v["linux"]
            .as_object_mut()
            .unwrap()
            .remove("seccomp")
            .map(|_| ())
            .unwrap()
    };
    let s = edit(&spec(script, rootfs.path(), out.path()), no_seccomp);
    run(&unique_id("nocap"), root.path(), s);
    assert_ne!(
        read(out.path(), "rc"),
        "0",
        "mount must fail without CAP_SYS_ADMIN"
    );
    // The same with CAP_SYS_ADMIN works: the test can tell the difference.
    let s = edit(&spec(script, rootfs.path(), out.path()), |v| {
        no_seccomp(v);
        for set in ["bounding", "effective", "permitted"] {
            v["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push("CAP_SYS_ADMIN".into());
        }
    });
    run(&unique_id("cap"), root.path(), s);
    assert_eq!(read(out.path(), "rc"), "0");
}

#[test]
fn seccomp_default_profile_and_oci_profile_block_syscalls() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    // unshare(CLONE_NEWUSER) needs no capability: only seccomp refuses it.
    let script = "unshare -U true 2>/out/err; echo $? > /out/rc";
    run(
        &unique_id("seccomp"),
        root.path(),
        spec(script, rootfs.path(), out.path()),
    );
    assert_ne!(read(out.path(), "rc"), "0");
    assert!(
        read(out.path(), "err").contains("not permitted"),
        "{}",
        read(out.path(), "err")
    );
    let s = edit(&spec(script, rootfs.path(), out.path()), |v| {
        v["linux"].as_object_mut().unwrap().remove("seccomp");
    });
    run(&unique_id("noseccomp"), root.path(), s);
    assert_eq!(
        read(out.path(), "rc"),
        "0",
        "without seccomp the call works"
    );
    // An OCI profile: mkdir fails with EACCES (13), everything else allowed.
    let s = edit(
        &spec(
            "mkdir /tmp/x 2>/out/err; echo $? > /out/rc",
            rootfs.path(),
            out.path(),
        ),
        |v| {
            v["linux"]["seccomp"] = serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
            });
        },
    );
    run(&unique_id("ocisc"), root.path(), s);
    assert_eq!(read(out.path(), "rc"), "1");
    assert!(
        read(out.path(), "err").contains("denied"),
        "{}",
        read(out.path(), "err")
    );
}

#[test]
fn init_reaps_zombies_and_the_plain_workload_does_not() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    // An orphan that exits soon, re-parented to PID 1, while PID 1 (`sleep`) never waits.
    let script = "(sleep 0.2 &); exec sleep 3";
    for init in [false, true] {
        let id = unique_id("init");
        let mut c = ContainerBuilder::new(&id, root.path())
            .spec(spec(script, rootfs.path(), out.path()))
            .init(init)
            .create()
            .unwrap();
        c.start().unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        let z = zombie_children(c.pid());
        if init {
            assert_eq!(z, 0, "the init must reap the orphan");
        } else {
            assert_eq!(z, 1, "without init the orphan stays a zombie");
        }
        c.kill(libc::SIGTERM, false).unwrap();
        let code = c.wait().unwrap();
        if init {
            assert_eq!(
                code,
                128 + libc::SIGTERM,
                "init forwards SIGTERM and exits with the child's status"
            );
        }
        c.delete(true).unwrap();
    }
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_host_uid() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let s = edit(
        &spec(
            "id -u > /out/uid; cat /proc/self/uid_map > /out/map; touch /out/f; sleep 1",
            rootfs.path(),
            out.path(),
        ),
        |v| {
            v["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "user"}));
            v["linux"]["uidMappings"] =
                serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            v["linux"]["gidMappings"] =
                serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        },
    );
    let id = unique_id("userns");
    let mut c = ContainerBuilder::new(&id, root.path())
        .spec(s)
        .create()
        .unwrap();
    c.start().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap();
    assert_eq!(c.wait().unwrap(), 0);
    c.delete(false).unwrap();
    assert_eq!(read(out.path(), "uid"), "0");
    assert!(read(out.path(), "map")
        .split_whitespace()
        .eq(["0", "200000", "65536"]));
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains("200000"), "host view: {uid_line}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(out.path().join("f")).unwrap().uid(),
        200000
    );
}

#[test]
fn cgroup_exists_while_running_and_is_removed_on_delete() {
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let id = unique_id("cg");
    let _g = Guard::new(root.path(), &id);
    let mut c = ContainerBuilder::new(&id, root.path())
        .spec(spec("sleep 30", rootfs.path(), out.path()))
        .create()
        .unwrap();
    assert_eq!(c.status(), Status::Created);
    c.start().unwrap();
    assert_eq!(c.status(), Status::Running);
    let dirs = cgroup_dirs(&id);
    assert!(!dirs.is_empty());
    assert_eq!(c.processes().unwrap(), vec![c.pid()]);
    let loaded = Container::load(root.path(), &id).unwrap();
    assert!(
        loaded.delete(false).is_err(),
        "a running container needs force"
    );
    c.pause().unwrap();
    assert_eq!(c.status(), Status::Paused);
    c.resume().unwrap();
    let pid = c
        .exec(
            edit_process(
                &c,
                &[
                    "/bin/sh",
                    "-c",
                    "echo $$ > /out/execpid; hostname > /out/exechost",
                ],
            ),
            None,
        )
        .unwrap();
    assert_eq!(runtime::wait_pid(pid).unwrap(), 0);
    assert!(read(out.path(), "execpid").parse::<i32>().unwrap() > 1);
    Container::load(root.path(), &id)
        .unwrap()
        .delete(true)
        .unwrap();
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
    assert!(!root.path().join(&id).exists());
    let _ = c.wait();
}

fn edit_process(c: &Container, args: &[&str]) -> runtime::oci_spec::runtime::Process {
    let mut p = c.spec().unwrap().process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p
}

#[test]
fn cgroup_v2_layout_works_on_the_unified_hierarchy() {
    let Some(root_v2) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|p| {
            std::path::Path::new(p).join("cgroup.procs").exists()
                && std::path::Path::new(p)
                    .join("cgroup.subtree_control")
                    .exists()
        })
    else {
        eprintln!("no cgroup2 mount; skipped");
        return;
    };
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let id = unique_id("v2");
    let _g = Guard::new(root.path(), &id);
    let layout = runtime::Layout::V2 {
        root: root_v2.into(),
    };
    let mut c = ContainerBuilder::new(&id, root.path())
        .spec(spec("sleep 30", rootfs.path(), out.path()))
        .cgroup_layout(layout)
        .create()
        .unwrap();
    c.start().unwrap();
    let dir = std::path::Path::new(root_v2)
        .join("vmctl-runtime")
        .join(&id);
    assert!(dir.join("cgroup.procs").exists());
    assert_eq!(c.processes().unwrap(), vec![c.pid()]);
    c.pause().unwrap();
    assert_eq!(c.status(), Status::Paused);
    c.resume().unwrap();
    assert_eq!(c.status(), Status::Running);
    c.kill(9, false).unwrap();
    assert_eq!(c.wait().unwrap(), 137);
    c.delete(false).unwrap();
    assert!(!dir.exists());
}

#[test]
fn stdio_fds_given_to_the_builder_and_exec_are_the_workloads() {
    use std::io::Read;
    let (rootfs, out, root) = (Rootfs::busybox(), out_dir(), state_root());
    let id = unique_id("stdio");
    let _g = Guard::new(root.path(), &id);
    let (mut r, w) = std::io::pipe().unwrap();
    let (mut er, ew) = std::io::pipe().unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut c = ContainerBuilder::new(&id, root.path())
        .spec(spec(
            "echo to-stdout; echo to-stderr >&2; sleep 5",
            rootfs.path(),
            out.path(),
        ))
        .stdio(null.into(), w.into(), ew.into())
        .create()
        .unwrap();
    c.start().unwrap();
    let mut line = [0u8; 10];
    r.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"to-stdout\n");
    er.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"to-stderr\n");
    let (mut xr, xw) = std::io::pipe().unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let xw2 = xw.try_clone().unwrap();
    let pid = c
        .exec_with_stdio(
            edit_process(&c, &["/bin/sh", "-c", "echo from-exec"]),
            None,
            Some([null.into(), xw.into(), xw2.into()]),
        )
        .unwrap();
    assert_eq!(runtime::wait_pid(pid).unwrap(), 0);
    let mut s = String::new();
    xr.read_to_string(&mut s).unwrap();
    assert_eq!(s, "from-exec\n");
    c.delete(true).unwrap();
}
