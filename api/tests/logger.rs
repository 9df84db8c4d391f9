//! `install_logger` writes to the file with the requested level and decorations (own test
//! binary: it installs the process-wide subscriber).

use api::logger::install_logger;
use api::types::{LogLevel, LoggerConfig};

#[test]
fn logs_go_to_the_file_at_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmm.log");
    let cfg = LoggerConfig {
        log_path: path.to_str().unwrap().into(),
        level: Some(LogLevel::Info),
        show_level: Some(true),
        show_log_origin: Some(true),
    };
    install_logger(&cfg).unwrap();
    tracing::info!("hello from the test");
    tracing::debug!("too detailed");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("hello from the test"), "{text}");
    assert!(text.contains("INFO"), "{text}");
    assert!(text.contains("logger.rs:"), "origin shown: {text}");
    assert!(!text.contains("too detailed"), "{text}");
    let again = install_logger(&cfg).unwrap_err();
    assert!(again.contains("already configured"), "{again}");
    let bad = LoggerConfig {
        log_path: "/nonexistent/dir/log".into(),
        ..cfg
    };
    assert!(install_logger(&bad)
        .unwrap_err()
        .contains("/nonexistent/dir/log"));
}
