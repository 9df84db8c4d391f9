//! The host the bench ran on: CPU, kernel, what kind of KVM, tool versions.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The environment recorded in the JSON file.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Environment {
    /// UTC time the run started, RFC 3339.
    pub started_at: String,
    pub hostname: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub mem_total_mib: u64,
    pub host_kernel: String,
    /// "hardware VMX", "hardware SVM", "nested PVM (kvm_pvm)", "none (no /dev/kvm)", ...
    pub kvm: String,
    /// 1-minute load average when the run started (results on a loaded host are noisier).
    pub load_avg_1m: f64,
    /// Tool name -> first line of its version output, or "absent".
    pub versions: Vec<(String, String)>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn cpuinfo_field(cpuinfo: &str, field: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == field))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// How /dev/kvm is provided on this host.
pub fn kvm_kind() -> String {
    if !Path::new("/dev/kvm").exists() {
        return "none (no /dev/kvm)".into();
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return "nested PVM (kvm_pvm): guest kernel code is emulated, VM boot times are \
                dominated by emulation"
            .into();
    }
    let flags = cpuinfo_field(&read("/proc/cpuinfo"), "flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    match (has("vmx"), has("svm"), has("hypervisor")) {
        (true, _, false) => "hardware VMX".into(),
        (_, true, false) => "hardware SVM".into(),
        (true, _, true) => "nested VMX (in a VM)".into(),
        (_, true, true) => "nested SVM (in a VM)".into(),
        _ => "unknown (no vmx/svm flag, no kvm_pvm)".into(),
    }
}

/// First line of `prog ARGS` output (stdout, else stderr), or None when it cannot run.
pub fn tool_version(prog: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Collects the environment; `tools` are (name, path, version args) of the peers.
pub fn collect(tools: &[(&str, &Path, &[&str])]) -> Environment {
    let cpuinfo = read("/proc/cpuinfo");
    let mem_total_kib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let load = read("/proc/loadavg")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let mut versions = vec![(
        "vmctl".to_string(),
        format!("vmctl {}", env!("CARGO_PKG_VERSION")),
    )];
    for (name, path, args) in tools {
        let v = tool_version(path, args).unwrap_or_else(|| "absent".into());
        versions.push((name.to_string(), v));
    }
    Environment {
        started_at: utc_now(),
        hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        cpu_model: cpuinfo_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        mem_total_mib: mem_total_kib / 1024,
        host_kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        kvm: kvm_kind(),
        load_avg_1m: load,
        versions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host() {
        let e = collect(&[("sh", Path::new("/bin/sh"), &["-c", "echo sh-ok"])]);
        assert!(!e.host_kernel.is_empty());
        assert!(e.cpus >= 1);
        assert!(e.mem_total_mib > 0);
        assert_eq!(e.versions[1].1, "sh-ok");
        assert!(
            e.started_at.ends_with('Z') && e.started_at.len() == 20,
            "{}",
            e.started_at
        );
    }
}
