//! The VM side of the suite: boots on vmctl's VMM and QEMU (with memory and I/O on the last
//! boot), `vmctl run --isolation microvm|hosted`, VM density.

use std::path::Path;
use std::time::Duration;

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

    pub(super) fn vm_boots(&mut self) {
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
                        self.save_console(&name, i, &b.log);
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
    pub(super) fn isolated_workload(&mut self, iso: &str) {
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
