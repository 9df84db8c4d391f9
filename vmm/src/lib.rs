//! KVM virtual machine: guest memory, vCPUs, boot, event loop, device wiring.
