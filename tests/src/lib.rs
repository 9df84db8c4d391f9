//! Integration tests against real KVM, namespaces and QEMU.
//!
//! Shared helpers: [`console`] (a guest console read from the `vmctl` binary), [`guest`] (the tiny ring-3 test guests), [`linux`] (the guest kernel), [`vm_run`] (run a VM in-process
//! with a timeout and capture its console), [`vmctl_bin`] (the `vmctl` binary for CLI tests).

pub mod console;
pub mod guest;
pub mod linux;
pub mod vm_run;
pub mod vmctl_bin;
