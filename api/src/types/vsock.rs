//! `PUT /vsock`.

use serde::{Deserialize, Serialize};

/// A virtio-vsock device backed by Unix sockets on the host (Firecracker's model: the host
/// connects to `uds_path` and sends `CONNECT <port>\n`; guest connections go to
/// `<uds_path>_<port>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Deprecated in Firecracker and ignored; accepted for old clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    /// Context id of the guest (3 or more; 0, 1 and 2 are reserved).
    pub guest_cid: u32,
    /// Host path of the Unix socket the VMM listens on.
    pub uds_path: String,
}
