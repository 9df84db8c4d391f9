//! The pre-boot/post-boot state machine: applies [`VmmAction`]s to a [`VmResources`] and to the
//! running VM through a [`VmmBackend`], and decides which actions are allowed when.
//!
//! Pure logic: no KVM here. The vmm crate implements [`VmmBackend`] with the real VM.

use std::path::Path;

use crate::action::{ActionError, VmmAction, VmmResponse};
use crate::config::{ConfigError, VmResources};
use crate::metrics::{ApiCounters, MetricsLine, MetricsWriter, VmmMetrics};
use crate::types::{
    BlockDeviceUpdateConfig, InstanceInfo, LoggerConfig, NetworkInterfaceUpdateConfig, VersionInfo,
    VmState,
};

/// Name reported as `app_name` by `GET /`.
pub const APP_NAME: &str = "vmctl";
/// Version reported by `GET /` and `GET /version`.
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the controller needs from the runtime side (the real VMM, with KVM).
///
/// Errors are plain messages; the controller wraps them into an [`ActionError`] that becomes
/// the HTTP 400 `fault_message`. Calls come from the VMM's own thread (never the API thread).
pub trait VmmBackend {
    /// Builds and boots the microVM from `resources` (already validated). On success the
    /// vCPUs run.
    fn start(&mut self, resources: &VmResources) -> Result<(), String>;
    /// Pauses all vCPUs; returns once they are stopped.
    fn pause(&mut self) -> Result<(), String>;
    /// Resumes all vCPUs.
    fn resume(&mut self) -> Result<(), String>;
    /// Injects Ctrl+Alt+Del into the guest's i8042 keyboard controller.
    fn send_ctrl_alt_del(&mut self) -> Result<(), String>;
    /// Applies a new backing file and/or rate limiter to a running drive (already validated
    /// against the configuration).
    fn patch_drive(&mut self, update: &BlockDeviceUpdateConfig) -> Result<(), String>;
    /// Applies new rate limiters to a running network interface.
    fn patch_net(&mut self, update: &NetworkInterfaceUpdateConfig) -> Result<(), String>;
    /// Sends the VMM's logs to `config.log_path` (pre-boot only).
    fn configure_logger(&mut self, config: &LoggerConfig) -> Result<(), String>;
    /// The VMM's counters now (zeroes before boot).
    fn metrics(&self) -> VmmMetrics;
    /// `Some(process exit status)` once the started VM has ended (guest reboot or power-off,
    /// fatal error); `None` while it runs or before boot.
    fn exit_code(&mut self) -> Option<i32> {
        None
    }
}

/// Owns the configuration and the state, and drives a [`VmmBackend`].
pub struct Controller<B> {
    id: String,
    resources: VmResources,
    state: VmState,
    backend: B,
    metrics: Option<MetricsWriter>,
    api: ApiCounters,
}

impl<B: VmmBackend> Controller<B> {
    /// A controller for a not yet started VM named `id`, with an empty configuration.
    pub fn new(id: impl Into<String>, backend: B) -> Self {
        Self {
            id: id.into(),
            resources: VmResources::default(),
            state: VmState::NotStarted,
            backend,
            metrics: None,
            api: ApiCounters::default(),
        }
    }

    /// Applies a whole configuration (e.g. from `--config-file`) through the same checks as the
    /// API: logger and metrics first, then machine, boot source and devices.
    pub fn apply_config(&mut self, config: VmResources) -> Result<(), ActionError> {
        let mut actions = Vec::new();
        actions.extend(config.logger.map(VmmAction::PutLogger));
        actions.extend(config.metrics.map(VmmAction::PutMetrics));
        actions.push(VmmAction::PutMachineConfig(config.machine_config));
        actions.extend(config.boot_source.map(VmmAction::PutBootSource));
        actions.extend(config.drives.into_iter().map(VmmAction::PutDrive));
        actions.extend(
            config
                .network_interfaces
                .into_iter()
                .map(VmmAction::PutNetworkInterface),
        );
        actions.extend(config.vsock.map(VmmAction::PutVsock));
        for action in actions {
            self.handle(action)?;
        }
        Ok(())
    }

    /// Carries out one action.
    pub fn handle(&mut self, action: VmmAction) -> Result<VmmResponse, ActionError> {
        self.api.requests += 1;
        let result = self.dispatch(action);
        if let Err(e) = &result {
            self.api.errors += 1;
            tracing::warn!("API request failed: {e}");
        }
        result
    }

    /// Writes one metrics line if metrics are configured; the VMM may call this periodically.
    pub fn flush_metrics(&mut self) -> Result<(), ActionError> {
        let Some(writer) = self.metrics.as_mut() else {
            return Err(ActionError::Metrics(
                "metrics are not configured; PUT /metrics with a metrics_path first".into(),
            ));
        };
        let mut line = MetricsLine {
            utc_timestamp_ms: 0,
            api: self.api.clone(),
            vmm: self.backend.metrics(),
        };
        writer
            .write(&mut line)
            .map_err(|e| ActionError::Metrics(format!("writing metrics: {e}")))
    }

    /// Whether `PUT /metrics` (or the config file) set a metrics destination.
    pub fn metrics_configured(&self) -> bool {
        self.metrics.is_some()
    }

    /// The run state.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// The current configuration.
    pub fn resources(&self) -> &VmResources {
        &self.resources
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (e.g. for the VMM's event handlers).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    fn pre_boot(&self, action: &VmmAction) -> Result<(), ActionError> {
        match self.state {
            VmState::NotStarted => Ok(()),
            _ => Err(ActionError::NotAllowedAfterBoot(action.describe())),
        }
    }

    fn post_boot(&self, action: &VmmAction) -> Result<(), ActionError> {
        match self.state {
            VmState::NotStarted => Err(ActionError::NotAllowedBeforeBoot(action.describe())),
            _ => Ok(()),
        }
    }

    fn backend_err(action: &'static str) -> impl FnOnce(String) -> ActionError {
        move |message| ActionError::Backend { action, message }
    }

    fn dispatch(&mut self, action: VmmAction) -> Result<VmmResponse, ActionError> {
        use VmmAction as A;
        let name = action.describe();
        match &action {
            A::PutBootSource(_)
            | A::PutMachineConfig(_)
            | A::PatchMachineConfig(_)
            | A::PutDrive(_)
            | A::PutNetworkInterface(_)
            | A::PutVsock(_)
            | A::PutLogger(_)
            | A::PutMetrics(_)
            | A::InstanceStart => self.pre_boot(&action)?,
            A::PatchDrive(_)
            | A::PatchNetworkInterface(_)
            | A::SendCtrlAltDel
            | A::Pause
            | A::Resume => self.post_boot(&action)?,
            A::GetInstanceInfo | A::GetVersion | A::GetFullVmConfig | A::GetMachineConfig => {}
            A::FlushMetrics => {}
        }
        let r = &mut self.resources;
        match action {
            A::GetInstanceInfo => {
                return Ok(VmmResponse::InstanceInfo(InstanceInfo {
                    id: self.id.clone(),
                    state: self.state,
                    vmm_version: VMM_VERSION.into(),
                    app_name: APP_NAME.into(),
                }))
            }
            A::GetVersion => {
                return Ok(VmmResponse::Version(VersionInfo {
                    firecracker_version: VMM_VERSION.into(),
                }))
            }
            A::GetFullVmConfig => return Ok(VmmResponse::FullVmConfig(Box::new(r.clone()))),
            A::GetMachineConfig => return Ok(VmmResponse::MachineConfig(r.machine_config.clone())),
            A::PutBootSource(c) => r.set_boot_source(c)?,
            A::PutMachineConfig(c) => r.set_machine_config(c)?,
            A::PatchMachineConfig(u) => r.update_machine_config(&u)?,
            A::PutDrive(c) => r.insert_drive(c)?,
            A::PutNetworkInterface(c) => r.insert_net(c)?,
            A::PutVsock(c) => r.set_vsock(c)?,
            A::PutLogger(c) => {
                let mut next = r.clone();
                next.set_logger(c.clone())?;
                self.backend
                    .configure_logger(&c)
                    .map_err(Self::backend_err(name))?;
                self.resources = next;
            }
            A::PutMetrics(c) => {
                let mut next = r.clone();
                next.set_metrics(c.clone())?;
                let writer = MetricsWriter::open(Path::new(&c.metrics_path)).map_err(|e| {
                    ConfigError(format!(
                        "metrics_path '{}' cannot be opened: {e}",
                        c.metrics_path
                    ))
                })?;
                self.metrics = Some(writer);
                self.resources = next;
            }
            A::PatchDrive(u) => {
                // Validate against a copy so a failing backend leaves the record unchanged.
                let mut next = r.clone();
                next.update_drive(&u)?;
                self.backend
                    .patch_drive(&u)
                    .map_err(Self::backend_err(name))?;
                self.resources = next;
            }
            A::PatchNetworkInterface(u) => {
                let mut next = r.clone();
                next.update_net(&u)?;
                self.backend
                    .patch_net(&u)
                    .map_err(Self::backend_err(name))?;
                self.resources = next;
            }
            A::InstanceStart => {
                r.validate_for_start()?;
                self.backend
                    .start(&self.resources)
                    .map_err(ActionError::StartMicrovm)?;
                self.state = VmState::Running;
            }
            A::SendCtrlAltDel => self
                .backend
                .send_ctrl_alt_del()
                .map_err(Self::backend_err(name))?,
            A::FlushMetrics => self.flush_metrics()?,
            A::Pause => {
                if self.state == VmState::Running {
                    self.backend.pause().map_err(Self::backend_err(name))?;
                    self.state = VmState::Paused;
                }
            }
            A::Resume => {
                if self.state == VmState::Paused {
                    self.backend.resume().map_err(Self::backend_err(name))?;
                    self.state = VmState::Running;
                }
            }
        }
        Ok(VmmResponse::Empty)
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
