//! `PUT /logger` for a VMM process: installs a `tracing` subscriber that appends to
//! `log_path` with the requested level and decorations.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;

use crate::types::{LogLevel, LoggerConfig};

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the process-wide logger described by `config`. Fails if the file cannot be
/// opened (a named pipe needs a reader already) or if a logger is already installed.
pub fn install_logger(config: &LoggerConfig) -> Result<(), String> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(Path::new(&config.log_path))
        .map_err(|e| format!("log_path '{}' cannot be opened: {e}", config.log_path))?;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_max_level(level_filter(config.level.unwrap_or_default()))
        .with_level(config.show_level.unwrap_or(false))
        .with_file(config.show_log_origin.unwrap_or(false))
        .with_line_number(config.show_log_origin.unwrap_or(false))
        .with_target(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).map_err(|_| {
        "a logger is already configured for this VMM process; it can be set once".to_string()
    })
}
