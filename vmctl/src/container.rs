//! Container commands (`vmctl run --isolation container`, `ps`, `logs`, `stop`, `rm`,
//! `exec`) on the runtime library, with docker's habits. State: `$VMCTL_ROOT/containers/ID/`
//! (meta.json, container.log, exit_code) and the runtime's state in `$VMCTL_ROOT/runtime/`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use runtime::oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};
use runtime::{Container, ContainerBuilder, Status};
use serde::{Deserialize, Serialize};

use crate::cli::{ExecArgs, RunArgs};

/// The one place that knows the image store and the bridge network (see `backend`).
mod backend {
    use std::path::{Path, PathBuf};

    use anyhow::{bail, Context, Result};

    /// What vmctl needs of an image.
    pub struct Image {
        pub reference: String,
        /// Layer directories, bottom first.
        pub layers: Vec<PathBuf>,
        pub env: Vec<String>,
        pub cmd: Vec<String>,
        pub entrypoint: Vec<String>,
        pub workdir: Option<String>,
        pub user: Option<String>,
    }

    /// Resolves IMAGE: a rootfs directory, or the default busybox image when left out.
    // Until runtime::image lands: ImageStore::open(root)?.get(name) / .ensure_default().
    pub fn image(state: &Path, name: Option<&str>) -> Result<Image> {
        let (reference, dir) = match name {
            Some(n) if Path::new(n).is_dir() => (n.to_string(), PathBuf::from(n)),
            Some(n) => bail!("image {n:?} not found: the image store is not in this build; pass a rootfs directory"),
            None => ("busybox".to_string(), default_rootfs(state)?),
        };
        let dir = dir
            .canonicalize()
            .with_context(|| format!("image {}", dir.display()))?;
        Ok(Image {
            reference,
            layers: vec![dir],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cmd: vec!["sh".into()],
            entrypoint: Vec::new(),
            workdir: None,
            user: None,
        })
    }

    /// A busybox rootfs built once from the host's static busybox.
    fn default_rootfs(state: &Path) -> Result<PathBuf> {
        let dir = state.join("images/busybox");
        if dir.join("bin/busybox").exists() {
            return Ok(dir);
        }
        let tmp = state.join(format!("images/.busybox-{}", std::process::id()));
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
            std::fs::create_dir_all(tmp.join(d))?;
        }
        std::fs::copy("/bin/busybox", tmp.join("bin/busybox"))
            .context("copy /bin/busybox (install busybox-static)")?;
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()?;
        for applet in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|a| *a != "busybox")
        {
            std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet))?;
        }
        std::fs::write(
            tmp.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
        )?;
        std::fs::write(tmp.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp); // another vmctl won the race
        }
        Ok(dir)
    }

    /// Connects the container (its network namespace, via its pid) to the network.
    // Until runtime::network lands: BridgeNetwork::open(state)?.attach(id, pid, &publish).
    pub fn attach(
        _state: &Path,
        _id: &str,
        _pid: i32,
        mode: &str,
        publish: &[String],
    ) -> Result<Option<String>> {
        if mode == "bridge" {
            if !publish.is_empty() {
                bail!(
                    "-p needs the bridge network, which is not in this build; use --network host"
                );
            }
            tracing::info!(
                "bridge networking is not in this build: the container has loopback only"
            );
        }
        Ok(None)
    }

    /// Undoes `attach`.
    pub fn detach(_state: &Path, _id: &str) {}
}

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
}

fn state_root() -> PathBuf {
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

/// A container by id, id prefix or name.
fn resolve(what: &str) -> Result<Meta> {
    let all = all_meta();
    let mut hits = all
        .into_iter()
        .filter(|m| m.id == what || m.name == what || m.id.starts_with(what));
    match (hits.next(), hits.next()) {
        (Some(m), None) => Ok(m),
        (Some(_), Some(_)) => bail!("{what:?} matches several containers; give more of the id"),
        (None, _) => bail!("no such container: {what:?} (see `vmctl ps -a`)"),
    }
}

/// `--memory`: a bare number is MiB; suffixes b, k, m, g.
fn parse_memory(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'b')) => (&t[..i], 1),
        Some((i, 'k')) => (&t[..i], 1 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t.as_str(), 1 << 20),
    };
    let n: f64 = num.parse().ok().filter(|n: &f64| *n > 0.0).with_context(|| {
        format!("--memory {s:?}: expected a positive size like 512, 512m or 1g (a bare number is MiB)")
    })?;
    Ok((n * mult as f64) as i64)
}

fn parse_user(u: &str) -> Result<(u32, u32)> {
    let (a, b) = u.split_once(':').unwrap_or((u, ""));
    let num = |x: &str| if x == "root" { Some(0) } else { x.parse().ok() };
    let uid = num(a).with_context(|| format!("--user {u:?}: use a numeric uid[:gid]"))?;
    let gid = if b.is_empty() {
        uid
    } else {
        num(b).with_context(|| format!("--user {u:?}: use a numeric gid"))?
    };
    Ok((uid, gid))
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

/// The OCI spec for `vmctl run` (docker defaults from the runtime library, then the flags).
fn build_spec(args: &RunArgs, img: &backend::Image, id: &str) -> Result<Spec> {
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
    if let Some(u) = args.user.as_ref().or(img.user.as_ref()) {
        let (uid, gid) = parse_user(u)?;
        let mut usr = p.user().clone();
        usr.set_uid(uid);
        usr.set_gid(gid);
        p.set_user(usr);
    }
    p.set_terminal(Some(args.tty));
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
    match args.network.as_str() {
        "host" => {
            let mut linux = spec.linux().clone().unwrap_or_default();
            let ns = linux.namespaces().clone().unwrap_or_default();
            linux.set_namespaces(Some(
                ns.into_iter()
                    .filter(|n| n.typ() != LinuxNamespaceType::Network)
                    .collect(),
            ));
            spec.set_linux(Some(linux));
        }
        "none" | "bridge" => {}
        other => bail!("--network {other:?}: use none, host or bridge"),
    }
    Ok(spec)
}

pub fn run(args: RunArgs) -> Result<i32> {
    if args.detach && args.tty {
        bail!("-t with -d is not supported: use `vmctl exec -it` on the detached container");
    }
    let id = new_id()?;
    let name = args.name.clone().unwrap_or_else(|| id.clone());
    if all_meta().iter().any(|m| m.name == name) {
        bail!("the name {name:?} is in use; `vmctl rm {name}` or pick another --name");
    }
    let img = backend::image(&state_root(), args.image.as_deref())?;
    let spec = build_spec(&args, &img, &id)?;
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
        network: args.network.clone(),
        ip: None,
    };
    std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
    let r = if args.detach {
        run_detached(&args, spec, img, &id)
    } else {
        run_foreground(&args, spec, img, &id)
    };
    if r.is_err() || (args.rm && !args.detach) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r
}

/// Creates, networks and starts the container; `console` receives its pty master.
fn launch(
    args: &RunArgs,
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
    let started = backend::attach(&state_root(), id, c.pid(), &args.network, &args.publish)
        .and_then(|ip| {
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
        backend::detach(&state_root(), id);
        let _ = c.delete(true);
        return Err(e);
    }
    Ok(c)
}

fn run_foreground(args: &RunArgs, spec: Spec, img: backend::Image, id: &str) -> Result<i32> {
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
    let c = launch(args, spec, img, id, theirs.map(OwnedFd::from))?;
    let _raw = match ours {
        Some(sock) => Some(proxy_tty(runtime::console::recv_fd(sock.as_fd())?)?),
        None => None,
    };
    let code = wait_forwarding(c.pid(), &mask, |sig| {
        let _ = c.kill(sig, false);
    })?;
    drop(_raw);
    let _ = std::fs::write(meta_root().join(id).join("exit_code"), code.to_string());
    if args.rm {
        backend::detach(&state_root(), id);
        c.delete(true)?;
    }
    Ok(code)
}

fn run_detached(args: &RunArgs, spec: Spec, img: backend::Image, id: &str) -> Result<i32> {
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
            let code = match launch(args, spec, img, id, None) {
                Ok(c) => {
                    let _ = wr.write_all(b"ok\n");
                    drop(wr);
                    let code = c.wait().unwrap_or(255);
                    let _ = std::fs::write(dir.join("exit_code"), code.to_string());
                    if args.rm {
                        backend::detach(&state_root(), id);
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

fn block_signals() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(set)
}

/// Waits for `pid`, handing other signals to `forward`; returns the docker-style exit code.
fn wait_forwarding(pid: i32, set: &nix::sys::signal::SigSet, forward: impl Fn(i32)) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, code) => return Ok(code),
            WaitStatus::Signaled(_, s, _) => return Ok(128 + s as i32),
            _ => {}
        }
        match set.wait()? {
            nix::sys::signal::Signal::SIGCHLD => {}
            nix::sys::signal::Signal::SIGWINCH => {}
            s => forward(s as i32),
        }
    }
}

/// Raw mode on our terminal (restored on drop) and two copy threads between it and `master`.
fn proxy_tty(master: OwnedFd) -> Result<TermGuard> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(stdin.as_fd()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a winsize that lives across both calls.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(stdin.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }
    let mut m_in = std::fs::File::from(master.try_clone()?);
    let mut m_out = std::fs::File::from(master);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut m_in);
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = m_out.read(&mut buf) {
            if n == 0
                || std::io::stdout()
                    .write_all(&buf[..n])
                    .and_then(|_| std::io::stdout().flush())
                    .is_err()
            {
                break;
            }
        }
    });
    Ok(TermGuard(saved))
}

/// Restores our terminal's mode when dropped.
struct TermGuard(Option<nix::sys::termios::Termios>);

impl Drop for TermGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn status_line(m: &Meta) -> (Status, String) {
    let st = Container::load(runtime_root(), &m.id)
        .map(|c| c.status())
        .unwrap_or(Status::Stopped);
    let text = match st {
        Status::Stopped => {
            let code = std::fs::read_to_string(meta_root().join(&m.id).join("exit_code"))
                .unwrap_or_default();
            format!(
                "Exited ({})",
                if code.trim().is_empty() {
                    "?"
                } else {
                    code.trim()
                }
            )
        }
        Status::Running => "Up".into(),
        s => s.to_string(),
    };
    (st, text)
}

pub fn ps(all: bool, quiet: bool) -> Result<i32> {
    if !quiet {
        println!(
            "{:<14}{:<22}{:<28}{:<14}NAMES",
            "CONTAINER ID", "IMAGE", "COMMAND", "STATUS"
        );
    }
    for m in all_meta() {
        let (st, text) = status_line(&m);
        if !all && st == Status::Stopped {
            continue;
        }
        if quiet {
            println!("{}", m.id);
            continue;
        }
        let mut cmd = format!("\"{}\"", m.command.join(" "));
        cmd.truncate(26);
        let mut image = m.image.clone();
        image.truncate(20);
        println!("{:<14}{:<22}{:<28}{:<14}{}", m.id, image, cmd, text, m.name);
    }
    Ok(0)
}

pub fn logs(what: &str, follow: bool) -> Result<i32> {
    let m = resolve(what)?;
    let path = meta_root().join(&m.id).join("container.log");
    let mut f = std::fs::File::open(&path)
        .with_context(|| format!("{} has no log (only detached containers log)", m.name))?;
    let mut out = std::io::stdout();
    loop {
        std::io::copy(&mut f, &mut out)?;
        if !follow || status_line(&m).0 == Status::Stopped {
            std::io::copy(&mut f, &mut out)?;
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn stop(list: &[String], grace: u64) -> Result<i32> {
    for what in list {
        let m = resolve(what)?;
        let c = Container::load(runtime_root(), &m.id)?;
        if matches!(c.status(), Status::Stopped) {
            println!("{what}");
            continue;
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
        println!("{what}");
    }
    Ok(0)
}

pub fn rm(list: &[String], force: bool) -> Result<i32> {
    for what in list {
        let m = resolve(what)?;
        match Container::load(runtime_root(), &m.id) {
            Ok(c) => c
                .delete(force)
                .map_err(|e| anyhow::anyhow!("{e}; `vmctl rm -f` kills it first"))?,
            Err(runtime::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        backend::detach(&state_root(), &m.id);
        std::fs::remove_dir_all(meta_root().join(&m.id))?;
        println!("{what}");
    }
    Ok(0)
}

pub fn exec(args: ExecArgs) -> Result<i32> {
    let m = resolve(&args.container)?;
    let c = Container::load(runtime_root(), &m.id)?;
    let mut p: Process = c.spec()?.process().clone().unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
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
    wait_forwarding(pid, &mask, |sig| {
        // SAFETY: kill(2) with integers.
        unsafe { libc::kill(pid, sig) };
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512").unwrap(), 512 << 20);
        assert_eq!(parse_memory("64k").unwrap(), 64 << 10);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5m").unwrap(), 3 << 19);
        assert!(parse_memory("lots")
            .unwrap_err()
            .to_string()
            .contains("lots"));
        assert!(parse_memory("0").is_err());
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("1000").unwrap(), (1000, 1000));
        assert_eq!(parse_user("1000:50").unwrap(), (1000, 50));
        assert_eq!(parse_user("root").unwrap(), (0, 0));
        assert!(parse_user("bob").is_err());
    }
}
