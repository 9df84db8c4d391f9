//! `vmctl-runtime`: an OCI runtime with runc's command line, on the `runtime` library.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use runtime::oci_spec::runtime::{Process, Spec};
use runtime::{Container, ContainerBuilder, Status};

#[derive(Parser, Debug)]
#[command(
    name = "vmctl-runtime",
    version,
    about = "OCI container runtime (runc-compatible CLI)"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = runtime::DEFAULT_ROOT)]
    root: PathBuf,
    /// Log file (stderr when unset).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for runc compatibility; cgroups are always managed through cgroupfs.
    #[arg(long, global = true, hide = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Write the container process' pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true)]
    no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true)]
    no_new_keyring: bool,
    /// Run the minimal init as PID 1.
    #[arg(long)]
    init: bool,
    id: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container (it waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Print the OCI state of a container.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container.
    Kill {
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container.
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// Create, start and wait for a container, then delete it; exits with its status.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Do not wait: leave the container running.
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// Run a new process in a running container.
    Exec {
        /// A process.json (OCI `process`) instead of a command line.
        #[arg(long, short = 'p')]
        process: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long, short = 'd')]
        detach: bool,
        /// Allocate a terminal (needs --console-socket).
        #[arg(long, short = 't')]
        tty: bool,
        #[arg(long, short = 'e')]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// uid[:gid]
        #[arg(long, short = 'u')]
        user: Option<String>,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the processes of a container.
    Ps {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        id: String,
    },
    /// Freeze a container.
    Pause { id: String },
    /// Thaw a container.
    Resume { id: String },
    /// List containers.
    List {
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Print resource usage of a container as JSON.
    Events {
        #[arg(long)]
        stats: bool,
        id: String,
    },
    /// Print what this runtime supports (OCI features document).
    Features,
    /// Print a default config.json (docker-like security defaults).
    Spec {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// A spec for an unprivileged user (user namespace mapping root to you).
        #[arg(long)]
        rootless: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    init_logs(&cli);
    let logs_to_file = cli.log.is_some();
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if logs_to_file {
                tracing::error!("{e:#}");
            }
            eprintln!("vmctl-runtime: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn init_logs(cli: &Cli) {
    if cli.log.is_none() && !cli.debug && std::env::var_os("VMCTL_LOG").is_none() {
        // The common, fast path: warnings to stderr, no filter parsing.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(std::io::stderr)
            .init();
        return;
    }
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    match (file, cli.log_format.as_str()) {
        (Some(f), "json") => builder.json().with_writer(std::sync::Mutex::new(f)).init(),
        (Some(f), _) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        (None, "json") => builder.json().with_writer(std::io::stderr).init(),
        (None, _) => builder.with_writer(std::io::stderr).init(),
    }
}

fn connect(path: &Path) -> Result<OwnedFd> {
    let s = UnixStream::connect(path)
        .with_context(|| format!("connect to console socket {}", path.display()))?;
    Ok(s.into())
}

fn create(root: &Path, a: &CreateArgs, other_process_starts: bool) -> Result<Container> {
    let mut b = ContainerBuilder::new(&a.id, root)
        .bundle(&a.bundle)
        .init(a.init)
        .start_from_other_process(other_process_starts);
    if let Some(p) = &a.console_socket {
        b = b.console_socket(connect(p)?);
    }
    let c = b.create()?;
    if let Some(p) = &a.pid_file {
        write_pid(p, c.pid())?;
    }
    Ok(c)
}

fn write_pid(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("write pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write pid file {}", path.display()))
}

fn dispatch(cli: Cli) -> Result<i32> {
    let root = cli.root.as_path();
    match cli.cmd {
        Cmd::Create(a) => {
            create(root, &a, true)?;
        }
        Cmd::Start { id } => Container::load(root, &id)?.start()?,
        Cmd::State { id } => println!(
            "{}",
            serde_json::to_string_pretty(&Container::load(root, &id)?.oci_state())?
        ),
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("TERM"))?;
            Container::load(root, &id)?.kill(sig, all)?;
        }
        Cmd::Delete { force, id } => {
            Container::load(root, &id)?.delete(force)?;
        }
        Cmd::Run { create: a, detach } => {
            let mut c = create(root, &a, false)?;
            if let Err(e) = c.start() {
                let _ = c.delete(true);
                return Err(e.into());
            }
            if detach {
                return Ok(0);
            }
            let code = forward_signals_and_wait(&c)?;
            c.delete(true)?;
            return Ok(code);
        }
        Cmd::Exec {
            process,
            console_socket,
            pid_file,
            detach,
            tty,
            env,
            cwd,
            user,
            id,
            command,
        } => {
            let c = Container::load(root, &id)?;
            let mut p: Process = match process {
                Some(f) => {
                    let text =
                        std::fs::read(&f).with_context(|| format!("read {}", f.display()))?;
                    serde_json::from_slice(&text)
                        .with_context(|| format!("parse {}", f.display()))?
                }
                None => {
                    if command.is_empty() {
                        bail!("exec needs a command or --process FILE");
                    }
                    let mut p = c.spec()?.process().clone().unwrap_or_default();
                    p.set_args(Some(command));
                    p.set_terminal(Some(tty));
                    p
                }
            };
            if !env.is_empty() {
                let mut e = p.env().clone().unwrap_or_default();
                e.extend(env);
                p.set_env(Some(e));
            }
            if let Some(cwd) = cwd {
                p.set_cwd(cwd);
            }
            if let Some(u) = user {
                let (uid, gid) = u.split_once(':').unwrap_or((&u, "0"));
                let mut usr = p.user().clone();
                usr.set_uid(
                    uid.parse()
                        .with_context(|| format!("--user {u}: uid must be a number"))?,
                );
                usr.set_gid(
                    gid.parse()
                        .with_context(|| format!("--user {u}: gid must be a number"))?,
                );
                p.set_user(usr);
            }
            let console = console_socket.as_deref().map(connect).transpose()?;
            let pid = c.exec(p, console)?;
            if let Some(f) = pid_file {
                write_pid(&f, pid)?;
            }
            if detach {
                return Ok(0);
            }
            return Ok(runtime::wait_pid(pid)?);
        }
        Cmd::Ps { format, id } => {
            let pids = Container::load(root, &id)?.processes()?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("PID CMD");
                for p in pids {
                    let cmd =
                        std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    println!("{p} {}", cmd.replace('\0', " ").trim());
                }
            }
        }
        Cmd::Pause { id } => Container::load(root, &id)?.pause()?,
        Cmd::Resume { id } => Container::load(root, &id)?.resume()?,
        Cmd::List { quiet } => {
            if !quiet {
                println!("{:<24} {:<8} {:<10} BUNDLE", "ID", "PID", "STATUS");
            }
            for c in Container::list(root)? {
                if quiet {
                    println!("{}", c.id());
                } else {
                    let pid = if c.status() == Status::Stopped {
                        0
                    } else {
                        c.pid()
                    };
                    println!(
                        "{:<24} {:<8} {:<10} {}",
                        c.id(),
                        pid,
                        c.status(),
                        c.state().bundle.display()
                    );
                }
            }
        }
        Cmd::Events { id, .. } => {
            let s = Container::load(root, &id)?.stats()?;
            println!(
                "{}",
                serde_json::json!({"type": "stats", "id": id, "data": s})
            );
        }
        Cmd::Features => println!("{}", serde_json::to_string_pretty(&features())?),
        Cmd::Spec { bundle, rootless } => {
            let mut spec: Spec =
                runtime::spec::docker_default(vec!["sh".into()], Path::new("rootfs"));
            if rootless {
                let (uid, gid) = (
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                );
                runtime::spec::make_rootless(&mut spec, uid, gid);
            }
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} exists; remove it first", path.display());
            }
            spec.save(&path)
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(0)
}

/// Forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to the container while waiting for it.
fn forward_signals_and_wait(c: &Container) -> Result<i32> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    let pid = c.pid();
    loop {
        match nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        )? {
            nix::sys::wait::WaitStatus::Exited(_, code) => return Ok(code),
            nix::sys::wait::WaitStatus::Signaled(_, s, _) => return Ok(128 + s as i32),
            _ => {}
        }
        let sig = set.wait()?;
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }
}

fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    let sig: nix::sys::signal::Signal = name
        .parse()
        .with_context(|| format!("unknown signal {s:?}; use a name like TERM or a number"))?;
    Ok(sig as i32)
}

fn features() -> serde_json::Value {
    let ns = ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"];
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["ro","rw","nosuid","suid","nodev","dev","noexec","exec","bind","rbind",
            "private","rprivate","shared","rshared","slave","rslave","relatime","noatime","strictatime"],
        "linux": {
            "namespaces": ns,
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW","SCMP_ACT_ERRNO","SCMP_ACT_KILL","SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD","SCMP_ACT_LOG","SCMP_ACT_TRACE","SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ","SCMP_CMP_GE","SCMP_CMP_GT","SCMP_CMP_LE","SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ","SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {"org.vmctl.runtime.init": "minimal init with --init"}
    })
}
