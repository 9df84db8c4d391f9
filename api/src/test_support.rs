//! Test double of the VMM for API tests: [`RecordingBackend`] records every call the
//! controller makes and can be told to fail or to be slow. It stands in for the KVM-backed
//! backend of the vmm crate until that is wired; it is not used by the real VMM.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::VmResources;
use crate::controller::VmmBackend;
use crate::metrics::VmmMetrics;
use crate::types::{BlockDeviceUpdateConfig, LoggerConfig, NetworkInterfaceUpdateConfig};

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendCall {
    /// `start` with the configuration it was given.
    Start(Box<VmResources>),
    /// `pause`
    Pause,
    /// `resume`
    Resume,
    /// `send_ctrl_alt_del`
    SendCtrlAltDel,
    /// `patch_drive`
    PatchDrive(BlockDeviceUpdateConfig),
    /// `patch_net`
    PatchNet(NetworkInterfaceUpdateConfig),
    /// `configure_logger`
    ConfigureLogger(LoggerConfig),
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<BackendCall>,
    fail_start: Option<String>,
    delay: Duration,
    metrics: VmmMetrics,
    exit_code: Option<i32>,
}

/// A [`VmmBackend`] that records calls; clones share the record, so a test keeps a clone while
/// the controller owns the other.
#[derive(Clone, Debug, Default)]
pub struct RecordingBackend {
    inner: Arc<Mutex<Recorded>>,
}

impl RecordingBackend {
    /// A backend whose calls all succeed at once.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls so far, oldest first.
    pub fn calls(&self) -> Vec<BackendCall> {
        self.lock().calls.clone()
    }

    /// Makes every later `start` fail with `message`.
    pub fn fail_start_with(&self, message: &str) {
        self.lock().fail_start = Some(message.to_string());
    }

    /// Makes every call take `delay` (a slow VMM).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Sets what `metrics` returns.
    pub fn set_metrics(&self, metrics: VmmMetrics) {
        self.lock().metrics = metrics;
    }

    /// Makes `exit_code` report that the VM ended with `code` (the guest rebooted, say).
    pub fn exit_with(&self, code: i32) {
        self.lock().exit_code = Some(code);
    }

    fn record(&mut self, call: BackendCall) -> Result<(), String> {
        let delay = self.lock().delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut g = self.lock();
        if matches!(call, BackendCall::Start(_)) {
            if let Some(msg) = g.fail_start.clone() {
                return Err(msg);
            }
        }
        g.calls.push(call);
        Ok(())
    }
}

impl VmmBackend for RecordingBackend {
    fn start(&mut self, resources: &VmResources) -> Result<(), String> {
        self.record(BackendCall::Start(Box::new(resources.clone())))
    }
    fn pause(&mut self) -> Result<(), String> {
        self.record(BackendCall::Pause)
    }
    fn resume(&mut self) -> Result<(), String> {
        self.record(BackendCall::Resume)
    }
    fn send_ctrl_alt_del(&mut self) -> Result<(), String> {
        self.record(BackendCall::SendCtrlAltDel)
    }
    fn patch_drive(&mut self, update: &BlockDeviceUpdateConfig) -> Result<(), String> {
        self.record(BackendCall::PatchDrive(update.clone()))
    }
    fn patch_net(&mut self, update: &NetworkInterfaceUpdateConfig) -> Result<(), String> {
        self.record(BackendCall::PatchNet(update.clone()))
    }
    fn configure_logger(&mut self, config: &LoggerConfig) -> Result<(), String> {
        self.record(BackendCall::ConfigureLogger(config.clone()))
    }
    fn metrics(&self) -> VmmMetrics {
        self.lock().metrics.clone()
    }
    fn exit_code(&mut self) -> Option<i32> {
        let g = self.lock();
        g.exit_code
            .filter(|_| g.calls.iter().any(|c| matches!(c, BackendCall::Start(_))))
    }
}
