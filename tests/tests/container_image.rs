//! `vmctl run` with images from the image store: the embedded default image, imported
//! images with their own run configuration, and bad input.

mod container_common;
#[path = "image_common/mod.rs"]
mod image_common;

use container_common::*;
use image_common::{config_json, oci_layout, pack_dir, Layer};

#[test]
fn run_without_an_image_uses_the_default_image() {
    let env = Env::new();
    // The default network: bridge (the test's bridge via VMCTL_BRIDGE / VMCTL_SUBNET).
    let o = env.run(&[
        "run",
        "--name",
        "d1",
        "--",
        "sh",
        "-c",
        "echo hi; ip -4 -o addr show eth0",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("hi\n"), "{out}");
    let prefix = env.subnet.trim_end_matches("0/24");
    assert!(out.contains(&format!("inet {prefix}")), "{out}");
    // Not removed yet, but already detached from the bridge.
    let id = env.ok(&["ps", "-a", "-q"]);
    assert_eq!(id.len(), 12);
    assert!(env.bridge_ports().is_empty());
    assert_eq!(env.attachments(), 0);
    assert!(env.ok(&["ps", "-a"]).contains("vmctl/busybox"));
    env.ok(&["rm", "d1"]);
    env.assert_gone(&id);

    let o = env.run(&["run", "--rm", "--", "echo", "hi"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hi");
    // No command: the image's CMD (sh) with /dev/null as stdin exits 0.
    assert!(env
        .run(&["run", "--rm", "--network", "none"])
        .status
        .success());
    assert!(env.ok(&["images"]).contains("vmctl/busybox"));
    env.assert_empty();
}

#[test]
fn imported_images_bring_their_run_configuration() {
    let env = Env::new();
    let rootfs = Rootfs::busybox();
    std::fs::write(rootfs.path().join("etc/motd"), "from the dir\n").unwrap();
    // A root filesystem directory.
    env.import(rootfs.path(), "dirimg");
    let o = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "dirimg",
        "--",
        "cat",
        "/etc/motd",
    ]);
    assert_eq!(text(&o.stdout), "from the dir", "{}", text(&o.stderr));

    // An OCI layout with ENV, ENTRYPOINT, CMD, WORKDIR and USER (a name in /etc/passwd).
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("layer.tar");
    pack_dir(rootfs.path(), &tar);
    let layers = [Layer {
        tar: std::fs::read(&tar).unwrap(),
        gzip: true,
    }];
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&config_json(&layers, &["PATH=/bin", "GREETING=hello"], &[]))
            .unwrap();
    cfg["config"] = serde_json::json!({
        "Env": ["PATH=/bin", "GREETING=hello"],
        "Entrypoint": ["sh", "-c"],
        "Cmd": ["echo $GREETING from $(pwd) as $(id -u):$(id -g)"],
        "WorkingDir": "/tmp",
        "User": "nobody",
    });
    oci_layout(
        &tmp.path().join("oci"),
        &layers,
        cfg.to_string().as_bytes(),
        Some("latest"),
    );
    env.import(&tmp.path().join("oci"), "cfgimg:2");
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend_from_slice(extra);
        let o = env.run(&a);
        assert!(o.status.success(), "{a:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    assert_eq!(run(&["cfgimg:2"]), "hello from /tmp as 65534:65534");
    // CMD after `--` replaces the image's; the entrypoint stays.
    assert_eq!(
        run(&["cfgimg:2", "--", "echo $GREETING only"]),
        "hello only"
    );
    // Flags override ENV, WORKDIR and USER.
    assert_eq!(
        run(&["-e", "GREETING=bye", "-w", "/", "-u", "0", "cfgimg:2"]),
        "bye from / as 0:0"
    );
    // By id prefix, as `vmctl images` shows it.
    let images = env.ok(&["images"]);
    let line = images.lines().find(|l| l.starts_with("cfgimg:2")).unwrap();
    let short = line.split_whitespace().nth(1).unwrap();
    assert_eq!(run(&[&short[..8], "--", "echo by id"]), "by id");
    env.assert_empty();
}

#[test]
fn bad_input_names_the_value_and_leaves_nothing() {
    let env = Env::new();
    let cases: [(&[&str], &str); 6] = [
        (
            &["run", "--rm", "nosuchimage:9", "--", "true"],
            "nosuchimage:9",
        ),
        (&["run", "--rm", "-p", "80", "--", "true"], "\"80\""),
        (&["run", "--rm", "-p", "8080:99999", "--", "true"], "99999"),
        (&["run", "--rm", "--network", "wifi", "--", "true"], "wifi"),
        (
            &["run", "--network", "none", "-p", "8080:80", "--", "true"],
            "8080:80",
        ),
        (
            &["run", "--subnet", "10.1.2.3/33", "--", "true"],
            "10.1.2.3/33",
        ),
    ];
    for (args, needle) in cases {
        let o = env.run(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let err = text(&env.run(&["run", "nosuchimage:9"]).stderr);
    assert!(err.contains("vmctl image import"), "{err}");
    // A root filesystem directory is imported first, not run directly.
    let dir = Rootfs::busybox();
    let d = dir.path().to_str().unwrap();
    let o = env.run(&["run", "--network", "none", d, "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(err.contains(&format!("vmctl image import {d}")), "{err}");
    // Nothing was created: no container, no bridge.
    env.assert_empty();
    assert!(
        !sh(&format!("ip link show {}", env.bridge)).0,
        "bridge created"
    );
}
