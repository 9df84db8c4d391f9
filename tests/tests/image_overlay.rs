//! Whiteouts in layers hide lower files when the layers are mounted with overlayfs.

mod image_common;

use std::path::{Path, PathBuf};

use image_common::*;
use runtime::image::ImageStore;

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn mount_overlay(layers: &[PathBuf], work: &Path) -> Mounted {
    let (upper, wd, merged) = (work.join("upper"), work.join("work"), work.join("merged"));
    for d in [&upper, &wd, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        wd.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    Mounted(merged)
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_files_in_overlayfs() {
    let (t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let layers = [
        Layer {
            tar: tar_bytes(&[
                E::Dir("a"),
                E::File("a/gone", b"old"),
                E::File("a/kept", b"kept"),
                E::Dir("d"),
                E::File("d/hidden", b"lower"),
                E::Dir("d/sub"),
            ]),
            gzip: true,
        },
        Layer {
            tar: tar_bytes(&[
                E::File("a/.wh.gone", b""),
                E::Dir("d"),
                E::File("d/.wh..wh..opq", b""),
                E::File("d/new", b"upper"),
            ]),
            gzip: true,
        },
    ];
    oci_layout(src.path(), &layers, &config_json(&layers, &[], &[]), None);
    store.import_oci_layout(src.path(), Some("wh")).unwrap();
    let img = store.get("wh").unwrap();

    // The layer holds overlayfs whiteouts, not the OCI marker files.
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(img.layers[1].join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(!img.layers[1].join("a/.wh.gone").exists());
    assert!(!img.layers[1].join("d/.wh..wh..opq").exists());

    let m = mount_overlay(&img.layers, t.path());
    assert!(!m.0.join("a/gone").exists(), "whiteout did not hide a/gone");
    assert_eq!(std::fs::read(m.0.join("a/kept")).unwrap(), b"kept");
    assert_eq!(
        ls(&m.0.join("d")),
        vec!["new"],
        "opaque dir still shows lower entries"
    );
    assert_eq!(std::fs::read(m.0.join("d/new")).unwrap(), b"upper");

    // While mounted, the image cannot be removed; afterwards it can, with its layers.
    let err = store.remove("wh").unwrap_err();
    assert!(
        matches!(err, runtime::image::ImageError::InUse(..)),
        "{err}"
    );
    assert!(err.to_string().contains("merged"), "{err}");
    assert!(img.layers.iter().all(|l| l.is_dir()));
    drop(m);
    store.remove("wh").unwrap();
    assert_store_empty(&root);
}

#[test]
fn pax_xattrs_are_applied_but_never_overlay_ones() {
    let (_t, root) = store_dir();
    let store = ImageStore::open(&root).unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut pax = pax_record("SCHILY.xattr.user.vmctl", "ok");
    pax.extend(pax_record("SCHILY.xattr.trusted.overlay.opaque", "y"));
    let tar = tar_bytes(&[
        E::Dir("d"),
        E::Raw(tar::EntryType::XHeader, "PaxHeaders/d", "", &pax),
        E::Dir("d/"),
        E::File("d/f", b"x"),
    ]);
    let tarball = src.path().join("x.tar");
    std::fs::write(&tarball, tar).unwrap();
    store.import_rootfs(&tarball, Some("pax")).unwrap();
    let d = store.get("pax").unwrap().layers[0].join("d");
    assert_eq!(get_xattr(&d, "user.vmctl").as_deref(), Some(&b"ok"[..]));
    assert_eq!(
        get_xattr(&d, "trusted.overlay.opaque"),
        None,
        "a layer forged an opaque dir"
    );
    assert!(d.join("f").exists());
}
