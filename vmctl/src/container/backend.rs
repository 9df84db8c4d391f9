//! The one place that knows the image store and the bridge network (runtime::image,
//! runtime::network from the image/network work). Until those land: a rootfs directory or the
//! default busybox image, and loopback-only networking.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What vmctl needs of an image.
pub struct Image {
    pub reference: String,
    /// Layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// Resolves IMAGE: a rootfs directory, or the default busybox image when left out.
// Until runtime::image lands: ImageStore::open(root)?.get(name) / .ensure_default().
pub fn image(state: &Path, name: Option<&str>) -> Result<Image> {
    let (reference, dir) = match name {
        Some(n) if Path::new(n).is_dir() => (n.to_string(), PathBuf::from(n)),
        Some(n) => bail!(
            "image {n:?} not found: the image store is not in this build; pass a rootfs directory"
        ),
        None => ("busybox".to_string(), default_rootfs(state)?),
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("image {}", dir.display()))?;
    Ok(Image {
        reference,
        layers: vec![dir],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cmd: vec!["sh".into()],
        entrypoint: Vec::new(),
        workdir: None,
        user: None,
    })
}

/// A busybox rootfs built once from the host's static busybox.
fn default_rootfs(state: &Path) -> Result<PathBuf> {
    let dir = state.join("images/busybox");
    if dir.join("bin/busybox").exists() {
        return Ok(dir);
    }
    let tmp = state.join(format!("images/.busybox-{}", std::process::id()));
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        std::fs::create_dir_all(tmp.join(d))?;
    }
    std::fs::copy("/bin/busybox", tmp.join("bin/busybox"))
        .context("copy /bin/busybox (install busybox-static)")?;
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()?;
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet))?;
    }
    std::fs::write(
        tmp.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )?;
    std::fs::write(tmp.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp); // another vmctl won the race
    }
    Ok(dir)
}

/// Connects the container (its network namespace, via its pid) to the network.
// Until runtime::network lands: BridgeNetwork::open(state)?.attach(id, pid, &publish).
pub fn attach(
    _state: &Path,
    _id: &str,
    _pid: i32,
    mode: &str,
    publish: &[String],
) -> Result<Option<String>> {
    if mode == "bridge" {
        if !publish.is_empty() {
            bail!("-p needs the bridge network, which is not in this build; use --network host");
        }
        tracing::info!("bridge networking is not in this build: the container has loopback only");
    }
    Ok(None)
}

/// Undoes `attach`.
pub fn detach(_state: &Path, _id: &str) {}
