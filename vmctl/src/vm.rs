//! VM commands: `vmctl run --kernel` boots a kernel on vmctl's own VMM in this process, with
//! the guest console on stdout and stdin.

use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::cli::RunArgs;

/// Default VM memory when --memory is not given.
const DEFAULT_MEM_MIB: u64 = 256;
/// Console lines repeated on stderr when the guest fails.
const TAIL_LINES: usize = 20;

/// Parses `--memory`: a bare number is MiB; k, m, g suffixes (any case, optional `b`/`ib`).
pub fn parse_mem_mib(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult_kib): (&str, u64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 1024),
        Some('g') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (t, 1024),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("--memory {s:?}: expected a size like 256, 512m or 1g"))?;
    Ok(n.saturating_mul(mult_kib) / 1024)
}

pub fn run_kernel(args: RunArgs) -> anyhow::Result<i32> {
    let kernel = args.kernel.context("--kernel is required")?;
    let mem_mib = match &args.memory {
        Some(m) => parse_mem_mib(m)?,
        None => DEFAULT_MEM_MIB,
    };
    let pvm = vmm::cmdline::host_is_pvm();
    if pvm {
        tracing::info!(
            "/dev/kvm is nested through PVM (/sys/module/kvm_pvm exists): adding to the guest command line: {}",
            vmm::cmdline::PVM_ARGS
        );
    }
    let mut config = vmm::VmConfig::new(kernel);
    config.initrd = args.initrd;
    config.cmdline = vmm::cmdline::compose(args.cmdline.as_deref(), pvm);
    if let Some(root) = devices::virtio::spec::root_cmdline(&args.disks) {
        config.cmdline = format!("{} {root}", config.cmdline);
    }
    config.vcpus = args.vcpus;
    config.mem_mib = mem_mib;
    config.console = Some(Arc::new(Mutex::new(std::io::stdout())));
    config.stdin_input = true;
    // VMCTL_SAMPLE_RIP=1: print every vCPU's RIP once a second, named from VMCTL_SYSTEM_MAP or
    // the System.map next to the kernel.
    config.sample_rip = std::env::var("VMCTL_SAMPLE_RIP").is_ok_and(|v| v == "1");
    config.system_map = std::env::var_os("VMCTL_SYSTEM_MAP").map(Into::into);

    let mut builder = vmm::VmBuilder::new(config)?;
    let virtio = crate::virtio::VirtioDevices {
        disks: args.disks,
        nets: args.nets,
        vsock: args.vsock,
    };
    crate::virtio::attach(&mut builder, virtio)?;
    let mut vm = builder.build()?;
    let reason = vm.run()?;
    if reason.is_success() {
        tracing::info!("{reason}");
    } else {
        eprintln!("vmctl: VM ended: {reason}");
        let tail = vm.console().last_lines(TAIL_LINES);
        if !tail.is_empty() {
            eprintln!("vmctl: last console lines:");
            for l in tail {
                eprintln!("  | {l}");
            }
        }
    }
    Ok(reason.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem_mib("256").unwrap(), 256);
        assert_eq!(parse_mem_mib("512m").unwrap(), 512);
        assert_eq!(parse_mem_mib("1G").unwrap(), 1024);
        assert_eq!(parse_mem_mib("2048k").unwrap(), 2);
        assert!(parse_mem_mib("lots").is_err());
    }
}
