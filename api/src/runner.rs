//! The life of one VMM process, independent of how the VM is run: read `--config-file`, serve
//! the API on `--api-sock` (unless `--no-api`), boot, flush metrics periodically, and return
//! the exit status once the VM has ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::action::{ActionError, VmmAction};
use crate::config::{ConfigError, VmResources};
use crate::controller::{Controller, VmmBackend};
use crate::server::{ApiServer, ServerConfig, ServerError, DEFAULT_MAX_BODY_BYTES};

/// What a VMM process was asked to do.
#[derive(Clone, Debug)]
pub struct VmmOptions {
    /// Instance id reported by `GET /`.
    pub id: String,
    /// `--api-sock`: serve the API here; `None` is `--no-api`.
    pub api_sock: Option<PathBuf>,
    /// `--config-file`: configure from this file and boot at once.
    pub config_file: Option<PathBuf>,
    /// A configuration given in-process (e.g. built from `vmctl run` flags): applied and booted
    /// at once, like `config_file`; errors are [`RunError::Apply`].
    pub config: Option<VmResources>,
    /// Largest API request body.
    pub max_body_bytes: usize,
    /// How often metrics are flushed when configured (Firecracker: 60 s).
    pub metrics_interval: Duration,
    /// Set to a signal number (by the process's SIGINT/SIGTERM handler) to end the VMM:
    /// [`run_vmm`] then returns 128 + that number after stopping the VM and the server.
    pub stop_signal: Option<&'static AtomicI32>,
}

impl VmmOptions {
    /// Options with the defaults: id `anonymous-instance`, no socket, no config file.
    pub fn new() -> Self {
        Self {
            id: "anonymous-instance".into(),
            api_sock: None,
            config_file: None,
            config: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            metrics_interval: Duration::from_secs(60),
            stop_signal: None,
        }
    }
}

impl Default for VmmOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the VMM process could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `--no-api` without `--config-file`.
    #[error("--no-api needs --config-file: without the API nothing can configure the microVM")]
    NothingToRun,
    /// The config file could not be read.
    #[error("--config-file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not a valid configuration.
    #[error("--config-file {path}: {error}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: ConfigError,
    },
    /// Applying the configuration or booting failed.
    #[error("--config-file: {0}")]
    Boot(#[from] ActionError),
    /// Applying [`VmmOptions::config`] or booting it failed.
    #[error("{0}")]
    Apply(ActionError),
    /// The API server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
}

fn load(path: &PathBuf) -> Result<VmResources, RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::ConfigRead {
        path: path.clone(),
        source,
    })?;
    VmResources::from_json(&text).map_err(|error| RunError::Config {
        path: path.clone(),
        error,
    })
}

/// Runs the VMM process's main loop on the calling thread; returns the VM's exit status
/// ([`VmmBackend::exit_code`]), or 0 when the API server stopped before any VM ended.
pub fn run_vmm<B: VmmBackend>(opts: VmmOptions, backend: B) -> Result<i32, RunError> {
    let mut ctl = Controller::new(opts.id.clone(), backend);
    let boot_now = opts.config_file.is_some() || opts.config.is_some();
    if let Some(path) = &opts.config_file {
        ctl.apply_config(load(path)?)?;
    } else if let Some(config) = opts.config.clone() {
        ctl.apply_config(config).map_err(RunError::Apply)?;
    } else if opts.api_sock.is_none() {
        return Err(RunError::NothingToRun);
    }
    let mut last_flush = Instant::now();
    let mut tick = move |c: &mut Controller<B>| {
        if c.metrics_configured() && last_flush.elapsed() >= opts.metrics_interval {
            last_flush = Instant::now();
            if let Err(e) = c.flush_metrics() {
                tracing::warn!("periodic metrics flush: {e}");
            }
        }
        if let Some(sig) = opts
            .stop_signal
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|s| *s != 0)
        {
            tracing::info!("stopping on signal {sig}");
            return Some(128 + sig);
        }
        c.backend_mut().exit_code()
    };
    let start = |ctl: &mut Controller<B>| match ctl.handle(VmmAction::InstanceStart) {
        Ok(_) => Ok(()),
        Err(e) if opts.config_file.is_none() => Err(RunError::Apply(e)),
        Err(e) => Err(RunError::Boot(e)),
    };
    let Some(sock) = &opts.api_sock else {
        start(&mut ctl)?;
        loop {
            if let Some(code) = tick(&mut ctl) {
                return Ok(code);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut cfg = ServerConfig::new(sock);
    cfg.max_body_bytes = opts.max_body_bytes;
    let (server, endpoint) = ApiServer::start(cfg)?;
    if boot_now {
        if let Err(e) = start(&mut ctl) {
            server.shutdown();
            return Err(e);
        }
    }
    let code = endpoint.run_until(&mut ctl, tick);
    if ctl.metrics_configured() {
        let _ = ctl.flush_metrics();
    }
    server.shutdown();
    Ok(code.unwrap_or(0))
}
