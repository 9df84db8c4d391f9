//! Process security: capabilities, seccomp (OCI profiles compiled with seccompiler, and a
//! docker-like default profile), no_new_privs, identity and rlimits.

pub mod caps;
pub mod profile;
pub mod seccomp;
pub(crate) mod syscalls;
