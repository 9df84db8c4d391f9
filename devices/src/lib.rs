//! Emulated devices.
//!
//! `bus` is the seam between vCPU exits and device models: the VMM registers every device on a
//! PIO or MMIO [`bus::Bus`] and dispatches exits to it; devices never see KVM.

pub mod bus;
pub mod legacy;
pub mod virtio;
