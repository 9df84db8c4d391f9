//! IP address management: a JSON state file per bridge, guarded by a file lock, that records
//! every attachment (its address, veth and published ports).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::error::{io_err, NetError, Result};
use super::subnet::Ipv4Net;
use super::Attachment;

#[derive(Serialize, Deserialize, Default, Debug)]
pub(crate) struct State {
    pub attachments: BTreeMap<String, Attachment>,
}

/// The state of one bridge, locked for as long as this value lives.
pub(crate) struct Locked {
    _lock: Flock<File>,
    path: PathBuf,
    pub state: State,
}

impl Locked {
    /// Locks and loads `dir/ipam.json` (creating `dir`).
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let lock_path = dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("open {}", lock_path.display())))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| NetError::Io {
            context: format!("lock {}", lock_path.display()),
            cause: e.into(),
        })?;
        let path = dir.join("ipam.json");
        let state = match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|cause| NetError::State {
                path: path.display().to_string(),
                cause,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        };
        Ok(Self {
            _lock: lock,
            path,
            state,
        })
    }

    /// Writes the state back atomically.
    pub(crate) fn save(&self) -> Result<()> {
        let data = serde_json::to_vec_pretty(&self.state).map_err(|cause| NetError::State {
            path: self.path.display().to_string(),
            cause,
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
        f.write_all(&data)
            .and_then(|_| f.sync_all())
            .map_err(io_err(format!("write {}", tmp.display())))?;
        fs::rename(&tmp, &self.path).map_err(io_err(format!("rename {}", self.path.display())))
    }

    /// The lowest free host address of `subnet` other than `gateway`.
    pub(crate) fn allocate(&self, subnet: &Ipv4Net, gateway: Ipv4Addr) -> Result<Ipv4Addr> {
        let used: std::collections::HashSet<Ipv4Addr> =
            self.state.attachments.values().map(|a| a.ip).collect();
        (1..=subnet.hosts())
            .filter_map(|n| subnet.host(n))
            .find(|ip| *ip != gateway && !used.contains(ip))
            .ok_or_else(|| NetError::Exhausted(subnet.to_string()))
    }
}
