//! Image records (`root/images/<id hex>.json`), names, lookup, removal and layer GC.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::digest::sha256_hex;
use super::error::{ImageError, IoContext, Result};
use super::layers::{clean_stale_tmp, layer_dir, TempDir};
use super::{Image, ImageConfig, ImageInfo, ImageStore};

/// What the store keeps about one image.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Record {
    pub id: String,
    pub names: Vec<String>,
    /// Diff ids, bottom layer first.
    pub layers: Vec<String>,
    pub config: ImageConfig,
    /// Import time, seconds since the epoch.
    pub created: u64,
}

impl Record {
    pub(crate) fn new(
        id: String,
        names: Vec<String>,
        layers: Vec<String>,
        config: ImageConfig,
    ) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            id,
            names,
            layers,
            config,
            created,
        }
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            id: self.id.clone(),
            names: self.names.clone(),
            layers: self.layers.clone(),
            created: self.created,
        }
    }
}

/// Checks an image name and adds ":latest" when it has no tag or digest.
pub(crate) fn normalize_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['/', '.', '-', ':'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    if !ok {
        return Err(ImageError::InvalidName(name.to_string()));
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        Ok(name.to_string())
    } else {
        Ok(format!("{name}:latest"))
    }
}

impl ImageStore {
    /// Opens (creating if needed) the image store under `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        for sub in ["images", "layers", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
        }
        let store = Self { root };
        // Clean leftovers of dead importers, unless an import is running right now (then
        // the next open cleans): listing must never wait for a long import.
        if let Ok(_lock) = store.lock_with(FlockArg::LockExclusiveNonblock) {
            clean_stale_tmp(&store.root);
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Exclusive lock over the store's records and layers (held by importers and removers).
    pub(crate) fn lock(&self) -> Result<Flock<File>> {
        self.lock_with(FlockArg::LockExclusive)
    }

    fn lock_with(&self, how: FlockArg) -> Result<Flock<File>> {
        let p = self.root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx(|| format!("open {}", p.display()))?;
        Flock::lock(f, how)
            .map_err(|(_, e)| e)
            .ctx(|| format!("lock {}", p.display()))
    }

    pub(crate) fn temp_dir(&self, prefix: &str) -> Result<TempDir> {
        TempDir::new(&self.root, prefix)
    }

    fn record_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("images")
            .join(format!("{}.json", sha256_hex(id)?)))
    }

    fn records(&self) -> Result<Vec<Record>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let p = e.ctx(|| format!("read {}", dir.display()))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let data = fs::read(&p).ctx(|| format!("read {}", p.display()))?;
                let rec: Record =
                    serde_json::from_slice(&data).map_err(|cause| ImageError::Json {
                        what: p.display().to_string(),
                        cause,
                    })?;
                out.push(rec);
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn write_record(&self, rec: &Record) -> Result<()> {
        let p = self.record_path(&rec.id)?;
        let tmp = p.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(rec).map_err(|cause| ImageError::Json {
            what: p.display().to_string(),
            cause,
        })?;
        let mut f = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        f.write_all(&data)
            .ctx(|| format!("write {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("sync {}", tmp.display()))?;
        fs::rename(&tmp, &p).ctx(|| format!("rename {}", p.display()))
    }

    /// Stores `rec` (merging names into an existing record of the same id); a name moves
    /// from any other image to this one. Call with the store lock held.
    pub(crate) fn commit(&self, mut rec: Record) -> Result<ImageInfo> {
        let names: Vec<String> = rec
            .names
            .iter()
            .map(|n| normalize_name(n))
            .collect::<Result<_>>()?;
        rec.names.clear();
        for other in self.records()? {
            if other.id == rec.id {
                rec.names = other.names.clone();
                rec.created = other.created;
                continue;
            }
            if other.names.iter().any(|n| names.contains(n)) {
                let mut o = other.clone();
                o.names.retain(|n| !names.contains(n));
                self.write_record(&o)?;
            }
        }
        for n in names {
            if !rec.names.contains(&n) {
                rec.names.push(n);
            }
        }
        for l in &rec.layers {
            if !layer_dir(&self.root, l)?.is_dir() {
                return Err(ImageError::Format(format!(
                    "layer {l} of image {} is missing",
                    rec.id
                )));
            }
        }
        self.write_record(&rec)?;
        tracing::info!("stored image {} {:?}", rec.id, rec.names);
        Ok(rec.info())
    }

    /// Runs an import; if it fails, removes the layers it left that no image uses, so a
    /// failed import leaves nothing behind. Call with the store lock held.
    pub(crate) fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let r = f();
        if r.is_err() {
            if let Err(e) = self.gc_layers() {
                tracing::warn!("could not clean up after a failed import: {e}");
            }
        }
        r
    }

    /// Deletes every layer no image record uses. Call with the store lock held.
    fn gc_layers(&self) -> Result<()> {
        let in_use: HashSet<String> = self
            .records()?
            .into_iter()
            .flat_map(|r| r.layers)
            .filter_map(|l| sha256_hex(&l).ok().map(str::to_string))
            .collect();
        let dir = self.root.join("layers");
        for e in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let e = e.ctx(|| format!("read {}", dir.display()))?;
            let hex = e.file_name().to_string_lossy().into_owned();
            if in_use.contains(&hex) {
                continue;
            }
            // Rename first so a half-deleted layer is never visible under its digest.
            let trash = self
                .root
                .join("tmp")
                .join(format!("gc-{}-{hex}", std::process::id()));
            fs::rename(e.path(), &trash).ctx(|| format!("move {} away", e.path().display()))?;
            fs::remove_dir_all(&trash).ctx(|| format!("remove {}", trash.display()))?;
            tracing::info!("removed unused layer sha256:{hex}");
        }
        Ok(())
    }

    fn find(&self, name_or_id: &str) -> Result<Record> {
        let recs = self.records()?;
        if let Ok(n) = normalize_name(name_or_id) {
            if let Some(r) = recs.iter().find(|r| r.names.contains(&n)) {
                return Ok(r.clone());
            }
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&Record> = recs
                .iter()
                .filter(|r| r.id.trim_start_matches("sha256:").starts_with(hex))
                .collect();
            match hits.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                many => {
                    let ids: Vec<&str> = many.iter().map(|r| r.id.as_str()).collect();
                    return Err(ImageError::Ambiguous(
                        name_or_id.to_string(),
                        ids.join(", "),
                    ));
                }
            }
        }
        Err(ImageError::NotFound(name_or_id.to_string()))
    }

    /// The error for a name that is no image: a clearer one if it names a layer.
    fn not_found_or_layer(&self, name: String) -> ImageError {
        let digest = format!("sha256:{}", name.trim_start_matches("sha256:"));
        let users: Vec<String> = self
            .records()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.layers.contains(&digest))
            .map(|r| r.names.first().cloned().unwrap_or(r.id))
            .collect();
        if users.is_empty() {
            ImageError::NotFound(name)
        } else {
            ImageError::LayerInUse(name, users.join(", "))
        }
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        Ok(self.records()?.iter().map(Record::info).collect())
    }

    /// An image by name (":latest" implied) or id (full, "sha256:"-less, or a unique prefix).
    pub fn get(&self, name_or_id: &str) -> Result<Image> {
        let rec = self.find(name_or_id)?;
        let mut layers = Vec::with_capacity(rec.layers.len());
        for l in &rec.layers {
            let d = layer_dir(&self.root, l)?;
            if !d.is_dir() {
                return Err(ImageError::Format(format!(
                    "layer {l} of image {} is missing from {}; remove the image and import it again",
                    rec.id,
                    self.root.display()
                )));
            }
            layers.push(d);
        }
        Ok(Image {
            id: rec.id,
            names: rec.names,
            layers,
            config: rec.config,
        })
    }

    /// Removes an image. Given a name of an image that has other names too, only that name
    /// is removed (like `docker rmi`). Layers no other image uses are deleted.
    pub fn remove(&self, name_or_id: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut rec = match self.find(name_or_id) {
            Err(ImageError::NotFound(n)) => return Err(self.not_found_or_layer(n)),
            r => r?,
        };
        if let Ok(n) = normalize_name(name_or_id) {
            if rec.names.contains(&n) && rec.names.len() > 1 {
                rec.names.retain(|x| *x != n);
                return self.write_record(&rec);
            }
        }
        // Layers only this image uses are deleted with it: refuse while one is mounted.
        let others: HashSet<String> = self
            .records()?
            .into_iter()
            .filter(|r| r.id != rec.id)
            .flat_map(|r| r.layers)
            .collect();
        let doomed: Vec<PathBuf> = rec
            .layers
            .iter()
            .filter(|l| !others.contains(*l))
            .map(|l| layer_dir(&self.root, l))
            .collect::<Result<_>>()?;
        let doomed: Vec<&Path> = doomed.iter().map(PathBuf::as_path).collect();
        if let Some(user) = super::inuse::mounted_user(&doomed) {
            return Err(ImageError::InUse(name_or_id.to_string(), user));
        }
        let p = self.record_path(&rec.id)?;
        fs::remove_file(&p).ctx(|| format!("remove {}", p.display()))?;
        self.gc_layers()?;
        tracing::info!("removed image {}", rec.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_name;

    #[test]
    fn names_get_latest_unless_tagged() {
        assert_eq!(normalize_name("busybox").unwrap(), "busybox:latest");
        assert_eq!(
            normalize_name("vmctl/busybox:1.36").unwrap(),
            "vmctl/busybox:1.36"
        );
        assert_eq!(
            normalize_name("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_name("app@sha256:ab").unwrap(), "app@sha256:ab");
        for bad in ["", "has space", "/abs", "-x", "semi;colon", "../x"] {
            assert!(normalize_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
