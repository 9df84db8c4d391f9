//! Firecracker-compatible REST API: types, Unix-socket server, client.
//!
//! - [`types`]: the JSON bodies, with Firecracker's field names.
//! - [`config::VmResources`]: the full configuration (`--config-file` and `GET /vm/config`).
//! - [`action`]: [`VmmAction`], [`VmmResponse`], [`ActionError`].
//! - [`controller`]: the pre/post-boot state machine and the [`VmmBackend`] trait the VMM
//!   implements.
//! - [`server`]: the hyper server on a Unix socket and the VMM's [`VmmEndpoint`].
//! - [`client`]: a blocking client.
//! - [`runner::run_vmm`]: the VMM process loop (`--api-sock`, `--config-file`, `--no-api`).
//! - [`metrics`] and [`logger`]: the JSON-lines metrics writer and the `PUT /logger` logger.
//!
//! The vmm crate implements [`VmmBackend`] on KVM (`vmm::api_backend::KvmBackend`); its
//! `vmctl-vmm` binary is `run_vmm` with that backend.

pub mod action;
pub mod client;
pub mod config;
pub mod controller;
pub mod logger;
pub mod metrics;
pub mod routes;
pub mod runner;
pub mod server;
pub mod socket;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod types;

pub use action::{ActionError, VmmAction, VmmResponse};
pub use client::{ApiClient, ApiResponse, ClientError};
pub use config::{ConfigError, VmResources};
pub use controller::{Controller, VmmBackend};
pub use server::{ApiRequest, ApiServer, ServerConfig, ServerError, VmmEndpoint};
