//! VM commands: `vmctl run --kernel` boots a kernel on vmctl's own VMM in this process, with
//! the guest console on stdout and stdin. It goes through the same Firecracker-compatible
//! configuration and controller as `vmctl-vmm` ([`api::run_vmm`] with [`KvmBackend`]), and
//! `--api-sock PATH` serves the API while it runs (pause, resume, metrics, inspection).

use std::sync::{Arc, Mutex};

use api::runner::{run_vmm, RunError, VmmOptions};
use api::ActionError;
use vmm::api_backend::KvmBackend;

use crate::cli::RunArgs;
use crate::vmspec::VmFlags;

/// Console lines repeated on stderr when the guest fails.
const TAIL_LINES: usize = 20;

pub fn run_kernel(args: RunArgs) -> anyhow::Result<i32> {
    let mut flags = VmFlags {
        kernel: args
            .kernel
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--kernel is required"))?,
        initrd: args.initrd,
        cmdline: args.cmdline,
        vcpus: args.vcpus,
        memory: args.memory,
        disks: args.disks,
        nets: args.nets,
        vsock: args.vsock,
    };
    let resources = flags.build_resources()?;
    if vmm::cmdline::host_is_pvm() {
        tracing::info!(
            "/dev/kvm is nested through PVM (/sys/module/kvm_pvm exists): adding to the guest command line: {}",
            vmm::cmdline::PVM_ARGS
        );
    }
    let mut backend = KvmBackend::new(Some(Arc::new(Mutex::new(std::io::stdout()))), true);
    backend.set_disk_serials(flags.disk_serials());
    let end = backend.end_slot();
    let opts = VmmOptions {
        id: args.name.unwrap_or_else(|| "vmctl-run".into()),
        api_sock: args.api_sock,
        config: Some(resources),
        ..VmmOptions::new()
    };
    let code = match run_vmm(opts, backend) {
        Ok(code) => code,
        // Errors of the flags' configuration read as the VMM's own message.
        Err(RunError::Apply(ActionError::StartMicrovm(m))) => anyhow::bail!("{m}"),
        Err(e) => return Err(e.into()),
    };
    let Some(end) = end.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Ok(code);
    };
    match &end.result {
        Ok(reason) if reason.is_success() => tracing::info!("{reason}"),
        Ok(reason) => eprintln!("vmctl: VM ended: {reason}"),
        Err(e) => eprintln!("vmctl: VM failed: {e}"),
    }
    if !end.result.as_ref().is_ok_and(|r| r.is_success()) {
        let tail = end.console.last_lines(TAIL_LINES);
        if !tail.is_empty() {
            eprintln!("vmctl: last console lines:");
            for l in tail {
                eprintln!("  | {l}");
            }
        }
    }
    Ok(code)
}
