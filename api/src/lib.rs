//! Firecracker-compatible REST API: types, Unix-socket server, client.
