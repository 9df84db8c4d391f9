//! `GET /`, `GET /version`, `PUT /actions`, `PATCH /vm` and the error body.

use serde::{Deserialize, Serialize};

/// The run state of the microVM, as `GET /` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Configuration phase: `InstanceStart` not yet done.
    #[default]
    #[serde(rename = "Not started")]
    NotStarted,
    /// vCPUs run.
    Running,
    /// vCPUs are paused.
    Paused,
}

/// `GET /` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Id of this microVM.
    pub id: String,
    /// Run state.
    pub state: VmState,
    /// Version of the VMM.
    pub vmm_version: String,
    /// Name of the VMM application.
    pub app_name: String,
}

/// `GET /version` response; the field name is Firecracker's, kept for its clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Version of the VMM.
    pub firecracker_version: String,
}

/// The actions of `PUT /actions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Boot the configured microVM.
    InstanceStart,
    /// Press Ctrl+Alt+Del on the guest's i8042 keyboard.
    SendCtrlAltDel,
    /// Write one line of metrics now.
    FlushMetrics,
}

/// `PUT /actions` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    /// The action to run.
    pub action_type: ActionType,
}

/// The states `PATCH /vm` can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmStateRequest {
    /// Pause the vCPUs.
    Paused,
    /// Resume the vCPUs.
    Resumed,
}

/// `PATCH /vm` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateUpdate {
    /// The wanted state.
    pub state: VmStateRequest,
}

/// Body of every error response: `{"fault_message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultMessage {
    /// What went wrong, naming the bad field or value.
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_firecrackers() {
        assert_eq!(
            serde_json::to_string(&VmState::NotStarted).unwrap(),
            "\"Not started\""
        );
        assert_eq!(
            serde_json::to_string(&VmState::Paused).unwrap(),
            "\"Paused\""
        );
        let a: InstanceActionInfo =
            serde_json::from_str(r#"{"action_type":"InstanceStart"}"#).unwrap();
        assert_eq!(a.action_type, ActionType::InstanceStart);
    }
}
