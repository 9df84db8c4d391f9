//! `PUT /logger` and `PUT /metrics`.

use serde::{Deserialize, Deserializer, Serialize};

/// Log level; parsed case-insensitively as Firecracker does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    /// Nothing is logged.
    Off,
    /// Errors only.
    Error,
    /// Errors and warnings (the default).
    #[default]
    Warning,
    /// Informational messages too.
    Info,
    /// Debug messages too.
    Debug,
    /// Everything.
    Trace,
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warning" | "warn" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(serde::de::Error::custom(format!(
                "level \"{s}\" is not a log level; use Error, Warning, Info, Debug, Trace or Off"
            )))
            }
        })
    }
}

/// Where and how the VMM logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// File or named pipe the log lines are appended to.
    pub log_path: String,
    /// Log level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Whether each line shows its level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Whether each line shows the source file and line it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
}

/// Where the VMM writes its metrics, one JSON object a line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// File or named pipe the metric lines are appended to.
    pub metrics_path: String,
}
