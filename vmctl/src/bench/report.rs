//! The terminal report: latency table, memory, density, ratios against peers, targets
//! (MET / NOT MET) and the comparison with an earlier run.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use super::model::{Report, Target, SCHEMA};

/// Reads an earlier bench.json.
pub fn load(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--compare {}: cannot read it", path.display()))?;
    let r: Report = serde_json::from_str(&text).with_context(|| {
        format!(
            "--compare {}: not a vmctl bench JSON file (schema {SCHEMA})",
            path.display()
        )
    })?;
    Ok(r)
}

fn ratio_target(
    r: &Report,
    name: &str,
    ours: (&str, &str, &str),
    peer: (&str, &str, &str),
    limit: f64,
) -> Target {
    let a = r.median(ours.0, ours.1, ours.2);
    let b = r.median(peer.0, peer.1, peer.2);
    let value = a.zip(b).map(|(a, b)| a / b);
    let detail = match (a, b) {
        (Some(a), Some(b)) => format!("{} {a:.1} ms / {} {b:.1} ms (medians)", ours.1, peer.1),
        (None, _) => format!("no {} {} measurement in this run", ours.1, ours.2),
        (_, None) => format!("no {} {} measurement in this run", peer.1, peer.2),
    };
    Target {
        name: name.into(),
        value,
        limit,
        met: value.map(|v| v <= limit),
        detail,
    }
}

/// Our VMM's subject in `r`: the standalone `vmctl-vmm`, or `vmctl run --kernel` where the
/// run had no vmctl-vmm next to vmctl.
fn our_vmm(r: &Report) -> &'static str {
    use super::vm::{OURS_IN_VMCTL, OURS_STANDALONE};
    let has = |s: &str| {
        r.series("microvm", s, "boot-to-ready").is_some() || r.memory.iter().any(|m| m.subject == s)
    };
    if !has(OURS_STANDALONE) && has(OURS_IN_VMCTL) {
        OURS_IN_VMCTL
    } else {
        OURS_STANDALONE
    }
}

/// The project's targets, evaluated on `r`.
pub fn targets(r: &Report) -> Vec<Target> {
    let vmm = our_vmm(r);
    let boot = ("microvm", vmm, "boot-to-ready");
    let start = ("container", "vmctl-runtime", "start");
    let mut t = vec![
        ratio_target(
            r,
            "VMM boot <= 0.8x QEMU microvm (KVM), same kernel",
            boot,
            ("hosted", "qemu-kvm", "boot-to-ready"),
            0.8,
        ),
        ratio_target(
            r,
            "container start <= 1.0x crun",
            start,
            ("container", "crun", "start"),
            1.0,
        ),
        ratio_target(
            r,
            "container start <= 0.5x runc",
            start,
            ("container", "runc", "start"),
            0.5,
        ),
    ];
    let ours = r.memory.iter().find(|m| m.subject == vmm);
    t.insert(
        1,
        Target {
            name: "VMM overhead <= 4 MiB RSS".into(),
            value: ours.map(|m| m.overhead_rss_kib as f64 / 1024.0),
            limit: 4.0,
            met: ours.map(|m| m.overhead_rss_kib as f64 / 1024.0 <= 4.0),
            detail: match ours {
                Some(m) => format!(
                    "{vmm}: RSS {:.1} MiB - guest RAM resident {:.1} MiB",
                    m.rss_kib as f64 / 1024.0,
                    m.guest_rss_kib.unwrap_or(0) as f64 / 1024.0
                ),
                None => format!("no {vmm} memory sample in this run"),
            },
        },
    );
    t
}

/// A ratio with three significant digits, however small.
fn ratio(v: f64) -> String {
    if v.is_finite() && v != 0.0 && v.abs() < 0.01 {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The whole terminal report.
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    let e = &r.env;
    let _ = writeln!(
        o,
        "\nvmctl bench, {} on {} ({} CPUs, {} MiB), host kernel {}",
        e.started_at, e.cpu_model, e.cpus, e.mem_total_mib, e.host_kernel
    );
    let _ = writeln!(
        o,
        "KVM: {}; load average at start {:.1}; {:.0} s",
        e.kvm, e.load_avg_1m, r.duration_s
    );
    if let Some(v) = &r.settings.cgroup_view {
        let _ = writeln!(o, "Containers: {v}");
    }
    let _ = writeln!(o, "\nLatency (ms)");
    let _ = writeln!(o, "| level | subject | metric | n | median | p10 | p90 |");
    let _ = writeln!(o, "| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for s in &r.series {
        if let Some(m) = s.summary {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                s.level, s.subject, s.metric, m.n, m.median, m.p10, m.p90
            );
        }
    }
    if !r.memory.is_empty() {
        let _ = writeln!(o, "\nMemory (MiB)");
        let _ = writeln!(
            o,
            "| subject | what | RSS | PSS | guest touched | overhead RSS | overhead PSS |"
        );
        let _ = writeln!(o, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        for m in &r.memory {
            let g = m.guest_rss_kib.map(mib).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {g} | {} | {} |",
                m.subject,
                m.what,
                mib(m.rss_kib),
                mib(m.pss_kib),
                mib(m.overhead_rss_kib),
                mib(m.overhead_pss_kib)
            );
        }
    }
    if !r.density.is_empty() {
        let _ = writeln!(o, "\nDensity (idle instances started one after another)");
        let _ = writeln!(
            o,
            "| level | subject | budget s | started | 1st up ms | last up ms | stopped early |"
        );
        let _ = writeln!(o, "| --- | --- | ---: | ---: | ---: | ---: | --- |");
        for d in &r.density {
            let f = |v: Option<&f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} | {} | {} | {} | {} |",
                d.level,
                d.subject,
                d.budget_s,
                d.started,
                f(d.up_at_ms.first()),
                f(d.up_at_ms.last()),
                d.stopped.as_deref().unwrap_or("-")
            );
        }
    }
    if !r.io.is_empty() {
        let _ = writeln!(
            o,
            "\nSequential I/O through virtio-blk (MB/s; guest / host)"
        );
        let _ = writeln!(
            o,
            "| subject | MiB | read | host read | ratio | write | host write | ratio |"
        );
        let _ = writeln!(
            o,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for i in &r.io {
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} | {:.0} | {} | {:.1} | {:.0} | {} |",
                i.subject,
                i.mib,
                i.read_mb_s,
                i.host_read_mb_s,
                ratio(i.read_mb_s / i.host_read_mb_s),
                i.write_mb_s,
                i.host_write_mb_s,
                ratio(i.write_mb_s / i.host_write_mb_s)
            );
        }
    }
    let ratios = ratios(r);
    if !ratios.is_empty() {
        let _ = write!(
            o,
            "\nRatios in this run (ours / peer, medians; < 1 is faster)\n{ratios}"
        );
    }
    let _ = writeln!(o, "\nTargets");
    for t in &r.targets {
        let verdict = match t.met {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "N/A",
        };
        let v = t
            .value
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "  {verdict:<8} {} : {v} (limit {}) - {}",
            t.name, t.limit, t.detail
        );
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(o, "\nSkipped");
        for s in &r.skipped {
            let _ = writeln!(o, "  {}: skipped: {}", s.what, s.reason);
        }
    }
    o
}

fn ratios(r: &Report) -> String {
    let mut o = String::new();
    let vmm = our_vmm(r);
    let pairs = [
        (
            ("container", "vmctl-runtime", "start"),
            &["crun", "runc"][..],
            "container",
        ),
        (
            ("microvm", vmm, "boot-to-ready"),
            &["qemu-kvm", "qemu-tcg"][..],
            "hosted",
        ),
        (
            ("microvm", vmm, "boot-to-run-init"),
            &["qemu-kvm", "qemu-tcg"][..],
            "hosted",
        ),
    ];
    for ((l, s, m), peers, peer_level) in pairs {
        let Some(a) = r.median(l, s, m) else { continue };
        for p in peers {
            if let Some(b) = r.median(peer_level, p, m) {
                let _ = writeln!(o, "  {s} / {p} {m}: {:.2}x ({a:.1} / {b:.1} ms)", a / b);
            }
        }
    }
    o
}

/// The change of every median against an earlier run.
pub fn compare(old: &Report, new: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nCompared with the run of {} (medians, ms)",
        old.env.started_at
    );
    let _ = writeln!(o, "| series | before | now | change |");
    let _ = writeln!(o, "| --- | ---: | ---: | ---: |");
    for s in &new.series {
        let (Some(now), Some(before)) = (
            s.summary.map(|m| m.median),
            old.series
                .iter()
                .find(|o| o.key() == s.key())
                .and_then(|o| o.summary)
                .map(|m| m.median),
        ) else {
            continue;
        };
        let _ = writeln!(
            o,
            "| {} | {before:.1} | {now:.1} | {:+.1}% |",
            s.key(),
            (now / before - 1.0) * 100.0
        );
    }
    for s in &old.series {
        if !new.series.iter().any(|n| n.key() == s.key()) {
            let _ = writeln!(o, "| {} | (not measured now) | | |", s.key());
        }
    }
    o
}
