//! Helpers shared by the image tests: tar, gzip, OCI layout and docker-save builders.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One tar entry to write.
pub enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// Name and link name written byte for byte, bypassing the tar crate's path checks.
    Raw(tar::EntryType, &'a str, &'a str, &'a [u8]),
}

pub fn tar_bytes(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Hardlink(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Raw(kind, name, link, data) => {
                h.set_entry_type(*kind);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

pub fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// A layer: its uncompressed tar and whether to gzip it.
pub struct Layer {
    pub tar: Vec<u8>,
    pub gzip: bool,
}

pub fn config_json(layers: &[Layer], env: &[&str], cmd: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(&l.tar)).collect();
    serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": env, "Cmd": cmd, "WorkingDir": "/srv", "User": "1000:1000" },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
    .to_string()
    .into_bytes()
}

fn write_blob(dir: &Path, data: &[u8]) -> (String, usize) {
    let d = sha(data);
    let p = dir.join("blobs/sha256");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(hex(&d)), data).unwrap();
    (d, data.len())
}

/// Writes an OCI image layout into `dir`; returns the config digest (the image id).
pub fn oci_layout(dir: &Path, layers: &[Layer], config: &[u8], ref_name: Option<&str>) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let (cd, cs) = write_blob(dir, config);
    let mut descs = Vec::new();
    for l in layers {
        let (data, mt) = if l.gzip {
            (gz(&l.tar), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let (d, s) = write_blob(dir, &data);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": s}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    })
    .to_string();
    let (md, ms) = write_blob(dir, manifest.as_bytes());
    let mut desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
    });
    if let Some(r) = ref_name {
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": r});
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]}).to_string();
    std::fs::write(dir.join("index.json"), index).unwrap();
    cd
}

/// Packs a directory tree into a tar file (symlinks kept as links).
pub fn pack_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap();
}

/// Writes a `docker save` archive: `old` format (`<id>/layer.tar`, `<id>.json`, a repeated
/// layer as a symlink) or new (`blobs/sha256/<hex>`). Returns the image id.
pub fn docker_save(
    out: &Path,
    layers: &[Layer],
    config: &[u8],
    tags: &[&str],
    old: bool,
) -> String {
    let stage = tempfile::tempdir().unwrap();
    let s = stage.path();
    let id = sha(config);
    let mut layer_paths: Vec<String> = Vec::new();
    let config_path;
    if old {
        config_path = format!("{}.json", hex(&id));
        std::fs::write(s.join(&config_path), config).unwrap();
        let mut first_of: Vec<(String, String)> = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let d = sha(&l.tar);
            let lid = format!("{:064x}", i + 1);
            std::fs::create_dir_all(s.join(&lid)).unwrap();
            if let Some((_, p)) = first_of.iter().find(|(x, _)| *x == d) {
                std::os::unix::fs::symlink(format!("../{p}"), s.join(&lid).join("layer.tar"))
                    .unwrap();
            } else {
                std::fs::write(s.join(&lid).join("layer.tar"), &l.tar).unwrap();
                first_of.push((d, format!("{lid}/layer.tar")));
            }
            std::fs::write(s.join(&lid).join("VERSION"), "1.0").unwrap();
            layer_paths.push(format!("{lid}/layer.tar"));
        }
    } else {
        let (cd, _) = write_blob(s, config);
        config_path = format!("blobs/sha256/{}", hex(&cd));
        for l in layers {
            let (d, _) = write_blob(s, &l.tar);
            layer_paths.push(format!("blobs/sha256/{}", hex(&d)));
        }
    }
    let manifest = serde_json::json!([{
        "Config": config_path, "RepoTags": tags, "Layers": layer_paths,
    }]);
    std::fs::write(s.join("manifest.json"), manifest.to_string()).unwrap();
    pack_dir(s, out);
    id
}

/// Entries of a directory (names), sorted.
pub fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Asserts the store holds no image, no layer and no scratch data.
pub fn assert_store_empty(root: &Path) {
    for sub in ["images", "layers", "tmp"] {
        assert_eq!(ls(&root.join(sub)), Vec::<String>::new(), "{sub} not empty");
    }
}

pub fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    (t, root)
}

/// A PAX extended-header record "LEN key=value\n" (LEN counts the whole record).
pub fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// An extended attribute of `path` itself, if set.
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}
