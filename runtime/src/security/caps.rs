//! Capabilities: the docker default set, and applying an OCI `process.capabilities`.

use std::collections::HashSet;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::{Error, Result};

/// Docker's default capability set for containers.
pub const DOCKER_DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// `LinuxCapabilities` holding `set` in bounding, effective and permitted (docker leaves
/// inheritable and ambient empty).
pub fn docker_default() -> LinuxCapabilities {
    let set: Capabilities = DOCKER_DEFAULT.iter().copied().collect();
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(set.clone()));
    c.set_effective(Some(set.clone()));
    c.set_permitted(Some(set));
    c.set_inheritable(None);
    c.set_ambient(None);
    c
}

/// Whether `caps` keeps `cap` in its bounding set (used to shape the default seccomp profile).
pub fn has(caps: Option<&LinuxCapabilities>, cap: Capability) -> bool {
    caps.and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| b.contains(&cap))
}

fn to_caps(set: &Option<Capabilities>) -> Result<CapsHashSet> {
    let mut out = HashSet::new();
    for c in set.iter().flatten() {
        // oci-spec serialises as "CAP_CHOWN", the caps crate parses the same names.
        let name = serde_json::to_string(c).unwrap_or_default();
        let name = name.trim_matches('"');
        let cap: Cap = name.parse().map_err(|_| Error::Invalid {
            what: "capability",
            value: name.into(),
            hint: "this kernel/caps crate does not know it; remove it from the config".into(),
        })?;
        out.insert(cap);
    }
    Ok(out)
}

fn sys(what: &str, e: caps::errors::CapsError) -> Error {
    Error::Setup(format!("{what}: {e}"))
}

/// Drops the bounding set to `c.bounding` (call while still privileged, before setuid).
pub fn drop_bounding(c: &LinuxCapabilities) -> Result<()> {
    let keep = to_caps(c.bounding())?;
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| sys("drop bounding cap", e))?;
        }
    }
    Ok(())
}

/// Sets effective, permitted, inheritable and ambient (call after setuid with keep-caps).
pub fn apply(c: &LinuxCapabilities) -> Result<()> {
    let permitted = to_caps(c.permitted())?;
    let effective = to_caps(c.effective())?;
    let inheritable = to_caps(c.inheritable())?;
    caps::set(None, CapSet::Effective, &effective).map_err(|e| sys("set effective caps", e))?;
    caps::set(None, CapSet::Inheritable, &inheritable)
        .map_err(|e| sys("set inheritable caps", e))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|e| sys("set permitted caps", e))?;
    let _ = caps::clear(None, CapSet::Ambient);
    for cap in to_caps(c.ambient())? {
        caps::raise(None, CapSet::Ambient, cap).map_err(|e| sys("raise ambient cap", e))?;
    }
    Ok(())
}
