//! `vmctl images`, `vmctl image import`, `vmctl image rm` from the command line.

mod image_common;

use std::process::{Command, Output};

use image_common::*;
use vmctl_tests::vmctl_bin;

fn vmctl(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(vmctl_bin::path())
        .args(args)
        .env("VMCTL_IMAGE_ROOT", root)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running vmctl")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn import_list_and_remove_from_the_command_line() {
    let (_t, root) = store_dir();
    let src = tempfile::tempdir().unwrap();
    let layers = [Layer {
        tar: tar_bytes(&[E::File("hello", b"hi")]),
        gzip: true,
    }];
    let cfg = config_json(&layers, &[], &["cat", "/hello"]);
    let docker = src.path().join("img.tar");
    let id = docker_save(&docker, &layers, &cfg, &["cli/app:2"], true);
    let tree = src.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();

    let out = vmctl(&root, &["image", "import", docker.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0.trim(), id);
    let out = vmctl(
        &root,
        &[
            "image",
            "import",
            tree.to_str().unwrap(),
            "--name",
            "cli/tree",
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));

    let out = vmctl(&root, &["images"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.starts_with("NAME"), "{stdout}");
    let app = stdout
        .lines()
        .find(|l| l.starts_with("cli/app:2"))
        .expect("app listed");
    assert!(app.contains(&hex(&id)[..12]), "{app}");
    assert!(
        stdout.lines().any(|l| l.starts_with("cli/tree:latest")),
        "{stdout}"
    );

    let out = vmctl(&root, &["image", "rm", "cli/app:2", "no/such"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("removed cli/app:2"), "{stdout}");
    assert!(
        stderr.contains("no/such") && stderr.contains("vmctl images"),
        "{stderr}"
    );
    let out = vmctl(&root, &["image", "rm", "cli/tree"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_store_empty(&root);

    // Bad input: non-zero status and a message naming the bad value, never a panic.
    for (args, needle) in [
        (vec!["image", "import", "/nonexistent/x"], "/nonexistent/x"),
        (
            vec![
                "image",
                "import",
                tree.to_str().unwrap(),
                "--name",
                "Bad Name",
            ],
            "Bad Name",
        ),
    ] {
        let out = vmctl(&root, &args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(
            stderr.contains(needle) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    assert_store_empty(&root);
}
