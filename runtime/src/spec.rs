//! Loading and checking an OCI runtime-spec `config.json`, and vmctl's docker-like defaults.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    get_default_maskedpaths, get_default_mounts, get_default_readonly_paths, Linux, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, Mount, Process, Root, Spec,
};

use crate::error::{Error, Result};
use crate::security::{caps, profile};

/// Reads `bundle/config.json`; a parse error names the JSON path of the bad field.
pub fn load(bundle: &Path) -> Result<Spec> {
    if !bundle.is_dir() {
        return Err(Error::Bundle {
            path: bundle.into(),
            reason: "not a directory".into(),
        });
    }
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| Error::Bundle {
        path: bundle.into(),
        reason: format!("cannot read config.json: {e}"),
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| Error::Config {
        path: path.clone(),
        field: match e.path().to_string() {
            p if p == "." => "(document)".into(),
            p => p,
        },
        reason: e.inner().to_string(),
    })?;
    validate(&spec, bundle, &path)?;
    Ok(spec)
}

fn bad(path: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        path: path.into(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// Semantic checks the JSON schema alone does not make.
pub fn validate(spec: &Spec, bundle: &Path, path: &Path) -> Result<()> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| bad(path, "root", "missing; set root.path"))?;
    let rootfs = rootfs_path(bundle, root);
    if !rootfs.is_dir() {
        return Err(bad(
            path,
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| bad(path, "process", "missing"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(bad(path, "process.args", "empty; give the command to run"));
    }
    if !process.cwd().is_absolute() {
        return Err(bad(
            path,
            "process.cwd",
            format!("{} is not absolute", process.cwd().display()),
        ));
    }
    if let Some(linux) = spec.linux() {
        let ns = linux.namespaces().as_deref().unwrap_or_default();
        for (i, n) in ns.iter().enumerate() {
            if ns[..i].iter().any(|m| m.typ() == n.typ()) {
                return Err(bad(
                    path,
                    &format!("linux.namespaces[{i}]"),
                    format!("duplicate {:?}", n.typ()),
                ));
            }
            if n.typ() == LinuxNamespaceType::Time {
                return Err(bad(
                    path,
                    &format!("linux.namespaces[{i}]"),
                    "time namespaces are not supported",
                ));
            }
        }
        let userns = ns
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
        if userns && linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
            return Err(bad(
                path,
                "linux.uidMappings",
                "a new user namespace needs uid mappings",
            ));
        }
        let new_uts = ns
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Uts && n.path().is_none());
        if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !new_uts {
            return Err(bad(
                path,
                "hostname",
                "setting a hostname needs a new uts namespace in linux.namespaces",
            ));
        }
        for m in spec.mounts().iter().flatten() {
            if !m.destination().is_absolute() {
                return Err(bad(
                    path,
                    "mounts.destination",
                    format!("{} is not absolute", m.destination().display()),
                ));
            }
        }
    }
    Ok(())
}

/// `root.path` resolved against the bundle.
pub fn rootfs_path(bundle: &Path, root: &Root) -> PathBuf {
    if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    }
}

/// A spec with docker's defaults: the namespaces pid, mount, uts, ipc, net, cgroup; docker's
/// capability set; no_new_privs; the default seccomp profile; OCI default mounts, masked and
/// read-only paths; rootfs `rootfs`. Callers adjust process, mounts and resources.
pub fn docker_default(args: Vec<String>, rootfs: &Path) -> Spec {
    let mut process = Process::default();
    process.set_args(Some(args));
    process.set_capabilities(Some(caps::docker_default()));
    process.set_no_new_privileges(Some(true));
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(false));
    let mut linux = Linux::default();
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|t| {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n
    })
    .collect();
    linux.set_namespaces(Some(namespaces));
    linux.set_masked_paths(Some(get_default_maskedpaths()));
    linux.set_readonly_paths(Some(get_default_readonly_paths()));
    linux.set_resources(Some(LinuxResources::default()));
    linux.set_seccomp(Some(profile::default_profile(
        process.capabilities().as_ref(),
    )));
    let mounts: Vec<Mount> = get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_linux(Some(linux));
    spec.set_mounts(Some(mounts));
    spec.set_hostname(None);
    spec
}

/// Makes `spec` runnable by an unprivileged user: a user namespace mapping container root to
/// `uid`/`gid` (one id each), and mounts without options that need unmapped ids.
pub fn make_rootless(spec: &mut Spec, uid: u32, gid: u32) {
    use oci_spec::runtime::LinuxIdMappingBuilder;
    let map = |host: u32| {
        vec![LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(1u32)
            .build()
            .expect("complete")]
    };
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut ns = linux.namespaces().clone().unwrap_or_default();
    if !ns.iter().any(|n| n.typ() == LinuxNamespaceType::User) {
        let mut n = LinuxNamespace::default();
        n.set_typ(LinuxNamespaceType::User);
        ns.push(n);
    }
    linux.set_namespaces(Some(ns));
    linux.set_uid_mappings(Some(map(uid)));
    linux.set_gid_mappings(Some(map(gid)));
    linux.set_resources(None);
    spec.set_linux(Some(linux));
    if let Some(mounts) = spec.mounts().clone() {
        let mounts = mounts
            .into_iter()
            .map(|mut m| {
                if let Some(opts) = m.options().clone() {
                    m.set_options(Some(
                        opts.into_iter()
                            .filter(|o| !o.starts_with("gid="))
                            .collect(),
                    ));
                }
                m
            })
            .collect();
        spec.set_mounts(Some(mounts));
    }
}
