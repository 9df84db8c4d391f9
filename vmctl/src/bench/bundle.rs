//! The OCI bundle every container runtime is measured on: the default busybox image's root
//! filesystem (copied, read-only in the container) and a default `config.json` (the runtime
//! spec's defaults: pid, net, ipc, uts, mount namespaces, no terminal) running one command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use oci_spec::runtime::Spec;

/// A bundle directory, removed on drop.
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// Creates a bundle from the default image of the store at `image_root`, with `args` as
    /// the container's command.
    pub fn from_default_image(image_root: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let store = runtime::image::ImageStore::open(image_root)
            .with_context(|| format!("opening the image store {}", image_root.display()))?;
        let image = store
            .ensure_default()
            .context("creating the default busybox image")?;
        let dir = tempfile::Builder::new()
            .prefix("vmctl-bench-bundle-")
            .tempdir()
            .context("creating the bundle directory")?;
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs)?;
        // Layers bottom first: copying them in order gives the merged tree (the default image
        // has one layer and no whiteouts).
        for layer in &image.layers {
            let st = Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", layer.display()))
                .arg(&rootfs)
                .status()
                .context("running cp -a")?;
            if !st.success() {
                bail!("cp -a {} {} failed", layer.display(), rootfs.display());
            }
        }
        let bundle = Self { dir };
        bundle.write_config(args)?;
        Ok(bundle)
    }

    /// Rewrites config.json with `args` as the command.
    pub fn write_config(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut spec = Spec::default();
        spec.set_hostname(Some("vmctl-bench".into()));
        if let Some(root) = spec.root_mut() {
            root.set_path(PathBuf::from("rootfs"));
            root.set_readonly(Some(true));
        }
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
            p.set_terminal(Some(false));
        }
        spec.save(self.path().join("config.json"))
            .context("writing config.json")?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
