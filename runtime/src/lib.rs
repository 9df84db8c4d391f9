//! vmctl container runtime: library and OCI runtime CLI.
