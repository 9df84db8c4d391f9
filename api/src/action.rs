//! The requests the API sends to the VMM and the answers it gets back.

use crate::config::{ConfigError, VmResources};
use crate::types::{
    BlockDeviceConfig, BlockDeviceUpdateConfig, BootSourceConfig, InstanceInfo, LoggerConfig,
    MachineConfig, MachineConfigUpdate, MetricsConfig, NetworkInterfaceConfig,
    NetworkInterfaceUpdateConfig, VersionInfo, VsockConfig,
};

/// One operation of the API, as parsed from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmmAction {
    /// `GET /`
    GetInstanceInfo,
    /// `GET /version`
    GetVersion,
    /// `GET /vm/config`
    GetFullVmConfig,
    /// `GET /machine-config`
    GetMachineConfig,
    /// `PUT /boot-source`
    PutBootSource(BootSourceConfig),
    /// `PUT /machine-config`
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /drives/{drive_id}`
    PutDrive(BlockDeviceConfig),
    /// `PATCH /drives/{drive_id}`
    PatchDrive(BlockDeviceUpdateConfig),
    /// `PUT /network-interfaces/{iface_id}`
    PutNetworkInterface(NetworkInterfaceConfig),
    /// `PATCH /network-interfaces/{iface_id}`
    PatchNetworkInterface(NetworkInterfaceUpdateConfig),
    /// `PUT /vsock`
    PutVsock(VsockConfig),
    /// `PUT /logger`
    PutLogger(LoggerConfig),
    /// `PUT /metrics`
    PutMetrics(MetricsConfig),
    /// `PUT /actions` `InstanceStart`
    InstanceStart,
    /// `PUT /actions` `SendCtrlAltDel`
    SendCtrlAltDel,
    /// `PUT /actions` `FlushMetrics`
    FlushMetrics,
    /// `PATCH /vm` `Paused`
    Pause,
    /// `PATCH /vm` `Resumed`
    Resume,
}

impl VmmAction {
    /// The request this action comes from, for messages (e.g. `PUT /boot-source`).
    pub fn describe(&self) -> &'static str {
        match self {
            VmmAction::GetInstanceInfo => "GET /",
            VmmAction::GetVersion => "GET /version",
            VmmAction::GetFullVmConfig => "GET /vm/config",
            VmmAction::GetMachineConfig => "GET /machine-config",
            VmmAction::PutBootSource(_) => "PUT /boot-source",
            VmmAction::PutMachineConfig(_) => "PUT /machine-config",
            VmmAction::PatchMachineConfig(_) => "PATCH /machine-config",
            VmmAction::PutDrive(_) => "PUT /drives",
            VmmAction::PatchDrive(_) => "PATCH /drives",
            VmmAction::PutNetworkInterface(_) => "PUT /network-interfaces",
            VmmAction::PatchNetworkInterface(_) => "PATCH /network-interfaces",
            VmmAction::PutVsock(_) => "PUT /vsock",
            VmmAction::PutLogger(_) => "PUT /logger",
            VmmAction::PutMetrics(_) => "PUT /metrics",
            VmmAction::InstanceStart => "InstanceStart",
            VmmAction::SendCtrlAltDel => "SendCtrlAltDel",
            VmmAction::FlushMetrics => "FlushMetrics",
            VmmAction::Pause => "PATCH /vm Paused",
            VmmAction::Resume => "PATCH /vm Resumed",
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmmResponse {
    /// Done, nothing to return (HTTP 204).
    Empty,
    /// `GET /`
    InstanceInfo(InstanceInfo),
    /// `GET /version`
    Version(VersionInfo),
    /// `GET /machine-config`
    MachineConfig(MachineConfig),
    /// `GET /vm/config`
    FullVmConfig(Box<VmResources>),
}

impl VmmResponse {
    /// The JSON body of the answer; `None` for [`VmmResponse::Empty`].
    pub fn to_json(&self) -> Option<String> {
        let r = match self {
            VmmResponse::Empty => return None,
            VmmResponse::InstanceInfo(i) => serde_json::to_string(i),
            VmmResponse::Version(v) => serde_json::to_string(v),
            VmmResponse::MachineConfig(m) => serde_json::to_string(m),
            VmmResponse::FullVmConfig(c) => serde_json::to_string(c),
        };
        // These types hold only strings, numbers and booleans: serializing cannot fail.
        r.ok()
    }
}

/// Why an action failed. `Display` is the `fault_message` of the HTTP 400 answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// A field has a bad value.
    #[error("{0}")]
    InvalidConfig(#[from] ConfigError),
    /// A pre-boot-only operation after `InstanceStart` (Firecracker's wording first).
    #[error(
        "The requested operation is not supported after starting the microVM: {0} is only \
         allowed before InstanceStart."
    )]
    NotAllowedAfterBoot(&'static str),
    /// A post-boot-only operation before `InstanceStart`.
    #[error(
        "The requested operation is not supported before starting the microVM: {0} needs a \
         running microVM; PUT /actions {{\"action_type\": \"InstanceStart\"}} first."
    )]
    NotAllowedBeforeBoot(&'static str),
    /// The VMM failed to boot the microVM.
    #[error("Start microVM error: {0}")]
    StartMicrovm(String),
    /// The VMM failed to carry out a runtime operation.
    #[error("{action} failed: {message}")]
    Backend {
        /// The request.
        action: &'static str,
        /// The VMM's error.
        message: String,
    },
    /// The metrics could not be written.
    #[error("Metrics error: {0}")]
    Metrics(String),
    /// The VMM side of the channel is gone (the VMM is exiting).
    #[error("The VMM is not processing requests any more (it is shutting down).")]
    VmmUnavailable,
}
