//! What a bench run records: every raw sample, the environment and the run's settings. This
//! is the JSON file's schema (`schema` field), also read back by `--compare`.

use serde::{Deserialize, Serialize};

use super::env::Environment;
use super::stats::{summarize, Summary};

/// Version of the JSON layout.
pub const SCHEMA: u32 = 1;

/// One latency series: one measured thing of one subject, in milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Series {
    /// container, microvm, hosted, container-in-microvm.
    pub level: String,
    /// Who was measured: vmctl-runtime, crun, runc, "vmctl run", vmctl-vmm, qemu-kvm, ...
    pub subject: String,
    /// What: start, create, boot-to-ready, kernel, ...
    pub metric: String,
    /// Measured samples (warm-up excluded), ms.
    pub samples_ms: Vec<f64>,
    /// Warm-up samples, ms (kept for completeness, not summarised).
    pub warmup_ms: Vec<f64>,
    /// Summary of `samples_ms` (None when empty).
    pub summary: Option<Summary>,
}

impl Series {
    pub fn new(level: &str, subject: &str, metric: &str) -> Self {
        Self {
            level: level.into(),
            subject: subject.into(),
            metric: metric.into(),
            samples_ms: Vec::new(),
            warmup_ms: Vec::new(),
            summary: None,
        }
    }

    /// "level/subject/metric", the key `--compare` matches on.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.level, self.subject, self.metric)
    }

    pub fn push(&mut self, warmup: bool, ms: f64) {
        if warmup {
            self.warmup_ms.push(ms);
        } else {
            self.samples_ms.push(ms);
        }
    }

    pub fn finish(&mut self) {
        self.summary = summarize(&self.samples_ms);
    }
}

/// Memory of one live instance, KiB (from /proc/PID/smaps).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct MemSample {
    /// Who: vmctl-vmm, qemu-kvm, runc (created container), "vmctl run" (supervisor), ...
    pub subject: String,
    /// What the number means, in words.
    pub what: String,
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// Resident part of the guest RAM mapping (VMs only): guest memory actually touched.
    pub guest_rss_kib: Option<u64>,
    /// Guest RAM size (VMs only).
    pub guest_mib: Option<u64>,
    /// RSS beyond the guest RAM mapping (VMs), or the whole RSS (runtime processes).
    pub overhead_rss_kib: u64,
    /// PSS beyond the guest RAM mapping.
    pub overhead_pss_kib: u64,
}

/// Density: how many idle instances started within the budget.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Density {
    pub level: String,
    pub subject: String,
    pub budget_s: f64,
    /// Instances up when the budget ran out (or the cap was reached).
    pub started: usize,
    /// Time from the start of the density run until instance i (1-based i = index + 1) was up.
    pub up_at_ms: Vec<f64>,
    /// Why it stopped early, if it did (a failure, the cap).
    pub stopped: Option<String>,
}

/// Sequential I/O through virtio-blk in the guest against the host, MB/s.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct IoSample {
    pub subject: String,
    pub mib: u64,
    pub read_mb_s: f64,
    pub write_mb_s: f64,
    pub host_read_mb_s: f64,
    pub host_write_mb_s: f64,
}

/// A peer or measurement that did not run, and why.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Skip {
    pub what: String,
    pub reason: String,
}

/// A performance target, evaluated on this run.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Target {
    pub name: String,
    /// Measured value (a ratio, or MiB for the overhead target).
    pub value: Option<f64>,
    pub limit: f64,
    /// None when a needed measurement is missing.
    pub met: Option<bool>,
    pub detail: String,
}

/// Settings the run used.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Settings {
    pub runs: usize,
    pub vm_runs: usize,
    pub warmup: usize,
    pub levels: Vec<String>,
    pub peers: Vec<String>,
    pub density_budget_s: f64,
    pub vm_memory_mib: u64,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub guest_cmdline: Option<String>,
    /// The container level's cgroups when not the host's as they are (bench/cgview.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_view: Option<String>,
}

/// The whole JSON file.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Report {
    pub schema: u32,
    pub env: Environment,
    pub settings: Settings,
    pub series: Vec<Series>,
    pub memory: Vec<MemSample>,
    pub density: Vec<Density>,
    #[serde(default)]
    pub io: Vec<IoSample>,
    pub skipped: Vec<Skip>,
    pub targets: Vec<Target>,
    /// Wall time of the whole bench run, s.
    pub duration_s: f64,
}

impl Report {
    pub fn series(&self, level: &str, subject: &str, metric: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.level == level && s.subject == subject && s.metric == metric)
    }

    pub fn median(&self, level: &str, subject: &str, metric: &str) -> Option<f64> {
        self.series(level, subject, metric)
            .and_then(|s| s.summary)
            .map(|s| s.median)
    }
}
