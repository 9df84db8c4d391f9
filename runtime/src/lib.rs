//! vmctl container runtime: library and OCI runtime CLI.
pub mod image;
pub mod network;
