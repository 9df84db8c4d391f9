//! Hostile layers: nothing may be written outside the layer, and a rejected import leaves
//! nothing behind in the store.

mod image_common;

use std::path::Path;

use image_common::*;
use runtime::image::{ImageError, ImageStore};
use tar::EntryType;

/// Imports `bad` as the top layer of a two-layer OCI image, expects an unsafe-entry error
/// and checks that the store is empty and `outside` unchanged.
fn assert_rejected(bad: Vec<u8>, outside: &Path, expect: &str) {
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let layers = [
        Layer {
            tar: tar_bytes(&[E::Dir("ok"), E::File("ok/file", b"fine")]),
            gzip: true,
        },
        Layer {
            tar: bad.clone(),
            gzip: false,
        },
    ];
    oci_layout(src.path(), &layers, &config_json(&layers, &[], &[]), None);
    let before = ls(outside);
    let err = store
        .import_oci_layout(src.path(), Some("evil"))
        .unwrap_err();
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
    assert!(
        err.to_string().contains(expect),
        "{err} should mention {expect}"
    );
    assert_eq!(
        ls(outside),
        before,
        "something was written outside the layer"
    );
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    assert_store_empty(&root);
    // The same tar as a rootfs tarball is refused the same way.
    let tarball = src.path().join("bad.tar");
    std::fs::write(&tarball, bad).unwrap();
    let err = store.import_rootfs(&tarball, Some("evil")).unwrap_err();
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
    assert_store_empty(&root);
}

fn outside_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("secret"), "secret").unwrap();
    d
}

#[test]
fn dotdot_path_is_rejected() {
    let out = outside_dir();
    // The store is <tmp>/store/tmp/layer-x/ while unpacking: enough `..` to reach anywhere.
    let name = format!("../../../../../../../../..{}/evil", out.path().display());
    let bad = tar_bytes(&[E::Raw(EntryType::Regular, &name, "", b"pwned")]);
    assert_rejected(bad, out.path(), "..");
}

#[test]
fn absolute_path_is_rejected() {
    let out = outside_dir();
    let name = format!("{}/abs", out.path().display());
    let bad = tar_bytes(&[E::Raw(EntryType::Regular, &name, "", b"pwned")]);
    assert_rejected(bad, out.path(), "absolute");
}

#[test]
fn file_through_symlink_is_rejected() {
    let out = outside_dir();
    let target = out.path().display().to_string();
    let bad = tar_bytes(&[E::Symlink("link", &target), E::File("link/evil", b"pwned")]);
    assert_rejected(bad, out.path(), "symlink");
    // Also via a relative symlink climbing out, and a directory entry through it.
    let bad = tar_bytes(&[
        E::Symlink("up", "../../../../../../../../../../../../"),
        E::Raw(EntryType::Directory, "up/tmp/evil-dir/", "", b""),
    ]);
    assert_rejected(bad, out.path(), "symlink");
}

#[test]
fn symlink_replacing_a_file_is_not_followed() {
    // A symlink to the outside, then a regular file with the same name: the file replaces the
    // link instead of writing through it.
    let out = outside_dir();
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let secret = out.path().join("secret").display().to_string();
    let tarball = src.path().join("t.tar");
    std::fs::write(
        &tarball,
        tar_bytes(&[E::Symlink("s", &secret), E::File("s", b"inside")]),
    )
    .unwrap();
    store.import_rootfs(&tarball, Some("ok")).unwrap();
    let img = store.get("ok").unwrap();
    assert_eq!(std::fs::read(img.layers[0].join("s")).unwrap(), b"inside");
    assert_eq!(std::fs::read(out.path().join("secret")).unwrap(), b"secret");
}

#[test]
fn hardlink_to_outside_is_rejected() {
    let out = outside_dir();
    let abs = out.path().join("secret").display().to_string();
    let bad = tar_bytes(&[E::Raw(EntryType::Link, "stolen", &abs, b"")]);
    assert_rejected(bad, out.path(), "absolute");
    let rel = format!("../../../../../../../../..{abs}");
    let bad = tar_bytes(&[E::Raw(EntryType::Link, "stolen", &rel, b"")]);
    assert_rejected(bad, out.path(), "..");
    // Through a symlink inside the layer.
    let dir = out.path().display().to_string();
    let bad = tar_bytes(&[
        E::Symlink("d", &dir),
        E::Raw(EntryType::Link, "stolen", "d/secret", b""),
    ]);
    assert_rejected(bad, out.path(), "without symlinks");
}

#[test]
fn archive_member_escaping_is_rejected() {
    let out = outside_dir();
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let name = format!("../../../../../../../../..{}/evil", out.path().display());
    let tar = src.path().join("a.tar");
    std::fs::write(
        &tar,
        tar_bytes(&[E::Raw(EntryType::Regular, &name, "", b"x")]),
    )
    .unwrap();
    let err = store.import_archive(&tar, None).unwrap_err();
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
    assert!(!out.path().join("evil").exists());
    assert_store_empty(&root);
}

#[test]
fn archive_manifest_pointing_outside_or_at_devices_is_rejected() {
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let out = outside_dir();
    let secret = out.path().join("secret").display().to_string();
    for (config_entry, expect) in [
        (E::Symlink("config.json", &secret), "outside"),
        (
            E::Raw(EntryType::Char, "config.json", "", b""),
            "not a regular file",
        ),
    ] {
        let manifest = br#"[{"Config":"config.json","RepoTags":["x:1"],"Layers":[]}]"#;
        let tar = src.path().join("a.tar");
        std::fs::write(
            &tar,
            tar_bytes(&[E::File("manifest.json", manifest), config_entry]),
        )
        .unwrap();
        let err = store.import_archive(&tar, None).unwrap_err();
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
        assert_store_empty(&root);
    }
}
