//! The one place that knows the image store (`runtime::image`, via `crate::images`) and the
//! bridge network (`runtime::network`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use runtime::image::ImageError;
use runtime::network::{BridgeConfig, Ipv4Net, NetworkMode, PortMapping};

use crate::cli::StoreArgs;

/// What vmctl needs of an image.
pub struct Image {
    /// The name it was asked for (or the default image's name).
    pub reference: String,
    /// Layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// Resolves IMAGE (name, id or id prefix) in the image store; the embedded default image
/// when left out.
pub fn image(store: &StoreArgs, name: Option<&str>) -> Result<Image> {
    let img = match crate::images::resolve(store, name) {
        Ok(img) => img,
        Err(e) => match (e.downcast_ref::<ImageError>(), name) {
            (Some(ImageError::NotFound(_)), Some(n)) if Path::new(n).is_dir() => bail!(
                "image {n:?} not found: IMAGE is a name or id in the image store, not a \
                 directory; import the root filesystem with `vmctl image import {n} --name NAME` \
                 and run NAME"
            ),
            (Some(ImageError::NotFound(_)), Some(n)) => bail!(
                "image {n:?} not found in {}; import it with `vmctl image import PATH --name {n}` \
                 (PATH: a root filesystem directory or tarball, an OCI layout or a `docker save` \
                 tar), see `vmctl images`",
                store.root.display()
            ),
            _ => return Err(e),
        },
    };
    let reference = name
        .map(str::to_string)
        .or_else(|| img.names.first().cloned())
        .unwrap_or_else(|| img.id.clone());
    Ok(Image {
        reference,
        layers: img.layers,
        env: img.config.env,
        cmd: img.config.cmd,
        entrypoint: img.config.entrypoint,
        workdir: img.config.workdir,
        user: img.config.user,
    })
}

/// Resolves a user name of the image (`USER nobody`) through the image's /etc/passwd and
/// /etc/group (top layer first); numeric ids and "root" pass through.
pub fn user_ids(layers: &[PathBuf], user: &str) -> Result<String> {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let lookup = |file: &str, name: &str, field: usize| -> Option<String> {
        if name.is_empty() || name == "root" || name.parse::<u32>().is_ok() {
            return Some(name.to_string());
        }
        let text = layers
            .iter()
            .rev()
            .find_map(|l| std::fs::read_to_string(l.join(file)).ok())?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f.get(field).map(|s| s.to_string()))?
        })
    };
    let uid = lookup("etc/passwd", u, 2).ok_or_else(|| {
        anyhow::anyhow!("user {u:?} of the image is not in its /etc/passwd; use --user UID[:GID]")
    })?;
    let gid = if g.is_empty() {
        // The user's primary group from passwd, as docker does.
        lookup("etc/passwd", u, 3).filter(|_| u.parse::<u32>().is_err() && u != "root")
    } else {
        Some(lookup("etc/group", g, 2).ok_or_else(|| {
            anyhow::anyhow!("group {g:?} of the image is not in its /etc/group; use --user UID:GID")
        })?)
    };
    Ok(match gid {
        Some(gid) => format!("{uid}:{gid}"),
        None => uid,
    })
}

/// The network settings of `vmctl run`, checked before anything is created.
#[derive(Clone, Debug)]
pub struct NetSettings {
    pub mode: NetworkMode,
    pub bridge: BridgeConfig,
    pub publish: Vec<PortMapping>,
}

/// Parses --network, -p, --bridge and --subnet; IPAM state lives under `state/network`.
pub fn net_settings(
    state: &Path,
    mode: &str,
    publish: &[String],
    bridge: &str,
    subnet: &str,
) -> Result<NetSettings> {
    let mode: NetworkMode = mode
        .parse()
        .map_err(|e| anyhow::anyhow!("--network {mode:?}: {e}"))?;
    let publish = publish
        .iter()
        .map(|p| p.parse().map_err(|e| anyhow::anyhow!("-p {p:?}: {e}")))
        .collect::<Result<Vec<PortMapping>>>()?;
    if mode != NetworkMode::Bridge && !publish.is_empty() {
        bail!(
            "-p {}: publishing ports needs --network bridge (the default), not {mode:?}",
            publish[0]
        );
    }
    let subnet: Ipv4Net = subnet
        .parse()
        .map_err(|e| anyhow::anyhow!("--subnet {subnet:?}: {e}"))?;
    if subnet.prefix() > 30 {
        bail!("--subnet {subnet}: too small; use a /30 or larger subnet like 10.88.0.0/16");
    }
    let ok = !bridge.is_empty()
        && bridge.len() <= 15
        && bridge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!("--bridge {bridge:?}: use 1 to 15 letters, digits, '_', '.' or '-'");
    }
    Ok(NetSettings {
        mode,
        bridge: BridgeConfig {
            name: bridge.to_string(),
            subnet,
            state_dir: state.join("network"),
        },
        publish,
    })
}

/// Connects the container (its network namespace, via its pid) to the network; returns its
/// address on the bridge.
pub fn attach(net: &NetSettings, id: &str, pid: i32) -> Result<Option<String>> {
    let att = runtime::network::connect(net.mode, &net.bridge, id, pid, &net.publish)
        .map_err(|e| anyhow::anyhow!("--network {:?}: {e}", mode_name(net.mode)))?;
    Ok(att.map(|a| a.ip.to_string()))
}

/// Undoes `attach` (idempotent): veth, port rules and the address go.
pub fn detach(bridge: &BridgeConfig, id: &str) {
    if let Err(e) = runtime::network::disconnect(bridge, id) {
        tracing::warn!("detach {id} from {}: {e}", bridge.name);
    }
}

pub fn mode_name(m: NetworkMode) -> &'static str {
    match m {
        NetworkMode::None => "none",
        NetworkMode::Host => "host",
        NetworkMode::Bridge => "bridge",
    }
}
