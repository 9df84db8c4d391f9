//! The cgroup view of the container level. crun refuses hosts whose cgroups are hybrid (v1
//! controllers, the unified v2 hierarchy at `/sys/fs/cgroup/unified`, like the build
//! machines). On such a host, when crun is a peer, the container level runs every runtime in
//! a private mount namespace whose `/sys/fs/cgroup` is the unified hierarchy, as on a cgroup
//! v2 host: all three runtimes see the same cgroups (v2, with whatever controllers the host
//! left there, none on a hybrid host, so no limits apply), and crun can run.

use std::fs::File;
use std::path::Path;

use anyhow::Context;
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

/// Where a hybrid host mounts the unified hierarchy.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Whether `/sys/fs/cgroup` is v1 (or a tmpfs of v1 hierarchies) with v2 at [`UNIFIED`].
pub fn host_is_hybrid() -> bool {
    let is_v2 = |p: &str| statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
    !is_v2("/sys/fs/cgroup") && Path::new(UNIFIED).is_dir() && is_v2(UNIFIED)
}

/// While alive, this process is in a private mount namespace with cgroup2 on
/// `/sys/fs/cgroup`; dropping it returns to the mount namespace it came from.
pub struct UnifiedView {
    orig: File,
}

impl UnifiedView {
    /// Enters the view. Fails (changing nothing) where the process shares its filesystem
    /// state with other threads, or lacks CAP_SYS_ADMIN.
    pub fn enter() -> anyhow::Result<UnifiedView> {
        let orig = File::open("/proc/self/ns/mnt").context("open /proc/self/ns/mnt")?;
        unshare(CloneFlags::CLONE_NEWNS).context("unshare the mount namespace")?;
        let view = UnifiedView { orig };
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("make / private in the bench's mount namespace")?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("cgroup2"),
            "/sys/fs/cgroup",
            Some("cgroup2"),
            flags,
            None::<&str>,
        )
        .context("mount cgroup2 on /sys/fs/cgroup")?;
        Ok(view)
    }
}

impl Drop for UnifiedView {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.orig, CloneFlags::CLONE_NEWNS) {
            eprintln!("vmctl bench: return to the host's mount namespace: {e}");
        }
    }
}
