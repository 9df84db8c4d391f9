//! Container commands (`vmctl run --isolation container`, `ps`, `logs`, `stop`, `rm`,
//! `exec`) on the runtime library, with docker's habits. State: `$VMCTL_ROOT/containers/ID/`
//! (meta.json, container.log, exit_code) and the runtime's state in `$VMCTL_ROOT/runtime/`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use runtime::oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};
use runtime::{Container, ContainerBuilder, Status};
use serde::{Deserialize, Serialize};

use crate::cli::{ExecArgs, RunArgs};
use backend::NetSettings;
use runtime::network::NetworkMode;

mod backend;
mod parse;
pub(crate) mod term;

use parse::{parse_memory, parse_user};
use term::{block_signals, proxy_tty, wait_forwarding};

/// vmctl's own record of a container.
#[derive(Serialize, Deserialize)]
struct Meta {
    id: String,
    name: String,
    image: String,
    command: Vec<String>,
    created: u64,
    network: String,
    ip: Option<String>,
    /// The bridge and subnet of `--network bridge`, for detaching.
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    subnet: Option<String>,
}

impl Meta {
    /// Undoes the container's bridge attachment (idempotent).
    fn detach(&self) {
        let (Some(name), Some(subnet)) = (&self.bridge, &self.subnet) else {
            return;
        };
        let Ok(subnet) = subnet.parse() else { return };
        let cfg = runtime::network::BridgeConfig {
            name: name.clone(),
            subnet,
            state_dir: state_root().join("network"),
        };
        backend::detach(&cfg, &self.id);
    }
}

/// vmctl's state root (`$VMCTL_ROOT`, default /run/vmctl).
pub(crate) fn state_root() -> PathBuf {
    PathBuf::from(std::env::var("VMCTL_ROOT").unwrap_or_else(|_| "/run/vmctl".into()))
}
fn meta_root() -> PathBuf {
    state_root().join("containers")
}
fn runtime_root() -> PathBuf {
    state_root().join("runtime")
}

fn new_id() -> Result<String> {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn load_meta(id: &str) -> Option<Meta> {
    serde_json::from_slice(&std::fs::read(meta_root().join(id).join("meta.json")).ok()?).ok()
}

fn all_meta() -> Vec<Meta> {
    let mut v: Vec<Meta> = std::fs::read_dir(meta_root())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| load_meta(&e.file_name().to_string_lossy()))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.created));
    v
}

/// A container by id, id prefix or name (for `exec`, which only containers have).
fn resolve(what: &str) -> Result<Meta> {
    let e = crate::ps::resolve(what)?;
    if e.isolation != "container" {
        bail!(
            "{what:?} is a {} VM: `vmctl exec` works on containers only",
            e.isolation
        );
    }
    load_meta(&e.id).with_context(|| format!("no such container: {what:?}"))
}

fn bind(src: &str, dst: &str, ro: bool) -> Result<Mount> {
    let src = std::fs::canonicalize(src)
        .with_context(|| format!("-v {src}:{dst}: the host path must exist"))?;
    let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
    if ro {
        opts.push("ro".into());
    }
    Ok(serde_json::from_value(
        serde_json::json!({"destination": dst, "type": "bind", "source": src, "options": opts}),
    )?)
}

/// A terminal process starts at our terminal's size (the pty gets it before the workload runs;
/// later changes follow by SIGWINCH).
fn set_console_size(p: &mut Process) {
    if !p.terminal().unwrap_or(false) {
        return;
    }
    if let Some((rows, cols)) = guest::session::window_size() {
        let size = runtime::oci_spec::runtime::BoxBuilder::default()
            .height(rows)
            .width(cols)
            .build();
        p.set_console_size(size.ok());
    }
}

/// The OCI spec for `vmctl run` (docker defaults from the runtime library, then the flags).
fn build_spec(args: &RunArgs, img: &backend::Image, net: &NetSettings, id: &str) -> Result<Spec> {
    let mut argv = img.entrypoint.clone();
    argv.extend(if args.command.is_empty() {
        img.cmd.clone()
    } else {
        args.command.clone()
    });
    if argv.is_empty() {
        bail!("no command: the image has none; give one after `--`");
    }
    let mut spec = runtime::spec::docker_default(argv, Path::new("/"));
    let mut p = spec.process().clone().unwrap_or_default();
    let mut env = img.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    env.push(format!("HOSTNAME={id}"));
    if args.tty {
        env.push("TERM=xterm".into());
    }
    for e in &args.env {
        if !e.contains('=') {
            bail!("-e {e:?}: expected KEY=VALUE");
        }
        env.retain(|x| x.split('=').next() != e.split('=').next());
        env.push(e.clone());
    }
    p.set_env(Some(env));
    p.set_cwd(PathBuf::from(
        args.workdir
            .clone()
            .or(img.workdir.clone())
            .unwrap_or_else(|| "/".into()),
    ));
    let user = match (&args.user, &img.user) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(u)) => Some(backend::user_ids(&img.layers, u)?),
        (None, None) => None,
    };
    if let Some(u) = &user {
        let (uid, gid) = parse_user(u)?;
        let mut usr = p.user().clone();
        usr.set_uid(uid);
        usr.set_gid(gid);
        p.set_user(usr);
    }
    p.set_terminal(Some(args.tty));
    set_console_size(&mut p);
    spec.set_process(Some(p));
    spec.set_hostname(Some(id.to_string()));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_readonly(Some(args.read_only));
    spec.set_root(Some(root));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for v in &args.volumes {
        let parts: Vec<&str> = v.split(':').collect();
        match parts.as_slice() {
            [s, d] => mounts.push(bind(s, d, false)?),
            [s, d, "ro"] => mounts.push(bind(s, d, true)?),
            [s, d, "rw"] => mounts.push(bind(s, d, false)?),
            _ => bail!("-v {v:?}: expected HOST:CONTAINER[:ro]"),
        }
    }
    spec.set_mounts(Some(mounts));
    let mut v = serde_json::to_value(&spec)?;
    let res = &mut v["linux"]["resources"];
    if let Some(m) = &args.memory {
        let bytes = parse_memory(m)?;
        res["memory"] = serde_json::json!({"limit": bytes, "swap": bytes});
    }
    if let Some(c) = args.cpus {
        if c <= 0.0 {
            bail!("--cpus {c}: must be positive");
        }
        res["cpu"] = serde_json::json!({"quota": (c * 100_000.0) as i64, "period": 100_000});
    }
    if let Some(n) = args.pids_limit {
        res["pids"] = serde_json::json!({"limit": n});
    }
    v["linux"]["cgroupsPath"] = serde_json::json!(format!("/vmctl/{id}"));
    let mut spec: Spec = serde_json::from_value(v)?;
    match net.mode {
        NetworkMode::Host => {
            let mut linux = spec.linux().clone().unwrap_or_default();
            let ns = linux.namespaces().clone().unwrap_or_default();
            linux.set_namespaces(Some(
                ns.into_iter()
                    .filter(|n| n.typ() != LinuxNamespaceType::Network)
                    .collect(),
            ));
            spec.set_linux(Some(linux));
        }
        NetworkMode::None | NetworkMode::Bridge => {}
    }
    Ok(spec)
}

pub fn run(args: RunArgs) -> Result<i32> {
    if args.detach && args.tty {
        bail!("-t with -d is not supported: use `vmctl exec -it` on the detached container");
    }
    let id = new_id()?;
    let name = args.name.clone().unwrap_or_else(|| id.clone());
    if crate::ps::name_in_use(&name) {
        bail!("the name {name:?} is in use; `vmctl rm {name}` or pick another --name");
    }
    let net = backend::net_settings(
        &state_root(),
        &args.network,
        &args.publish,
        &args.bridge,
        &args.subnet,
    )?;
    let img = backend::image(&args.store, args.image.as_deref())?;
    let spec = build_spec(&args, &img, &net, &id)?;
    let dir = meta_root().join(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let meta = Meta {
        id: id.clone(),
        name,
        image: img.reference.clone(),
        command: spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        network: backend::mode_name(net.mode).into(),
        ip: None,
        bridge: (net.mode == NetworkMode::Bridge).then(|| net.bridge.name.clone()),
        subnet: (net.mode == NetworkMode::Bridge).then(|| net.bridge.subnet.to_string()),
    };
    std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
    // docker: 127 when the command is not found, 126 when it cannot be run.
    let exec_code = |e: &anyhow::Error| {
        let m = format!("{e:#}");
        m.contains("executable file not found")
            .then_some(127)
            .or(m.contains("exec \"").then_some(126))
    };
    let r = if args.detach {
        run_detached(&args, &net, spec, img, &id)
    } else {
        run_foreground(&args, &net, spec, img, &id)
    };
    if r.is_err() || (args.rm && !args.detach) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match r {
        Err(e) if exec_code(&e).is_some() => {
            eprintln!("vmctl: {e:#}");
            Ok(exec_code(&e).unwrap_or(126))
        }
        r => r,
    }
}

/// Creates, networks and starts the container; `console` receives its pty master.
fn launch(
    args: &RunArgs,
    net: &NetSettings,
    spec: Spec,
    img: backend::Image,
    id: &str,
    console: Option<OwnedFd>,
) -> Result<Container> {
    let mut b = ContainerBuilder::new(id, runtime_root())
        .spec(spec)
        .image_layers(img.layers)
        .init(args.init);
    if let Some(c) = console {
        b = b.console_socket(c);
    }
    let mut c = b.create()?;
    let started = backend::attach(net, id, c.pid()).and_then(|ip| {
        if let Some(ip) = ip {
            if let Some(mut m) = load_meta(id) {
                m.ip = Some(ip);
                let _ = std::fs::write(
                    meta_root().join(id).join("meta.json"),
                    serde_json::to_vec(&m)?,
                );
            }
        }
        Ok(c.start()?)
    });
    if let Err(e) = started {
        backend::detach(&net.bridge, id);
        let _ = c.delete(true);
        return Err(e);
    }
    Ok(c)
}

fn run_foreground(
    args: &RunArgs,
    net: &NetSettings,
    spec: Spec,
    img: backend::Image,
    id: &str,
) -> Result<i32> {
    if !args.interactive {
        // docker gives a non-interactive container /dev/null as stdin.
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2_stdin(null.as_fd())?;
    }
    let mask = block_signals()?;
    let (ours, theirs) = if args.tty {
        UnixStream::pair().map(|(a, b)| (Some(a), Some(b)))?
    } else {
        (None, None)
    };
    let c = launch(args, net, spec, img, id, theirs.map(OwnedFd::from))?;
    let _raw = match ours {
        Some(sock) => Some(proxy_tty(runtime::console::recv_fd(sock.as_fd())?)?),
        None => None,
    };
    let code = wait_forwarding(c.pid(), &mask, _raw.as_ref(), |sig| {
        let _ = c.kill(sig, false);
    })?;
    drop(_raw);
    let _ = std::fs::write(meta_root().join(id).join("exit_code"), code.to_string());
    backend::detach(&net.bridge, id);
    if args.rm {
        c.delete(true)?;
    }
    Ok(code)
}

fn run_detached(
    args: &RunArgs,
    net: &NetSettings,
    spec: Spec,
    img: backend::Image,
    id: &str,
) -> Result<i32> {
    let dir = meta_root().join(id);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("container.log"))?;
    let (mut rd, mut wr) = UnixStream::pair()?;
    // SAFETY: vmctl is single-threaded here; the child only runs this function's code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let _ = nix::unistd::setsid();
            let null = std::fs::File::open("/dev/null").expect("/dev/null");
            let _ = nix::unistd::dup2_stdin(null.as_fd());
            let _ = nix::unistd::dup2_stdout(log.as_fd());
            let _ = nix::unistd::dup2_stderr(log.as_fd());
            let code = match launch(args, net, spec, img, id, None) {
                Ok(c) => {
                    let _ = wr.write_all(b"ok\n");
                    drop(wr);
                    let code = c.wait().unwrap_or(255);
                    let _ = std::fs::write(dir.join("exit_code"), code.to_string());
                    backend::detach(&net.bridge, id);
                    if args.rm {
                        let _ = c.delete(true);
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    0
                }
                Err(e) => {
                    let _ =
                        wr.write_all(format!("{e:#}\n").replace('\n', " ").trim_end().as_bytes());
                    let _ = wr.write_all(b"\n");
                    1
                }
            };
            // SAFETY: ends the monitor without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(wr);
            // One line: the container's processes may keep the other end open.
            let mut msg = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut rd), &mut msg)?;
            if msg.trim() != "ok" {
                bail!("{}", msg.trim());
            }
            println!("{id}");
            Ok(0)
        }
    }
}

/// Every container as a `vmctl ps` row.
pub(crate) fn entries() -> Vec<crate::ps::Entry> {
    all_meta()
        .into_iter()
        .map(|m| {
            let st = Container::load(runtime_root(), &m.id)
                .map(|c| c.status())
                .unwrap_or(Status::Stopped);
            let code_file = meta_root().join(&m.id).join("exit_code");
            let state = match st {
                Status::Running => crate::ps::State::Running,
                Status::Stopped => crate::ps::State::Exited {
                    code: std::fs::read_to_string(&code_file)
                        .ok()
                        .and_then(|c| c.trim().parse().ok()),
                    at: crate::ps::mtime(&code_file),
                },
                s => crate::ps::State::Other(s.to_string()),
            };
            crate::ps::Entry {
                id: m.id,
                name: m.name,
                image: m.image,
                command: m.command,
                created: m.created,
                isolation: "container",
                state,
            }
        })
        .collect()
}

fn stopped(id: &str) -> bool {
    Container::load(runtime_root(), id).map_or(true, |c| c.status() == Status::Stopped)
}

/// Prints container `id`'s log (detached containers log), to its end with `follow`.
pub(crate) fn logs(id: &str, follow: bool) -> Result<i32> {
    let m = load_meta(id).with_context(|| format!("no such container: {id:?}"))?;
    let path = meta_root().join(&m.id).join("container.log");
    let f = std::fs::File::open(&path)
        .with_context(|| format!("{} has no log (only detached containers log)", m.name))?;
    crate::ps::copy_log(f, follow, || stopped(&m.id))
}

/// Stops container `id`: SIGTERM, SIGKILL after `grace` seconds.
pub(crate) fn stop(id: &str, grace: u64) -> Result<()> {
    let m = load_meta(id).with_context(|| format!("no such container: {id:?}"))?;
    let c = Container::load(runtime_root(), &m.id)?;
    if matches!(c.status(), Status::Stopped) {
        m.detach();
        return Ok(());
    }
    let _ = c.kill(libc::SIGTERM, false);
    let t = std::time::Instant::now();
    while c.status() != Status::Stopped && t.elapsed().as_secs() < grace {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if c.status() != Status::Stopped {
        let _ = c.kill(libc::SIGKILL, true);
        while c.status() != Status::Stopped && t.elapsed().as_secs() < grace + 5 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    if c.status() == Status::Stopped {
        m.detach(); // the monitor does too; this covers a monitor that was killed
    }
    Ok(())
}

/// Removes container `id` (`force` kills a running one first).
pub(crate) fn rm(id: &str, force: bool) -> Result<()> {
    let m = load_meta(id).with_context(|| format!("no such container: {id:?}"))?;
    match Container::load(runtime_root(), &m.id) {
        Ok(c) => c
            .delete(force)
            .map_err(|e| anyhow::anyhow!("{e}; `vmctl rm -f` kills it first"))?,
        Err(runtime::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    m.detach();
    std::fs::remove_dir_all(meta_root().join(&m.id))?;
    Ok(())
}

pub fn exec(args: ExecArgs) -> Result<i32> {
    let m = resolve(&args.container)?;
    let c = Container::load(runtime_root(), &m.id)?;
    let mut p: Process = c.spec()?.process().clone().unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    set_console_size(&mut p);
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(w) = &args.workdir {
        p.set_cwd(PathBuf::from(w));
    }
    if let Some(u) = &args.user {
        let (uid, gid) = parse_user(u)?;
        let mut usr = p.user().clone();
        usr.set_uid(uid);
        usr.set_gid(gid);
        p.set_user(usr);
    }
    if !args.interactive {
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2_stdin(null.as_fd())?;
    }
    let mask = block_signals()?;
    let (ours, theirs) = if args.tty {
        UnixStream::pair().map(|(a, b)| (Some(a), Some(b)))?
    } else {
        (None, None)
    };
    let pid = c.exec(p, theirs.map(OwnedFd::from))?;
    let _raw = match ours {
        Some(sock) => Some(proxy_tty(runtime::console::recv_fd(sock.as_fd())?)?),
        None => None,
    };
    wait_forwarding(pid, &mask, _raw.as_ref(), |sig| {
        // SAFETY: kill(2) with integers.
        unsafe { libc::kill(pid, sig) };
    })
}
