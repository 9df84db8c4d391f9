//! `vmctl vm ...`: docker-like lifecycle of detached microVMs, each one a `vmctl-vmm` process
//! driven over its Firecracker-compatible API socket with [`api::ApiClient`].

pub mod cli;
mod process;
mod store;

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use api::types::{ActionType, MetricsConfig, VmState, VmStateRequest};
use api::ApiClient;

use crate::vmspec::VmFlags;
use cli::{CreateArgs, VmCommand};
use store::{VmDir, VmRecord};

/// Grace period of `vmctl vm rm -f` before SIGKILL.
const RM_GRACE: Duration = Duration::from_secs(2);

pub fn dispatch(cmd: VmCommand) -> anyhow::Result<i32> {
    match cmd {
        VmCommand::Create(args) => create(args),
        VmCommand::Start { vm } => with_api(&vm, |c| c.action(ActionType::InstanceStart)),
        VmCommand::Pause { vm } => with_api(&vm, |c| c.set_vm_state(VmStateRequest::Paused)),
        VmCommand::Resume { vm } => with_api(&vm, |c| c.set_vm_state(VmStateRequest::Resumed)),
        VmCommand::Stop { time, vms } => each(&vms, |dir, rec| {
            process::stop(dir, rec.pid, Duration::from_secs(time))?;
            println!("{}", rec.id);
            Ok(())
        }),
        VmCommand::Ps { quiet } => ps(quiet),
        VmCommand::Logs { follow, vm } => logs(&vm, follow),
        VmCommand::Rm { force, vms } => each(&vms, |dir, rec| rm(dir, rec, force)),
        VmCommand::Inspect { vm } => inspect(&vm),
    }
}

fn client(dir: &VmDir) -> ApiClient {
    ApiClient::new(dir.sock()).with_timeout(Duration::from_secs(10))
}

/// Runs `f` on every VM named; reports every failure, fails if any did.
fn each(
    keys: &[String],
    mut f: impl FnMut(&VmDir, &VmRecord) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    let mut failed = false;
    for key in keys {
        if let Err(e) = store::find(key).and_then(|(dir, rec)| f(&dir, &rec)) {
            eprintln!("vmctl: {key}: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Calls the API of a live VM.
fn with_api(
    key: &str,
    f: impl FnOnce(&ApiClient) -> Result<(), api::ClientError>,
) -> anyhow::Result<i32> {
    let (dir, rec) = store::find(key)?;
    if !dir.alive(rec.pid) {
        bail!(
            "VM {} ({}) has exited; its VMM (pid {}) is gone. `vmctl vm logs {}` shows why",
            rec.id,
            rec.name,
            rec.pid,
            rec.id
        );
    }
    f(&client(&dir)).with_context(|| format!("VM {}", rec.id))?;
    Ok(0)
}

fn create(args: CreateArgs) -> anyhow::Result<i32> {
    let vmm = process::vmm_binary()?;
    let mut resources = VmFlags {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        vcpus: args.vcpus,
        memory: args.memory,
        disks: args.disks,
        nets: args.nets,
        vsock: args.vsock,
    }
    .build_resources()?;
    // The VMM opens these itself, maybe from another working directory.
    if let Some(b) = resources.boot_source.as_mut() {
        b.kernel_image_path = absolute(&b.kernel_image_path)?;
        if let Some(i) = b.initrd_path.as_mut() {
            *i = absolute(i)?;
        }
    }
    for d in &mut resources.drives {
        d.path_on_host = absolute(&d.path_on_host)?;
    }
    let id = store::new_id()?;
    let name = args.name.unwrap_or_else(|| format!("vm-{id}"));
    store::check_name(&name)?;
    let root = store::root();
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let dir = VmDir(root.join(&id));
    std::fs::create_dir(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let result = (|| {
        resources.metrics = Some(MetricsConfig {
            metrics_path: dir.metrics().to_string_lossy().into_owned(),
        });
        std::fs::write(dir.config(), resources.to_json())?;
        let mut child = process::spawn(&vmm, &dir, &id)?;
        let rec = VmRecord {
            id: id.clone(),
            name,
            pid: child.id() as i32,
            created: store::now(),
        };
        dir.write(&rec)?;
        if let Err(e) = client(&dir).configure(&resources) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow::Error::new(e).context("configuring the microVM"));
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&dir.0);
        return Err(e);
    }
    println!("{id}");
    Ok(0)
}

fn absolute(p: &str) -> anyhow::Result<String> {
    let abs = std::path::absolute(p).with_context(|| format!("{p}: cannot make it absolute"))?;
    Ok(abs.to_string_lossy().into_owned())
}

/// The state column: the API's state while the VMM lives, else `exited`.
fn state(dir: &VmDir, rec: &VmRecord) -> &'static str {
    if !dir.alive(rec.pid) {
        return "exited";
    }
    match client(dir).instance_info().map(|i| i.state) {
        Ok(VmState::NotStarted) => "created",
        Ok(VmState::Running) => "running",
        Ok(VmState::Paused) => "paused",
        Err(_) => "unknown",
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn ps(quiet: bool) -> anyhow::Result<i32> {
    let vms = store::list()?;
    if quiet {
        for (_, r) in &vms {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    println!(
        "{:<14} {:<20} {:<8} {:>8} {:>7}",
        "ID", "NAME", "STATE", "PID", "UPTIME"
    );
    for (dir, r) in &vms {
        let st = state(dir, r);
        let (pid, up) = if st == "exited" {
            ("-".to_string(), "-".to_string())
        } else {
            (
                r.pid.to_string(),
                human(store::now().saturating_sub(r.created)),
            )
        };
        println!("{:<14} {:<20} {:<8} {:>8} {:>7}", r.id, r.name, st, pid, up);
    }
    Ok(0)
}

fn logs(key: &str, follow: bool) -> anyhow::Result<i32> {
    let (dir, rec) = store::find(key)?;
    let mut f = std::fs::File::open(dir.console())
        .with_context(|| format!("opening {}", dir.console().display()))?;
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    let mut pos = 0u64;
    loop {
        // Checked before reading, so the last read after the VMM ended sees everything.
        let alive = follow && dir.alive(rec.pid);
        f.seek(SeekFrom::Start(pos))?;
        buf.clear();
        f.read_to_end(&mut buf)?;
        pos += buf.len() as u64;
        out.write_all(&buf)?;
        out.flush()?;
        if !alive {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rm(dir: &VmDir, rec: &VmRecord, force: bool) -> anyhow::Result<()> {
    if dir.alive(rec.pid) {
        if !force {
            bail!(
                "VM {} is running (VMM pid {}); `vmctl vm stop {}` first, or `vmctl vm rm -f`",
                rec.id,
                rec.pid,
                rec.id
            );
        }
        process::stop(dir, rec.pid, RM_GRACE)?;
    }
    std::fs::remove_dir_all(&dir.0).with_context(|| format!("removing {}", dir.0.display()))?;
    println!("{}", rec.id);
    Ok(())
}

fn inspect(key: &str) -> anyhow::Result<i32> {
    let (dir, rec) = store::find(key)?;
    let json = if dir.alive(rec.pid) {
        client(&dir)
            .vm_config()
            .with_context(|| format!("VM {}", rec.id))?
            .to_json()
    } else {
        std::fs::read_to_string(dir.config())
            .with_context(|| format!("VM {} has exited and has no saved configuration", rec.id))?
    };
    println!("{json}");
    Ok(0)
}
