//! Import of an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/*`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, OciLayout, Os,
    ANNOTATION_REF_NAME,
};

use super::digest::{sha256_file, sha256_hex};
use super::error::{ImageError, IoContext, Result};
use super::layers::{ensure_layer, file_inside};
use super::store::Record;
use super::{ImageConfig, ImageInfo, ImageStore};

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One OCI layout directory being read.
struct Layout<'a> {
    dir: &'a Path,
}

impl Layout<'_> {
    /// Path of a blob after checking that it exists and matches its descriptor.
    fn blob(&self, desc: &Descriptor) -> Result<PathBuf> {
        let digest = desc.digest().to_string();
        let path = file_inside(self.dir, &format!("blobs/sha256/{}", sha256_hex(&digest)?))?;
        let (actual, size) = sha256_file(&path)?;
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("blob {}", path.display()),
                expected: digest,
                actual,
            });
        }
        if size != desc.size() {
            return Err(ImageError::Format(format!(
                "blob {} has {size} bytes but its descriptor says {}",
                path.display(),
                desc.size()
            )));
        }
        Ok(path)
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<File> {
        let p = self.blob(desc)?;
        File::open(&p).ctx(|| format!("open {}", p.display()))
    }

    /// Follows nested indexes down to the manifest for this host's platform.
    fn manifest(&self, desc: &Descriptor) -> Result<ImageManifest> {
        let mt = desc.media_type();
        let is_index =
            *mt == MediaType::ImageIndex || matches!(mt, MediaType::Other(s) if s == DOCKER_INDEX);
        if !is_index {
            return ImageManifest::from_reader(self.open_blob(desc)?).map_err(|cause| {
                ImageError::Oci {
                    what: format!("manifest {}", desc.digest()),
                    cause,
                }
            });
        }
        let index =
            ImageIndex::from_reader(self.open_blob(desc)?).map_err(|cause| ImageError::Oci {
                what: format!("index {}", desc.digest()),
                cause,
            })?;
        let host = (Os::Linux, Arch::default());
        let chosen = index.manifests().iter().find(|m| {
            m.platform()
                .as_ref()
                .is_none_or(|p| (p.os().clone(), p.architecture().clone()) == host)
        });
        match chosen {
            Some(m) => self.manifest(m),
            None => Err(ImageError::Format(format!(
                "index {} has no manifest for linux/{}",
                desc.digest(),
                Arch::default()
            ))),
        }
    }
}

fn ref_names(desc: &Descriptor) -> (Option<String>, Option<String>) {
    let ann = desc.annotations().as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).cloned();
    (get(CONTAINERD_NAME), get(ANNOTATION_REF_NAME))
}

/// Picks the manifest descriptor in `index.json` that `name` asks for (or the only one).
fn choose<'d>(index: &'d ImageIndex, name: Option<&str>, dir: &Path) -> Result<&'d Descriptor> {
    let all = index.manifests();
    if let Some(name) = name {
        let tag = name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .filter(|t| !t.contains('/'));
        let hit = all.iter().find(|d| {
            let (full, r) = ref_names(d);
            full.as_deref() == Some(name)
                || r.as_deref() == Some(name)
                || (r.is_some() && r.as_deref() == tag)
        });
        if let Some(d) = hit {
            return Ok(d);
        }
    }
    match all.as_slice() {
        [one] => Ok(one),
        [] => Err(ImageError::Format(format!(
            "{}/index.json lists no image",
            dir.display()
        ))),
        many => {
            let refs: Vec<String> = many
                .iter()
                .map(|d| {
                    let (full, r) = ref_names(d);
                    full.or(r).unwrap_or_else(|| d.digest().to_string())
                })
                .collect();
            Err(ImageError::Format(format!(
                "{} holds {} images ({}); pick one with --name REF",
                dir.display(),
                many.len(),
                refs.join(", ")
            )))
        }
    }
}

impl ImageStore {
    /// Imports the image of an OCI image layout directory, verifying every blob's digest
    /// and every layer's diff id. `name` picks the image when the layout holds several (by
    /// its ref-name annotation) and names the stored image; without it the annotation's name
    /// is used, if any.
    pub fn import_oci_layout(
        &self,
        dir: impl AsRef<Path>,
        name: Option<&str>,
    ) -> Result<ImageInfo> {
        let dir = dir.as_ref();
        let _lock = self.lock()?;
        self.guarded(|| self.import_oci_locked(dir, name))
    }

    pub(crate) fn import_oci_locked(&self, dir: &Path, name: Option<&str>) -> Result<ImageInfo> {
        let layout_file = dir.join("oci-layout");
        if !layout_file.is_file() {
            return Err(ImageError::Format(format!(
                "{} is not an OCI image layout: {} is missing",
                dir.display(),
                layout_file.display()
            )));
        }
        OciLayout::from_file(&layout_file).map_err(|cause| ImageError::Oci {
            what: layout_file.display().to_string(),
            cause,
        })?;
        let index_file = dir.join("index.json");
        let index = ImageIndex::from_file(&index_file).map_err(|cause| ImageError::Oci {
            what: index_file.display().to_string(),
            cause,
        })?;
        let desc = choose(&index, name, dir)?;
        let layout = Layout { dir };
        let manifest = layout.manifest(desc)?;
        let config_path = layout.blob(manifest.config())?;
        let config_bytes =
            fs::read(&config_path).ctx(|| format!("read {}", config_path.display()))?;
        let config = ImageConfiguration::from_reader(config_bytes.as_slice()).map_err(|cause| {
            ImageError::Oci {
                what: format!("config {}", manifest.config().digest()),
                cause,
            }
        })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(ImageError::Format(format!(
                "image config lists {} diff ids but the manifest has {} layers",
                diff_ids.len(),
                manifest.layers().len()
            )));
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let what = format!("layer {}", desc.digest());
            layers.push(ensure_layer(&self.root, Some(diff_id), &what, || {
                layout.open_blob(desc)
            })?);
        }
        let names = match name {
            Some(n) => vec![n.to_string()],
            None => {
                let (full, r) = ref_names(desc);
                // A bare tag ("latest") is no image name; a full reference is.
                full.or(r.filter(|r| r.contains('/') || r.contains(':')))
                    .into_iter()
                    .collect()
            }
        };
        let id = manifest.config().digest().to_string();
        self.commit(Record::new(
            id,
            names,
            layers,
            ImageConfig::from_oci(&config),
        ))
    }
}
