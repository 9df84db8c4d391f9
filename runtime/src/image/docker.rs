//! Import of image archives: an OCI layout packed as tar, or a `docker save` tar (old format:
//! `<id>.json` + `<id>/layer.tar`; new format: `blobs/sha256/<hex>`; both list them in
//! `manifest.json`).

use std::fs::{self, File};
use std::io::BufReader;
use std::path::Path;

use oci_spec::image::ImageConfiguration;
use serde::Deserialize;

use super::digest::{sha256_bytes, sha256_hex};
use super::error::{ImageError, IoContext, Result};
use super::layers::{ensure_layer, file_inside};
use super::store::Record;
use super::unpack::{unpack, Whiteouts};
use super::{ImageConfig, ImageInfo, ImageStore};

#[derive(Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn choose<'m>(
    all: &'m [DockerManifest],
    name: Option<&str>,
    path: &Path,
) -> Result<&'m DockerManifest> {
    if let Some(name) = name {
        let want = super::store::normalize_name(name)?;
        if let Some(m) = all.iter().find(|m| {
            m.repo_tags
                .iter()
                .flatten()
                .any(|t| super::store::normalize_name(t).ok().as_deref() == Some(want.as_str()))
        }) {
            return Ok(m);
        }
    }
    match all {
        [one] => Ok(one),
        [] => Err(ImageError::Format(format!(
            "{}: manifest.json lists no image",
            path.display()
        ))),
        many => {
            let tags: Vec<String> = many
                .iter()
                .flat_map(|m| m.repo_tags.clone().unwrap_or_default())
                .collect();
            Err(ImageError::Format(format!(
                "{} holds {} images ({}); pick one with --name TAG",
                path.display(),
                many.len(),
                tags.join(", ")
            )))
        }
    }
}

impl ImageStore {
    /// Imports an image archive: an OCI layout packed as tar, or a `docker save` tar.
    /// `name` picks the image if the archive holds several and names the stored image;
    /// without it, the archive's own tags are used.
    pub fn import_archive(
        &self,
        tar_path: impl AsRef<Path>,
        name: Option<&str>,
    ) -> Result<ImageInfo> {
        let tar_path = tar_path.as_ref();
        let _lock = self.lock()?;
        self.guarded(|| self.import_archive_locked(tar_path, name))
    }

    fn import_archive_locked(&self, tar_path: &Path, name: Option<&str>) -> Result<ImageInfo> {
        let tmp = self.temp_dir("archive")?;
        let f = File::open(tar_path).ctx(|| format!("open {}", tar_path.display()))?;
        unpack(
            BufReader::new(f),
            tmp.path(),
            &tar_path.display().to_string(),
            Whiteouts::Keep,
        )?;
        let dir = tmp.path();
        if dir.join("manifest.json").is_file() {
            self.import_docker(dir, tar_path, name)
        } else if dir.join("oci-layout").is_file() {
            self.import_oci_locked(dir, name)
        } else {
            Err(ImageError::Format(format!(
                "{} is neither a `docker save` archive (no manifest.json) nor an OCI layout \
                 archive (no oci-layout); for a root filesystem tarball use `import_rootfs`",
                tar_path.display()
            )))
        }
    }

    fn import_docker(&self, dir: &Path, tar_path: &Path, name: Option<&str>) -> Result<ImageInfo> {
        let mf = dir.join("manifest.json");
        let data = fs::read(&mf).ctx(|| format!("read {}", mf.display()))?;
        let all: Vec<DockerManifest> =
            serde_json::from_slice(&data).map_err(|cause| ImageError::Json {
                what: format!("manifest.json of {}", tar_path.display()),
                cause,
            })?;
        let m = choose(&all, name, tar_path)?;
        let config_path = file_inside(dir, &m.config)?;
        let config_bytes =
            fs::read(&config_path).ctx(|| format!("read {}", config_path.display()))?;
        let id = sha256_bytes(&config_bytes);
        // The config's file name is its digest in both formats: check it when it looks like one.
        let stem = Path::new(&m.config)
            .file_name()
            .map(|s| s.to_string_lossy().trim_end_matches(".json").to_string())
            .unwrap_or_default();
        if let Ok(hex) = sha256_hex(&format!("sha256:{stem}")) {
            if id != format!("sha256:{hex}") {
                return Err(ImageError::DigestMismatch {
                    what: format!("image config {}", m.config),
                    expected: format!("sha256:{hex}"),
                    actual: id,
                });
            }
        }
        let config = ImageConfiguration::from_reader(config_bytes.as_slice()).map_err(|cause| {
            ImageError::Oci {
                what: format!("config {}", m.config),
                cause,
            }
        })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != m.layers.len() {
            return Err(ImageError::Format(format!(
                "image config lists {} diff ids but manifest.json has {} layers",
                diff_ids.len(),
                m.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (rel, diff_id) in m.layers.iter().zip(diff_ids) {
            let what = format!("layer {rel}");
            layers.push(ensure_layer(&self.root, Some(diff_id), &what, || {
                let p = file_inside(dir, rel)?;
                File::open(&p).ctx(|| format!("open {}", p.display()))
            })?);
        }
        let names = match name {
            Some(n) => vec![n.to_string()],
            None => m.repo_tags.clone().unwrap_or_default(),
        };
        self.commit(Record::new(
            id,
            names,
            layers,
            ImageConfig::from_oci(&config),
        ))
    }
}
