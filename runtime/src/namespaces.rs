//! Which namespaces a container gets: new ones (unshare) and existing ones joined by path
//! (setns), from the spec's `linux.namespaces`, plus the user namespace's id maps.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Context, Result};

/// The namespace part of a launch.
#[derive(Debug)]
pub(crate) struct Namespaces {
    /// A user namespace to join (first of all).
    pub user_join: Option<OwnedFd>,
    /// Create a new user namespace (before the others, so it owns them).
    pub new_user: bool,
    /// Other namespaces to join, in order.
    pub joins: Vec<(CloneFlags, OwnedFd)>,
    /// Other namespaces to create.
    pub unshare: CloneFlags,
    /// uid_map and gid_map contents for a new user namespace.
    pub uid_map: String,
    pub gid_map: String,
}

pub(crate) fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    let f = std::fs::File::open(path).ctx(|| format!("open namespace {}", path.display()))?;
    Ok(f.into())
}

fn map(m: &[LinuxIdMapping]) -> String {
    m.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            user_join: None,
            new_user: false,
            joins: Vec::new(),
            unshare: CloneFlags::empty(),
            uid_map: String::new(),
            gid_map: String::new(),
        }
    }
}

impl Namespaces {
    /// From a spec. Paths are opened now, so a bad path fails before anything is forked.
    pub(crate) fn from_spec(spec: &Spec) -> Result<Namespaces> {
        let mut ns = Namespaces::default();
        let Some(linux) = spec.linux() else {
            return Ok(ns);
        };
        for n in linux.namespaces().iter().flatten() {
            let f = flag(n.typ());
            match (n.path(), n.typ()) {
                (Some(p), LinuxNamespaceType::User) => ns.user_join = Some(open_ns(p)?),
                (Some(p), _) => ns.joins.push((f, open_ns(p)?)),
                (None, LinuxNamespaceType::User) => ns.new_user = true,
                (None, _) => ns.unshare |= f,
            }
        }
        if ns.new_user {
            ns.uid_map = map(linux.uid_mappings().as_deref().unwrap_or_default());
            ns.gid_map = map(linux.gid_mappings().as_deref().unwrap_or_default());
        }
        Ok(ns)
    }

    /// Joining every namespace of the running process `pid` (exec into a container).
    pub(crate) fn of_process(pid: i32) -> Result<Namespaces> {
        let mut ns = Namespaces::default();
        let own = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).ok();
        for (name, f) in [
            ("user", CloneFlags::CLONE_NEWUSER),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let p = format!("/proc/{pid}/ns/{name}");
            // Joining our own namespace is pointless (and EINVAL for the user namespace).
            if std::fs::read_link(&p).ok() == own(name) {
                continue;
            }
            let fd = open_ns(Path::new(&p))?;
            if f == CloneFlags::CLONE_NEWUSER {
                ns.user_join = Some(fd);
            } else {
                ns.joins.push((f, fd));
            }
        }
        Ok(ns)
    }
}
