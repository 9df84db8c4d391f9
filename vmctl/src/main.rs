//! `vmctl`: run one image as a container, a microVM on vmctl's own VMM, or a VM under a hosted
//! hypervisor, with docker's habits.

mod bench;
mod cli;
mod container;
mod detach;
mod guestvm;
mod hosted;
mod images;
mod microvm;
mod ps;
mod vm;
mod vmnet;
mod vms;
mod vmspec;
mod volumes;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMCTL_LOG")
                // A failed API request is reported by vmctl itself (not twice).
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(format!(
                        "{},api::controller=error",
                        cli.log_level
                    ))
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmctl: {e:#}");
            125
        }
    };
    std::process::exit(code);
}

fn dispatch(cmd: cli::Command) -> anyhow::Result<i32> {
    use cli::{Command, Isolation};
    match cmd {
        Command::Run(args) => match (args.kernel.is_some(), args.isolation) {
            (true, _) => vm::run_kernel(args),
            (false, Isolation::Container) => container::run(args),
            (false, Isolation::Hosted) => guestvm::run_level(args, hosted::run_vm),
            (false, Isolation::Microvm) => guestvm::run_level(args, microvm::run_vm),
        },
        Command::Images(store) => images::list(&store),
        Command::Image(cmd) => images::image(cmd),
        Command::Ps { all, quiet } => ps::ps(all, quiet),
        Command::Logs { follow, container } => ps::logs(&container, follow),
        Command::Stop { time, containers } => ps::stop(&containers, time),
        Command::Rm { force, containers } => ps::rm(&containers, force),
        Command::Exec(args) => container::exec(args),
        Command::Vm(cmd) => vms::dispatch(cmd),
        Command::Bench(args) => bench::run(args),
        Command::Vmm { api_sock, id } => microvm::serve_vmm(api_sock, id),
    }
}
