//! The VM side of the suite: boots on vmctl's VMM and QEMU (with memory and I/O on the last
//! boot), `vmctl run --isolation microvm|hosted`, VM density.

use std::path::Path;
use std::time::Duration;

use super::isolated::{self, Probe};
use super::model::{IoSample, Series};
use super::suite::Suite;
use super::vm::{self, Guest, Vmm};
use super::{density, io, progress};

impl Suite<'_> {
    /// The VM subjects: ours, then the QEMU peers.
    pub(super) fn vmms(&self) -> Vec<(&'static str, String, Vmm)> {
        let mut v = Vec::new();
        let kvm = Path::new("/dev/kvm").exists();
        if kvm {
            let ours = Vmm::ours(&self.vmctl, None);
            v.push(("microvm", ours.name(), ours));
            for mem in &self.args.vmm_mem {
                let vmm = Vmm::ours(&self.vmctl, Some(mem.clone()));
                v.push(("microvm", vmm.name(), vmm));
            }
        }
        if let Some(q) = &self.qemu {
            for accel in ["kvm", "tcg"] {
                if self.want_peer(&format!("qemu-{accel}")) && (accel == "tcg" || kvm) {
                    let vmm = Vmm::Qemu {
                        path: q.clone(),
                        accel,
                    };
                    v.push(("hosted", vmm.name(), vmm));
                }
            }
        }
        v
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

    /// Boots every VMM `--vm-warmup` + `--vm-runs` times, interleaved (boot i of every VMM
    /// before boot i+1 of any), so that a load that changes during the run hits all alike.
    pub(super) fn vm_boots(&mut self) {
        let Some(mut guest) = self.guest.clone() else {
            return;
        };
        let _disk_dir = self.io_disk(&mut guest);
        let io = guest.disk.is_some();
        let (runs, warmup) = (self.args.vm_runs, self.args.vm_warmup);
        let metrics = [
            "boot-to-ready",
            "boot-to-run-init",
            "boot-to-first-output",
            "boot-to-marker",
            "vmm-setup",
            "kernel-to-marker",
            "init-to-ready",
        ];
        let mut subjects: Vec<_> = self
            .vmms()
            .into_iter()
            .filter(|(level, _, _)| self.wants(level))
            .map(|(level, name, vmm)| {
                let series = metrics.map(|m| Series::new(level, &name, m));
                (name, vmm, series, true)
            })
            .collect();
        for i in 0..warmup + runs {
            let warm = i < warmup;
            let last = i + 1 == warmup + runs;
            for (name, vmm, series, alive) in subjects.iter_mut().filter(|s| s.3) {
                let mem = !warm && last && self.wants("memory");
                progress(&format!("{name}: boot {}/{} ...", i + 1, warmup + runs));
                match vm::boot_once(vmm, &guest, mem, io && !warm && last) {
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
                        progress(&format!("{name}: ready after {:.0} ms", ms(b.ready)));
                        self.save_console(name, i, &b.log);
                        if let Some(m) = &b.mem {
                            let sample = vm::mem_sample(name, &guest, m);
                            self.report.memory.push(sample);
                        }
                        self.io_result(name, guest.io_mib, b.io);
                    }
                    Err(e) => {
                        self.skip(name, format!("boot failed: {e:#}"));
                        *alive = false;
                    }
                }
            }
        }
        for (_, _, series, _) in subjects {
            self.add(series.into_iter().collect());
        }
    }

    fn io_result(&mut self, name: &str, mib: u64, io: Option<Result<io::Throughput, String>>) {
        match (io, self.host_io) {
            (Some(Ok(t)), Some(h)) => {
                progress(&format!(
                    "io {name}: read {:.1} MB/s, write {:.1} MB/s",
                    t.read_mb_s, t.write_mb_s
                ));
                self.report.io.push(IoSample {
                    subject: name.into(),
                    mib,
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

    /// The container-in-VM subjects: `--isolation microvm` (with /dev/kvm), `--isolation
    /// hosted` under TCG and, with /dev/kvm, under KVM (the QEMU peers select them).
    pub(super) fn isolated_probes(&mut self) -> Vec<Probe> {
        let kvm = Path::new("/dev/kvm").exists();
        let mut v = Vec::new();
        if kvm {
            v.push(Probe {
                isolation: "microvm",
                accel: None,
            });
        } else {
            self.skip("container-in-microvm", "no /dev/kvm");
        }
        for accel in ["tcg", "kvm"] {
            let what = format!("container-in-hosted ({accel})");
            if !self.want_peer(&format!("qemu-{accel}")) {
                continue;
            }
            if self.qemu.is_none() {
                self.skip(&what, format!("{} not installed", self.args.qemu.display()));
            } else if accel == "kvm" && !kvm {
                self.skip(&what, "no /dev/kvm");
            } else {
                v.push(Probe {
                    isolation: "hosted",
                    accel: Some(accel),
                });
            }
        }
        v
    }

    /// `vmctl run --isolation ISO --rm -- echo MARK`: time to the workload's output and its
    /// phases (see [`isolated`]).
    pub(super) fn isolated_workload(&mut self, probe: &Probe) {
        let subject = probe.subject();
        let timeout = Duration::from_secs(self.args.vm_timeout);
        let mut series: Vec<Series> = isolated::METRICS
            .iter()
            .map(|m| Series::new("container-in-microvm", &subject, m))
            .collect();
        let (runs, warmup) = (self.args.vm_runs, self.args.vm_warmup);
        for i in 0..warmup + runs {
            let warm = i < warmup;
            progress(&format!("{subject}: run {}/{} ...", i + 1, warmup + runs));
            match isolated::run_once(&self.vmctl, &self.args.image_root, probe, timeout) {
                Ok(r) => {
                    let ph = isolated::phases(&r);
                    for (m, v) in &ph {
                        if let Some(s) = series.iter_mut().find(|s| s.metric == *m) {
                            s.push(warm, *v);
                        }
                    }
                    let line: Vec<String> =
                        ph.iter().map(|(m, v)| format!("{m} {:.0}", v)).collect();
                    progress(&format!("{subject}: {} ms", line.join(", ")));
                }
                Err(e) => {
                    self.skip(&subject, format!("{e:#}"));
                    break;
                }
            }
        }
        self.add(series);
    }

    pub(super) fn vm_density(&mut self) {
        let Some(guest) = self.guest.clone() else {
            return;
        };
        for (level, name, vmm) in self.vmms() {
            density::vms(self, level, &name, &vmm, &guest);
        }
    }

    /// Writes a boot's console, each line prefixed with its arrival time, to
    /// `OUT/console/SUBJECT-N.log` (to see where a boot spends its time).
    fn save_console(&mut self, subject: &str, run: usize, log: &[(f64, String)]) {
        let dir = self.args.out.join("console");
        let text: String = log
            .iter()
            .map(|(ms, l)| format!("{:>10.1} {l}\n", ms))
            .collect();
        let path = dir.join(format!("{subject}-{}.log", run + 1));
        let r = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text));
        if let Err(e) = r {
            progress(&format!("console log {} not written: {e}", path.display()));
        }
    }
}
