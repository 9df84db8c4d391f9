//! vmctl guest agent (PID 1 inside microVMs) and its host-side protocol.
//!
//! - [`protocol`]: the wire format (JSON lines + raw data frames), shared by both sides;
//! - [`client`]: the host side (handshake, requests, output/exit events);
//! - the agent itself is the `vmctl-agent` binary (src/bin/vmctl-agent/).

pub mod client;
pub mod protocol;

// Host side of VM-backed runs (vmctl uses these for --isolation microvm and hosted).
pub mod disk;
pub mod registry;
pub mod session;
