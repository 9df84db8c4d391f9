//! Integration tests against real KVM, namespaces and QEMU.
//!
//! Shared helpers: [`guest`] (the tiny ring-3 test guests), [`linux`] (the guest kernel), [`vm_run`] (run a VM in-process
//! with a timeout and capture its console), [`vmctl_bin`] (the `vmctl` binary for CLI tests).

pub mod guest;
pub mod linux;
pub mod vm_run;
pub mod vmctl_bin;
