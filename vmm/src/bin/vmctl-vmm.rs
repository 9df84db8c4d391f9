//! `vmctl-vmm`: one microVM per process, configured through a Firecracker-compatible REST API
//! on `--api-sock` and/or a `--config-file`, with the guest console on stdin/stdout.

use std::path::PathBuf;
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.api_sock.is_none() && !args.no_api {
        bail!("give --api-sock PATH to serve the API, or --no-api with --config-file");
    }
    let opts = VmmOptions {
        id: args.id,
        api_sock: args.api_sock,
        config_file: args.config_file,
        max_body_bytes: args.http_api_max_payload_size,
        ..VmmOptions::new()
    };
    let backend = KvmBackend::new(Some(Arc::new(Mutex::new(std::io::stdout()))), true);
    let code = run_vmm(opts, backend)?;
    std::process::exit(code);
}
