//! `vmctl-vmm`: one microVM per process, configured through a Firecracker-compatible REST API
//! on `--api-sock` and/or a `--config-file`, with the guest console on stdin/stdout.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::bail;
use api::runner::{run_vmm, VmmOptions};
use clap::Parser;
use vmm::api_backend::KvmBackend;

#[derive(Parser, Debug)]
#[command(
    name = "vmctl-vmm",
    version,
    about = "vmctl's VMM: one microVM, Firecracker-compatible API"
)]
struct Args {
    /// Unix socket to serve the API on (created mode 0600; a stale one is replaced).
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// JSON configuration (the `GET /vm/config` shape); the microVM boots at once.
    #[arg(long, value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// Serve no API (needs --config-file).
    #[arg(long, conflicts_with = "api_sock")]
    no_api: bool,
    /// Instance id reported by `GET /`.
    #[arg(long, default_value = "anonymous-instance")]
    id: String,
    /// Largest accepted API request body, in bytes.
    #[arg(long, default_value_t = api::server::DEFAULT_MAX_BODY_BYTES)]
    http_api_max_payload_size: usize,
}

/// The signal that asked this process to stop (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

/// SIGINT and SIGTERM before boot end the process cleanly (socket removed); once the VM runs,
/// the VMM's own handlers take over and end the VM the same way.
fn install_stop_handlers() -> anyhow::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let prev = unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            bail!(
                "installing the handler for signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.api_sock.is_none() && !args.no_api {
        bail!("give --api-sock PATH to serve the API, or --no-api with --config-file");
    }
    install_stop_handlers()?;
    let opts = VmmOptions {
        id: args.id,
        api_sock: args.api_sock,
        config_file: args.config_file,
        max_body_bytes: args.http_api_max_payload_size,
        stop_signal: Some(&STOP_SIGNAL),
        ..VmmOptions::new()
    };
    let backend = KvmBackend::new(Some(Arc::new(Mutex::new(std::io::stdout()))), true);
    let code = run_vmm(opts, backend)?;
    std::process::exit(code);
}
