//! Container level: OCI runtimes (ours, crun, runc) driven through runc's command line on the
//! same bundle, and `vmctl run --rm`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::bundle::Bundle;
use super::model::{MemSample, Series};
use super::proc::{self, run_timed, Timed};
use super::progress;

/// How long a container that runs /bin/true may take to exit after `start`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// An OCI runtime with runc's command line, with a private state directory.
pub struct OciRuntime {
    pub name: String,
    path: PathBuf,
    state: tempfile::TempDir,
    live: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn unique_id(tag: &str, n: usize) -> String {
    format!("vmctl-bench-{}-{tag}-{n}", std::process::id())
}

impl OciRuntime {
    pub fn new(name: &str, path: &Path) -> anyhow::Result<Self> {
        let state = tempfile::Builder::new()
            .prefix(&format!("vmctl-bench-{name}-state-"))
            .tempdir()?;
        Ok(Self {
            name: name.into(),
            path: path.into(),
            state,
            live: Vec::new(),
        })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(self.state.path());
        c
    }

    fn check(&self, what: &str, t: Timed) -> anyhow::Result<Timed> {
        if !t.ok {
            let first = t.stderr.lines().last().unwrap_or("(no message)");
            bail!("{} {what} failed: {first}", self.name);
        }
        Ok(t)
    }

    /// `create --bundle B --pid-file F ID`; returns its timing and the container's pid.
    fn create(&mut self, bundle: &Path, id: &str) -> anyhow::Result<(Timed, i32)> {
        let pid_file = self.state.path().join(format!("{id}.pid"));
        let t = run_timed(
            self.cmd()
                .arg("create")
                .arg("--bundle")
                .arg(bundle)
                .arg("--pid-file")
                .arg(&pid_file)
                .arg(id),
        )?;
        self.live.push(id.to_string());
        let t = self.check("create", t)?;
        let pid = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("{} wrote no pid file", self.name))?
            .trim()
            .parse()
            .with_context(|| format!("{} wrote a bad pid file", self.name))?;
        Ok((t, pid))
    }

    fn start(&self, id: &str) -> anyhow::Result<Timed> {
        let t = run_timed(self.cmd().arg("start").arg(id))?;
        self.check("start", t)
    }

    fn delete(&mut self, id: &str, force: bool) -> anyhow::Result<Timed> {
        let mut c = self.cmd();
        c.arg("delete");
        if force {
            c.arg("--force");
        }
        let t = run_timed(c.arg(id))?;
        self.live.retain(|l| l != id);
        self.check("delete", t)
    }

    /// One create + start + exit + delete of the bundle's command; pushes the total and the
    /// phases. With `mem`, also records the created container's memory.
    fn start_once(
        &mut self,
        bundle: &Path,
        id: &str,
        warm: bool,
        series: &mut [Series; 5],
        mem: Option<&mut Vec<MemSample>>,
    ) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let (create, pid) = self.create(bundle, id)?;
        if let Some(mem) = mem {
            let m = proc::proc_mem(pid, None)?;
            mem.push(MemSample {
                subject: self.name.clone(),
                what: "created container's process before start (runtime init)".into(),
                rss_kib: m.rss_kib,
                pss_kib: m.pss_kib,
                overhead_rss_kib: m.rss_kib,
                overhead_pss_kib: m.pss_kib,
                ..MemSample::default()
            });
            mem.push(MemSample {
                subject: self.name.clone(),
                what: "peak RSS of the `create` command (PSS not available)".into(),
                rss_kib: create.max_rss_kib,
                overhead_rss_kib: create.max_rss_kib,
                ..MemSample::default()
            });
        }
        let t_start = Instant::now();
        let start = self.start(id)?;
        proc::wait_pid_exit(pid, EXIT_TIMEOUT)?;
        let exited = t_start.elapsed();
        let delete = self.delete(id, false)?;
        let total = t0.elapsed();
        for (s, v) in
            series
                .iter_mut()
                .zip([total, create.elapsed, start.elapsed, exited, delete.elapsed])
        {
            s.push(warm, ms(v));
        }
        proc::reap_orphans();
        Ok(())
    }

    /// Start latency of /bin/true over `warmup + runs` iterations.
    pub fn measure_start(
        &mut self,
        bundle: &Bundle,
        runs: usize,
        warmup: usize,
        mem: &mut Vec<MemSample>,
    ) -> (Vec<Series>, anyhow::Result<()>) {
        let mut series = ["start", "create", "start-cmd", "start-to-exit", "delete"]
            .map(|m| Series::new("container", &self.name, m));
        let mut result = Ok(());
        for i in 0..warmup + runs {
            let id = unique_id(&self.name, i);
            let warm = i < warmup;
            let m = (i == warmup).then_some(&mut *mem);
            if let Err(e) = self.start_once(bundle.path(), &id, warm, &mut series, m) {
                let _ = self.delete(&id, true);
                result = Err(e);
                break;
            }
            progress(&format!(
                "container {}: run {}/{}{}: {:.1} ms",
                self.name,
                i + 1,
                warmup + runs,
                if warm { " (warm-up)" } else { "" },
                series[0]
                    .samples_ms
                    .last()
                    .or(series[0].warmup_ms.last())
                    .copied()
                    .unwrap_or(f64::NAN)
            ));
        }
        (series.into_iter().collect(), result)
    }

    /// Density: creates and starts idle containers (the bundle must run something long, e.g.
    /// `sleep`) until `budget` is spent or `cap` reached; returns when each was up (ms since
    /// the beginning), then tears them all down.
    pub fn density(
        &mut self,
        bundle: &Bundle,
        budget: Duration,
        cap: usize,
    ) -> (Vec<f64>, Option<String>) {
        let t0 = Instant::now();
        let mut up = Vec::new();
        let mut pids = Vec::new();
        let mut stopped = None;
        while t0.elapsed() < budget {
            if up.len() >= cap {
                stopped = Some(format!("cap of {cap} reached"));
                break;
            }
            let id = unique_id(&format!("{}-dens", self.name), up.len());
            let r = self
                .create(bundle.path(), &id)
                .and_then(|(_, pid)| self.start(&id).map(|_| pid));
            match r {
                Ok(pid) => {
                    pids.push(pid);
                    up.push(ms(t0.elapsed()));
                }
                Err(e) => {
                    stopped = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        progress(&format!(
            "density {}: {} containers up in {:.1} s; tearing down",
            self.name,
            up.len(),
            t0.elapsed().as_secs_f64()
        ));
        self.teardown(&pids);
        (up, stopped)
    }

    fn teardown(&mut self, pids: &[i32]) {
        for &pid in pids {
            // SAFETY: signalling a container process we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in pids {
            let _ = proc::wait_pid_exit(pid, Duration::from_secs(10));
        }
        for id in self.live.clone() {
            let _ = self.delete(&id, true);
        }
        proc::reap_orphans();
    }
}

impl Drop for OciRuntime {
    fn drop(&mut self) {
        for id in self.live.clone() {
            let _ = self.delete(&id, true);
        }
    }
}

/// `vmctl run --rm --network none -- /bin/true` start-to-exit latency.
pub fn vmctl_run_start(
    vmctl: &Path,
    image_root: &Path,
    runs: usize,
    warmup: usize,
) -> (Series, anyhow::Result<()>) {
    let mut s = Series::new("container", "vmctl run", "start");
    for i in 0..warmup + runs {
        let r = run_timed(
            Command::new(vmctl)
                .env("VMCTL_IMAGE_ROOT", image_root)
                .args(["run", "--rm", "--network", "none", "--", "/bin/true"]),
        );
        match r {
            Ok(t) if t.ok => s.push(i < warmup, ms(t.elapsed)),
            Ok(t) => {
                let msg = t
                    .stderr
                    .lines()
                    .last()
                    .unwrap_or("(no message)")
                    .to_string();
                return (s, Err(anyhow::anyhow!("vmctl run failed: {msg}")));
            }
            Err(e) => return (s, Err(e)),
        }
        progress(&format!(
            "container vmctl run: run {}/{}{}: {:.1} ms",
            i + 1,
            warmup + runs,
            if i < warmup { " (warm-up)" } else { "" },
            s.samples_ms
                .last()
                .or(s.warmup_ms.last())
                .copied()
                .unwrap_or(f64::NAN)
        ));
        proc::reap_orphans();
    }
    (s, Ok(()))
}

/// Memory of `vmctl run`'s own processes (the supervisor, any shim) while its container runs
/// `sleep`: the sum over vmctl's process tree without the workload.
pub fn vmctl_run_memory(vmctl: &Path, image_root: &Path) -> anyhow::Result<MemSample> {
    let mut child = Command::new(vmctl)
        .env("VMCTL_IMAGE_ROOT", image_root)
        .args(["run", "--rm", "--network", "none", "--", "sleep", "30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting vmctl run")?;
    let root = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let procs = proc::descendants(root);
        if let Some(&(sleep_pid, _)) = procs.iter().find(|(_, c)| c == "sleep") {
            break Some((sleep_pid, procs));
        }
        if Instant::now() > deadline || !proc::pid_alive(root) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some((sleep_pid, procs)) = found else {
        proc::kill_child(&mut child);
        bail!("vmctl run did not start `sleep` in a container within 20 s");
    };
    let workload: Vec<i32> = std::iter::once(sleep_pid)
        .chain(proc::descendants(sleep_pid).into_iter().map(|(p, _)| p))
        .collect();
    let mut total = proc::proc_mem(root, None)?;
    for (pid, _) in procs.iter().filter(|(p, _)| !workload.contains(p)) {
        if let Ok(m) = proc::proc_mem(*pid, None) {
            total.rss_kib += m.rss_kib;
            total.pss_kib += m.pss_kib;
        }
    }
    // SAFETY: signalling the workload we started; vmctl then cleans up (--rm) and exits.
    unsafe { libc::kill(sleep_pid, libc::SIGKILL) };
    let waited = proc::wait_pid_exit(root, Duration::from_secs(10));
    if waited.is_err() {
        proc::kill_child(&mut child);
    } else {
        let _ = child.wait();
    }
    Ok(MemSample {
        subject: "vmctl run".into(),
        what: format!(
            "vmctl's processes while its container runs ({} besides the workload)",
            procs.len() + 1 - workload.len()
        ),
        rss_kib: total.rss_kib,
        pss_kib: total.pss_kib,
        overhead_rss_kib: total.rss_kib,
        overhead_pss_kib: total.pss_kib,
        ..MemSample::default()
    })
}
