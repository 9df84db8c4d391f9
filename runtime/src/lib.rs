//! vmctl container runtime: library and OCI runtime CLI.
//!
//! ```no_run
//! use runtime::{ContainerBuilder, spec};
//! let spec = spec::docker_default(vec!["/bin/true".into()], "/path/to/rootfs".as_ref());
//! let mut c = ContainerBuilder::new("demo", "/run/vmctl-runtime").spec(spec).create()?;
//! c.start()?;
//! let code = c.wait()?;
//! c.delete(false)?;
//! # Ok::<(), runtime::Error>(())
//! ```

pub mod cgroups;
mod child;
pub mod console;
mod container;
mod error;
mod hooks;
pub mod image;
mod init;
mod launch;
mod mounts;
mod namespaces;
pub mod network;
mod rootfs;
pub mod security;
pub mod spec;
mod state;
mod sync;

pub use cgroups::{Cgroup, Layout, Stats};
pub use container::{wait_pid, Container, ContainerBuilder, DEFAULT_ROOT};
pub use error::{Error, Result};
pub use oci_spec;
pub use rootfs::Overlay;
pub use state::{State, Status};
