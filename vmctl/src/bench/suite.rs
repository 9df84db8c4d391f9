//! Runs the selected levels in order and collects the report; a missing peer or a failing
//! subject becomes a "skipped: reason" entry, never an error of the whole run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::bundle::Bundle;
use super::container::{self, OciRuntime};
use super::model::{Report, Series, Settings, Skip, SCHEMA};
use super::vm::{self, Guest};
use super::{cgview, density, env, io, progress, BenchArgs};

pub struct Suite<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) vmctl: PathBuf,
    /// (name, path) of the OCI runtimes found: ours first.
    pub(super) runtimes: Vec<(String, PathBuf)>,
    pub(super) qemu: Option<PathBuf>,
    pub(super) guest: Option<Guest>,
    pub(super) host_io: Option<io::Throughput>,
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
        let vms = ["microvm", "hosted", "density", "container-in-microvm"]
            .iter()
            .any(|l| level(l));
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
            cgroup_view: None,
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

    pub(super) fn wants(&self, level: &str) -> bool {
        self.args.levels.iter().any(|l| l == level)
    }

    pub(super) fn want_peer(&self, p: &str) -> bool {
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

    pub(super) fn add(&mut self, mut series: Vec<Series>) {
        for s in &mut series {
            s.finish();
        }
        self.report
            .series
            .extend(series.into_iter().filter(|s| !s.samples_ms.is_empty()));
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
            for probe in self.isolated_probes() {
                self.isolated_workload(&probe);
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
        let view = self.cgroup_view();
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
        // `vmctl run` is measured as users run it, on the host's cgroups.
        drop(view);
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

    /// On a hybrid cgroup host with crun among the runtimes, the unified view for the OCI
    /// runtimes (all alike); None leaves the host's view (crun refuses it).
    fn cgroup_view(&mut self) -> Option<cgview::UnifiedView> {
        if !self.runtimes.iter().any(|(n, _)| n == "crun") || !cgview::host_is_hybrid() {
            return None;
        }
        match cgview::UnifiedView::enter() {
            Ok(v) => {
                let what =
                    "hybrid cgroup host: the OCI runtimes (not `vmctl run`) see the unified \
                            (v2) hierarchy on /sys/fs/cgroup (private mount namespace), so that \
                            crun runs; no v2 controllers there, so no limits";
                progress(what);
                self.report.settings.cgroup_view = Some(what.into());
                Some(v)
            }
            Err(e) => {
                progress(&format!(
                    "hybrid cgroup host: the host's view kept ({e:#}); crun will refuse it"
                ));
                None
            }
        }
    }

    pub fn budget(&self) -> Duration {
        Duration::from_secs_f64(self.args.density_budget.max(0.1))
    }

    pub fn density_max(&self) -> usize {
        self.args.density_max
    }
}
