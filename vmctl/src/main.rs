//! `vmctl`: run one image as a container, a microVM on vmctl's own VMM, or a VM under a hosted
//! hypervisor, with docker's habits.

mod bench;
mod cli;
mod container;
mod hosted;
mod images;
mod microvm;
mod vm;
mod vms;
mod vmspec;

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
            (false, Isolation::Hosted) => hosted::run(args),
            (false, Isolation::Microvm) => microvm::run(args),
        },
        Command::Images(store) => images::list(&store),
        Command::Image(cmd) => images::image(cmd),
        Command::Ps { all, quiet } => container::ps(all, quiet),
        Command::Logs { follow, container } => container::logs(&container, follow),
        Command::Stop { time, containers } => container::stop(&containers, time),
        Command::Rm { force, containers } => container::rm(&containers, force),
        Command::Exec(args) => container::exec(args),
        Command::Vm(cmd) => vms::dispatch(cmd),
        Command::Bench(args) => bench::run(args),
    }
}
