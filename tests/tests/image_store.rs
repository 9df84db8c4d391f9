//! Image store: OCI layouts, archives, root filesystems, layer sharing, removal, default image.

mod image_common;

use image_common::*;
use runtime::image::{ImageError, ImageStore, DEFAULT_IMAGE};

fn base_layer() -> Layer {
    Layer {
        tar: tar_bytes(&[
            E::Dir("etc"),
            E::File("etc/os-release", b"ID=test\n"),
            E::Dir("bin"),
            E::File("bin/tool", b"#!/bin/sh\necho tool\n"),
            E::Symlink("bin/alias", "tool"),
            E::Hardlink("bin/tool2", "bin/tool"),
        ]),
        gzip: true,
    }
}

fn app_layer(msg: &[u8]) -> Layer {
    Layer {
        tar: tar_bytes(&[E::Dir("srv"), E::File("srv/app.txt", msg)]),
        gzip: false,
    }
}

#[test]
fn imports_an_oci_layout_with_verified_layers_and_config() {
    let (_t, root) = store_dir();
    let src = tempfile::tempdir().unwrap();
    let layers = [base_layer(), app_layer(b"hello")];
    let cfg = config_json(&layers, &["PATH=/bin", "A=1"], &["/bin/tool", "x"]);
    let id = oci_layout(src.path(), &layers, &cfg, Some("latest"));

    let store = ImageStore::open(&root).unwrap();
    let info = store
        .import_oci_layout(src.path(), Some("example/app:1.0"))
        .unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.names, vec!["example/app:1.0"]);
    assert_eq!(info.layers, vec![sha(&layers[0].tar), sha(&layers[1].tar)]);

    let img = store.get("example/app:1.0").unwrap();
    assert_eq!(img.config.env, vec!["PATH=/bin", "A=1"]);
    assert_eq!(img.config.cmd, vec!["/bin/tool", "x"]);
    assert_eq!(img.config.workdir.as_deref(), Some("/srv"));
    assert_eq!(img.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(img.layers.len(), 2);
    let base = &img.layers[0];
    assert_eq!(
        std::fs::read(base.join("etc/os-release")).unwrap(),
        b"ID=test\n"
    );
    assert_eq!(
        std::fs::read_link(base.join("bin/alias")).unwrap().to_str(),
        Some("tool")
    );
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(base.join("bin/tool")).unwrap(),
        std::fs::metadata(base.join("bin/tool2")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard link kept");
    assert_eq!(
        std::fs::read(img.layers[1].join("srv/app.txt")).unwrap(),
        b"hello"
    );

    // Lookup by id, short id, and ":latest" default; listing.
    assert_eq!(store.get(&id).unwrap().id, id);
    assert_eq!(store.get(&hex(&id)[..12]).unwrap().id, id);
    assert!(matches!(
        store.get("example/app"),
        Err(ImageError::NotFound(_))
    ));
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].short_id(), &hex(&id)[..12]);
}

#[test]
fn corrupt_blob_is_rejected_and_nothing_is_kept() {
    let (_t, root) = store_dir();
    let src = tempfile::tempdir().unwrap();
    let layers = [base_layer(), app_layer(b"hello")];
    let cfg = config_json(&layers, &[], &[]);
    oci_layout(src.path(), &layers, &cfg, None);
    // Flip the content of the second (plain) layer blob.
    let blob = src
        .path()
        .join("blobs/sha256")
        .join(hex(&sha(&layers[1].tar)));
    let mut data = std::fs::read(&blob).unwrap();
    let n = data.len();
    data[n - 1100] ^= 0xff;
    std::fs::write(&blob, data).unwrap();

    let store = ImageStore::open(&root).unwrap();
    let err = store
        .import_oci_layout(src.path(), Some("bad"))
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_store_empty(&root);
}

#[test]
fn imports_docker_save_archives_old_and_new_format() {
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    // The old format links a repeated layer; the new one stores blobs once.
    let layers = [base_layer(), app_layer(b"v1"), base_layer()];
    let layers: Vec<Layer> = layers
        .into_iter()
        .map(|l| Layer { gzip: false, ..l })
        .collect();
    for (old, tag) in [(true, "old/img:1"), (false, "new/img:2")] {
        let cfg = config_json(
            &layers,
            &["OLD=".to_owned() + &old.to_string()]
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
            &["sh"],
        );
        let tar = src.path().join(format!("{old}.tar"));
        let id = docker_save(&tar, &layers, &cfg, &[tag], old);
        let info = store.import_archive(&tar, None).unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.names, vec![tag]);
        let img = store.get(tag).unwrap();
        assert_eq!(img.layers.len(), 3);
        assert_eq!(
            img.layers[0], img.layers[2],
            "the same layer twice is one directory"
        );
        assert_eq!(
            std::fs::read(img.layers[1].join("srv/app.txt")).unwrap(),
            b"v1"
        );
        assert_eq!(img.config.cmd, vec!["sh"]);
    }
    // Two images, two distinct layers in the store, no scratch left.
    assert_eq!(ls(&root.join("layers")).len(), 2);
    assert_eq!(ls(&root.join("tmp")), Vec::<String>::new());
    // An archive that is neither format: clear error.
    let junk = src.path().join("junk.tar");
    std::fs::write(&junk, tar_bytes(&[E::File("hello", b"x")])).unwrap();
    let err = store.import_archive(&junk, None).unwrap_err().to_string();
    assert!(err.contains("neither") && err.contains("junk.tar"), "{err}");
}

#[test]
fn imports_an_oci_layout_packed_as_tar() {
    let (_t, root) = store_dir();
    let src = tempfile::tempdir().unwrap();
    let layout = src.path().join("layout");
    let layers = [base_layer()];
    let cfg = config_json(&layers, &[], &["true"]);
    let id = oci_layout(&layout, &layers, &cfg, Some("example/packed:3"));
    let tar = src.path().join("oci.tar");
    pack_dir(&layout, &tar);
    let store = ImageStore::open(&root).unwrap();
    let info = store.import_archive(&tar, None).unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.names, vec!["example/packed:3"]);
}

#[test]
fn imports_rootfs_tarball_and_directory() {
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let tgz = src.path().join("rootfs.tar.gz");
    std::fs::write(
        &tgz,
        gz(&tar_bytes(&[E::Dir("data"), E::File("data/x", b"tarball")])),
    )
    .unwrap();
    let a = store.import_rootfs(&tgz, Some("fromtar")).unwrap();
    let img = store.get("fromtar:latest").unwrap();
    assert_eq!(
        std::fs::read(img.layers[0].join("data/x")).unwrap(),
        b"tarball"
    );
    assert!(img.config.env.iter().any(|e| e.starts_with("PATH=")));
    // Importing the same content again reuses the unpacked layer.
    std::fs::write(img.layers[0].join("marker"), "kept").unwrap();
    let again = store.import_rootfs(&tgz, Some("fromtar2")).unwrap();
    assert_eq!(again.id, a.id);
    assert!(
        img.layers[0].join("marker").exists(),
        "layer unpacked again"
    );
    std::fs::remove_file(img.layers[0].join("marker")).unwrap();

    let dir = src.path().join("tree");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hostname"), "tree\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("name")).unwrap();
    let b = store.import_rootfs(&dir, Some("fromdir")).unwrap();
    let img = store.get("fromdir").unwrap();
    assert_eq!(
        std::fs::read(img.layers[0].join("etc/hostname")).unwrap(),
        b"tree\n"
    );
    assert_eq!(
        std::fs::read_link(img.layers[0].join("name"))
            .unwrap()
            .to_str(),
        Some("/etc/hostname")
    );
    assert_ne!(a.id, b.id);
    let err = store
        .import_rootfs(src.path().join("missing"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    let err = store.import_rootfs(&tgz, Some("bad name!")).unwrap_err();
    assert!(matches!(err, ImageError::InvalidName(_)), "{err}");
}

#[test]
fn layers_are_shared_unpacked_once_and_collected() {
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let one = [base_layer(), app_layer(b"one")];
    let two = [base_layer(), app_layer(b"two")];
    oci_layout(
        &src.path().join("one"),
        &one,
        &config_json(&one, &[], &["one"]),
        None,
    );
    oci_layout(
        &src.path().join("two"),
        &two,
        &config_json(&two, &[], &["two"]),
        None,
    );

    store
        .import_oci_layout(src.path().join("one"), Some("one"))
        .unwrap();
    let base = store.get("one").unwrap().layers[0].clone();
    // A marker only survives if the second import does not unpack the base again.
    std::fs::write(base.join("marker"), "kept").unwrap();
    store
        .import_oci_layout(src.path().join("two"), Some("two"))
        .unwrap();
    let two_img = store.get("two").unwrap();
    assert_eq!(two_img.layers[0], base);
    assert!(
        base.join("marker").exists(),
        "shared layer was unpacked again"
    );
    assert_eq!(ls(&root.join("layers")).len(), 3);

    // Naming a shared layer is refused clearly and changes nothing.
    let base_digest = sha(&one[0].tar);
    let err = store.remove(&base_digest).unwrap_err();
    assert!(matches!(err, ImageError::LayerInUse(..)), "{err}");
    assert!(
        err.to_string().contains("one:latest") && err.to_string().contains("two:latest"),
        "{err}"
    );
    assert_eq!(ls(&root.join("layers")).len(), 3);

    store.remove("one").unwrap();
    assert!(base.is_dir(), "a layer still used by `two` was removed");
    assert_eq!(ls(&root.join("layers")).len(), 2);
    assert!(matches!(store.get("one"), Err(ImageError::NotFound(_))));
    assert!(matches!(store.remove("one"), Err(ImageError::NotFound(_))));
    store.remove(&two_img.id).unwrap();
    assert_store_empty(&root);
}

#[test]
fn names_move_and_untag_like_docker() {
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let tgz = src.path().join("a.tar");
    std::fs::write(&tgz, tar_bytes(&[E::File("a", b"a")])).unwrap();
    let a = store.import_rootfs(&tgz, Some("x")).unwrap();
    let a2 = store.import_rootfs(&tgz, Some("y")).unwrap();
    assert_eq!(a.id, a2.id);
    assert_eq!(a2.names, vec!["x:latest", "y:latest"]);
    store.remove("x").unwrap(); // untag only
    assert_eq!(store.get("y").unwrap().id, a.id);
    assert!(store.get("x").is_err());
    store.remove("y").unwrap();
    assert_store_empty(&root);
}

#[test]
fn default_image_runs_busybox() {
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let img = store.ensure_default().unwrap();
    assert_eq!(img.names, vec![DEFAULT_IMAGE]);
    assert_eq!(img.config.cmd, vec!["sh"]);
    assert!(img.config.env.iter().any(|e| e.starts_with("PATH=")));
    let layer = &img.layers[0];
    let passwd = std::fs::read_to_string(layer.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:") && passwd.contains("nobody:x:65534"));
    assert!(std::fs::read_to_string(layer.join("etc/group"))
        .unwrap()
        .contains("nobody"));
    assert!(layer.join("tmp").is_dir() && layer.join("root").is_dir());
    let out = std::process::Command::new("chroot")
        .arg(layer)
        .args([
            "/bin/sh",
            "-c",
            "echo hi from $(basename $(readlink /bin/ls))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from busybox\n");
    // Idempotent.
    assert_eq!(store.ensure_default().unwrap().id, img.id);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn import_detects_the_kind_of_source() {
    use runtime::image::{detect, SourceKind};
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let layers = [app_layer(b"auto")];
    let cfg = config_json(&layers, &[], &["auto"]);
    let layout = src.path().join("layout");
    oci_layout(&layout, &layers, &cfg, None);
    let docker = src.path().join("docker.tar");
    docker_save(&docker, &layers, &cfg, &["auto/docker:1"], false);
    let rootfs = src.path().join("rootfs.tgz");
    std::fs::write(
        &rootfs,
        gz(&tar_bytes(&[E::File("manifest.json.not", b"x")])),
    )
    .unwrap();
    assert_eq!(detect(&layout).unwrap(), SourceKind::OciLayout);
    assert_eq!(detect(&docker).unwrap(), SourceKind::Archive);
    assert_eq!(detect(&rootfs).unwrap(), SourceKind::Rootfs);
    assert_eq!(detect(src.path()).unwrap(), SourceKind::Rootfs);
    let a = store.import(&layout, Some("auto/layout")).unwrap();
    let b = store.import(&docker, None).unwrap();
    assert_eq!(a.id, b.id, "same config, same image");
    assert_eq!(b.names, vec!["auto/layout:latest", "auto/docker:1"]);
    let c = store.import(&rootfs, Some("auto/rootfs")).unwrap();
    assert!(store.get(&c.id).unwrap().layers[0]
        .join("manifest.json.not")
        .exists());
    let err = store
        .import(src.path().join("nope"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}
