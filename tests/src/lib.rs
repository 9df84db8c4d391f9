//! Integration tests against real KVM, namespaces and QEMU.
