//! Runs the selected levels in order and collects the report; a missing peer or a failing
//! subject becomes a "skipped: reason" entry, never an error of the whole run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::bundle::Bundle;
use super::container::{self, OciRuntime};
use super::model::{IoSample, Report, Series, Settings, Skip, SCHEMA};
use super::vm::{self, Guest, Vmm};
use super::{density, env, io, progress, BenchArgs};

pub struct Suite<'a> {
    args: &'a BenchArgs,
    vmctl: PathBuf,
    /// (name, path) of the OCI runtimes found: ours first.
    runtimes: Vec<(String, PathBuf)>,
    qemu: Option<PathBuf>,
    guest: Option<Guest>,
    host_io: Option<io::Throughput>,
    pub report: Report,
}

/// `prog` as given when it contains a slash, else looked up on PATH.
pub fn find_program(prog: &Path) -> Option<PathBuf> {
    if prog.components().count() > 1 {
        return prog.is_file().then(|| prog.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

impl<'a> Suite<'a> {
    pub fn new(args: &'a BenchArgs) -> anyhow::Result<Self> {
        let vmctl = std::env::current_exe()?;
        let mut skipped = Vec::new();
        let mut skip = |what: &str, reason: String| {
            progress(&format!("{what}: skipped: {reason}"));
            skipped.push(Skip {
                what: what.into(),
                reason,
            });
        };
        let ours = args
            .runtime
            .clone()
            .or_else(|| {
                let sibling = vmctl.with_file_name("vmctl-runtime");
                sibling.is_file().then_some(sibling)
            })
            .or_else(|| find_program(Path::new("vmctl-runtime")));
        let mut runtimes = Vec::new();
        let level = |l: &str| args.levels.iter().any(|x| x == l);
        let containers = level("container") || level("density");
        let vms = ["microvm", "hosted", "density"].iter().any(|l| level(l));
        let want = |p: &str| args.peers.iter().any(|x| x == p);
        match ours {
            Some(p) => runtimes.push(("vmctl-runtime".to_string(), p)),
            None if !containers => {}
            None => skip(
                "vmctl-runtime",
                "not found next to vmctl or on PATH (build it: cargo build -p runtime)".into(),
            ),
        }
        for (name, path) in [("crun", &args.crun), ("runc", &args.runc)] {
            if !want(name) || !containers {
                continue;
            }
            match find_program(path) {
                Some(p) => runtimes.push((name.to_string(), p)),
                None => skip(name, format!("{} not installed", path.display())),
            }
        }
        let qemu = if vms && (want("qemu-kvm") || want("qemu-tcg")) {
            let q = find_program(&args.qemu);
            if q.is_none() {
                skip("qemu", format!("{} not installed", args.qemu.display()));
            }
            q
        } else {
            None
        };
        let (dk, di) = vm::default_artefacts();
        let kernel = args.kernel.clone().unwrap_or(dk);
        let initrd = args.initrd.clone().unwrap_or(di);
        let guest = if !kernel.is_file() {
            if vms {
                skip(
                    "vm levels",
                    format!(
                        "guest kernel {} not found: run scripts/build-kernel.sh or pass --kernel",
                        kernel.display()
                    ),
                );
            }
            None
        } else if !initrd.is_file() {
            if vms {
                skip(
                    "vm levels",
                    format!(
                        "initramfs {} not found: run scripts/build-initramfs.sh or pass --initrd",
                        initrd.display()
                    ),
                );
            }
            None
        } else {
            Some(Guest {
                kernel,
                initrd,
                mem_mib: args.vm_memory,
                timeout: Duration::from_secs(args.vm_timeout),
                disk: None,
                io_mib: args.io_mib.max(1),
            })
        };
        let mut tools: Vec<(&str, &Path, &[&str])> = Vec::new();
        for (n, p) in &runtimes {
            tools.push((n.as_str(), p.as_path(), &["--version"]));
        }
        if let Some(q) = &qemu {
            tools.push(("qemu", q.as_path(), &["--version"]));
        }
        let environment = env::collect(&tools);
        progress(&format!(
            "host: {} ({} CPUs), kernel {}, KVM: {}, load {:.1}",
            environment.cpu_model,
            environment.cpus,
            environment.host_kernel,
            environment.kvm,
            environment.load_avg_1m
        ));
        let settings = Settings {
            runs: args.runs,
            vm_runs: args.vm_runs,
            warmup: args.warmup,
            levels: args.levels.clone(),
            peers: args.peers.clone(),
            density_budget_s: args.density_budget,
            vm_memory_mib: args.vm_memory,
            kernel: guest.as_ref().map(|g| g.kernel.display().to_string()),
            initrd: guest.as_ref().map(|g| g.initrd.display().to_string()),
            guest_cmdline: guest.as_ref().map(|_| vm::full_cmdline()),
        };
        Ok(Self {
            args,
            vmctl,
            runtimes,
            qemu,
            guest,
            host_io: None,
            report: Report {
                schema: SCHEMA,
                env: environment,
                settings,
                series: Vec::new(),
                memory: Vec::new(),
                density: Vec::new(),
                io: Vec::new(),
                skipped,
                targets: Vec::new(),
                duration_s: 0.0,
            },
        })
    }

    fn wants(&self, level: &str) -> bool {
        self.args.levels.iter().any(|l| l == level)
    }

    fn want_peer(&self, p: &str) -> bool {
        self.args.peers.iter().any(|x| x == p)
    }

    pub fn skip(&mut self, what: &str, reason: impl Into<String>) {
        let reason = reason.into();
        progress(&format!("{what}: skipped: {reason}"));
        self.report.skipped.push(Skip {
            what: what.into(),
            reason,
        });
    }

    fn add(&mut self, mut series: Vec<Series>) {
        for s in &mut series {
            s.finish();
        }
        self.report
            .series
            .extend(series.into_iter().filter(|s| !s.samples_ms.is_empty()));
    }

    /// The VM subjects: ours, then the QEMU peers.
    fn vmms(&self) -> Vec<(&'static str, String, Vmm)> {
        let mut v = Vec::new();
        let kvm = Path::new("/dev/kvm").exists();
        if kvm {
            v.push(("microvm", "vmctl-vmm".into(), Vmm::Ours(self.vmctl.clone())));
        }
        if let Some(q) = &self.qemu {
            for accel in ["kvm", "tcg"] {
                if self.want_peer(&format!("qemu-{accel}")) && (accel == "tcg" || kvm) {
                    let vmm = Vmm::Qemu {
                        path: q.clone(),
                        accel,
                    };
                    v.push(("hosted", format!("qemu-{accel}"), vmm));
                }
            }
        }
        v
    }

    pub fn run(mut self) -> Report {
        let t0 = Instant::now();
        if !Path::new("/dev/kvm").exists() && (self.wants("microvm") || self.wants("hosted")) {
            self.skip("kvm", "no /dev/kvm: vmctl-vmm and qemu-kvm skipped");
        }
        if self.wants("container") || self.wants("density") {
            self.containers();
        }
        if self.wants("microvm") || self.wants("hosted") {
            self.vm_boots();
        }
        if self.wants("container-in-microvm") {
            for iso in ["microvm", "hosted"] {
                self.isolated_workload(iso);
            }
        }
        if self.wants("density") {
            self.vm_density();
        }
        if self.wants("io") && !self.wants("microvm") && !self.wants("hosted") {
            self.skip(
                "io (virtio-blk)",
                "the I/O level runs in the VM boots: add microvm or hosted to --levels",
            );
        }
        self.report.duration_s = t0.elapsed().as_secs_f64();
        self.report
    }

    fn containers(&mut self) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            self.skip("containers", "needs root (namespaces, cgroups)");
            return;
        }
        let bundle = match Bundle::from_default_image(&self.args.image_root, &["/bin/true"]) {
            Ok(b) => b,
            Err(e) => return self.skip("containers", format!("no bundle: {e:#}")),
        };
        let (runs, warmup) = (self.args.runs, self.args.warmup);
        let mem_wanted = self.wants("memory");
        for (name, path) in self.runtimes.clone() {
            let mut rt = match OciRuntime::new(&name, &path) {
                Ok(rt) => rt,
                Err(e) => {
                    self.skip(&name, format!("{e:#}"));
                    continue;
                }
            };
            if self.wants("container") {
                let mut mem = Vec::new();
                let (series, res) = rt.measure_start(&bundle, runs, warmup, &mut mem);
                let got = series.iter().any(|s| !s.samples_ms.is_empty());
                if let Err(e) = res {
                    let what = if got {
                        "partly failed, samples kept: "
                    } else {
                        ""
                    };
                    self.skip(&name, format!("{what}{e:#}"));
                    if !got {
                        continue;
                    }
                }
                self.add(series);
                if mem_wanted {
                    self.report.memory.extend(mem);
                }
            }
            if self.wants("density") {
                density::containers(self, &mut rt, &bundle);
            }
        }
        if self.wants("container") {
            let (s, res) =
                container::vmctl_run_start(&self.vmctl, &self.args.image_root, runs, warmup);
            match res {
                Err(e) => self.skip("vmctl run", format!("{e:#}")),
                Ok(()) => {
                    self.add(vec![s]);
                    if mem_wanted {
                        match container::vmctl_run_memory(&self.vmctl, &self.args.image_root) {
                            Ok(m) => self.report.memory.push(m),
                            Err(e) => self.skip("vmctl run memory", format!("{e:#}")),
                        }
                    }
                }
            }
        }
    }

    /// With the I/O level: a raw disk for every VM boot and the host's own throughput on it.
    fn io_disk(&mut self, guest: &mut Guest) -> Option<tempfile::TempDir> {
        if !self.wants("io") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("vmctl-bench-disk-")
            .tempdir_in("/var/tmp")
            .ok()?;
        let disk = dir.path().join("disk.raw");
        match io::host_baseline(&disk, guest.io_mib) {
            Ok(t) => {
                progress(&format!(
                    "io host: read {:.0} MB/s, write {:.0} MB/s ({} MiB)",
                    t.read_mb_s, t.write_mb_s, guest.io_mib
                ));
                self.host_io = Some(t);
                guest.disk = Some(disk);
                Some(dir)
            }
            Err(e) => {
                self.skip("io (virtio-blk)", format!("host baseline: {e:#}"));
                None
            }
        }
    }

    fn vm_boots(&mut self) {
        let Some(mut guest) = self.guest.clone() else {
            return;
        };
        let _disk_dir = self.io_disk(&mut guest);
        let io = guest.disk.is_some();
        let (runs, warmup) = (self.args.vm_runs, self.args.vm_warmup);
        for (level, name, vmm) in self.vmms() {
            if !self.wants(level) {
                continue;
            }
            let metrics = [
                "boot-to-ready",
                "boot-to-run-init",
                "boot-to-first-output",
                "boot-to-marker",
                "vmm-setup",
                "kernel-to-marker",
                "init-to-ready",
            ];
            let mut series = metrics.map(|m| Series::new(level, &name, m));
            for i in 0..warmup + runs {
                let warm = i < warmup;
                let mem = !warm && i + 1 == warmup + runs && self.wants("memory");
                progress(&format!(
                    "{level} {name}: boot {}/{} ...",
                    i + 1,
                    warmup + runs
                ));
                let io = io && !warm && i + 1 == warmup + runs;
                match vm::boot_once(&vmm, &guest, mem, io) {
                    Ok(b) => {
                        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                        let vals = [
                            Some(ms(b.ready)),
                            b.run_init.map(ms),
                            b.first_output.map(ms),
                            b.marker_seen.map(ms),
                            b.vmm_setup_ms,
                            b.kernel_ms,
                            b.marker_seen.map(|m| ms(b.ready.saturating_sub(m))),
                        ];
                        for (s, v) in series.iter_mut().zip(vals) {
                            if let Some(v) = v {
                                s.push(warm, v);
                            }
                        }
                        progress(&format!(
                            "{level} {name}: ready after {:.0} ms",
                            ms(b.ready)
                        ));
                        if let Some(m) = b.mem {
                            let sample = vm::mem_sample(&name, &guest, &m);
                            self.report.memory.push(sample);
                        }
                        match (b.io, self.host_io) {
                            (Some(Ok(t)), Some(h)) => {
                                progress(&format!(
                                    "io {name}: read {:.1} MB/s, write {:.1} MB/s",
                                    t.read_mb_s, t.write_mb_s
                                ));
                                self.report.io.push(IoSample {
                                    subject: name.clone(),
                                    mib: guest.io_mib,
                                    read_mb_s: t.read_mb_s,
                                    write_mb_s: t.write_mb_s,
                                    host_read_mb_s: h.read_mb_s,
                                    host_write_mb_s: h.write_mb_s,
                                });
                            }
                            (Some(Err(e)), _) => self.skip(&format!("io {name}"), e),
                            _ => {}
                        }
                    }
                    Err(e) => {
                        self.skip(&name, format!("boot failed: {e:#}"));
                        break;
                    }
                }
            }
            self.add(series.into_iter().collect());
        }
    }

    /// `vmctl run --isolation ISO --rm -- echo MARK`: time to the workload's output, and
    /// its boot-marker and agent-plus-container phases when the VMM reports the marker.
    fn isolated_workload(&mut self, iso: &str) {
        let what = format!("container-in-{iso}");
        let timeout = Duration::from_secs(self.args.vm_timeout);
        let subject = format!("vmctl --isolation {iso}");
        let mut series = ["to-workload-output", "boot-to-marker", "marker-to-workload"]
            .map(|m| Series::new("container-in-microvm", &subject, m));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        for i in 0..self.args.vm_runs {
            progress(&format!("{what}: run {}/{} ...", i + 1, self.args.vm_runs));
            match density::isolated_once(&self.vmctl, &self.args.image_root, iso, timeout) {
                Ok(r) => {
                    series[0].push(false, ms(r.workload));
                    if let Some(m) = r.marker {
                        series[1].push(false, ms(m));
                        series[2].push(false, ms(r.workload.saturating_sub(m)));
                    }
                    progress(&format!(
                        "{what}: workload output after {:.0} ms",
                        ms(r.workload)
                    ));
                }
                Err(e) => {
                    self.skip(&what, format!("{e:#}"));
                    break;
                }
            }
        }
        self.add(series.into_iter().collect());
    }

    fn vm_density(&mut self) {
        let Some(guest) = self.guest.clone() else {
            return;
        };
        for (level, name, vmm) in self.vmms() {
            density::vms(self, level, &name, &vmm, &guest);
        }
    }

    pub fn budget(&self) -> Duration {
        Duration::from_secs_f64(self.args.density_budget.max(0.1))
    }

    pub fn density_max(&self) -> usize {
        self.args.density_max
    }
}
