//! KVM objects: guest memory, the VM and its vCPUs.

pub mod exits;
pub mod memory;
pub mod vcpu;
pub mod vm;
