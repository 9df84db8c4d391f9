//! I/O: sequential read and write of a raw disk through virtio-blk inside the guest (busybox
//! `dd` driven over the guest's console shell), against the same on the host, as a ratio.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ChildStdin;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::proc::{LineEvent, Stream};

const BLOCK: usize = 1 << 20;
const START: &str = "VMCTL-BENCH-DD-START";
const DONE: &str = "VMCTL-BENCH-DD-DONE";

/// Sequential throughput, MB/s (10^6 bytes per second, as dd prints).
#[derive(Clone, Copy, Debug, Default)]
pub struct Throughput {
    pub read_mb_s: f64,
    pub write_mb_s: f64,
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// Creates the disk image (`mib` MiB) and measures the host's own sequential write (with
/// fsync, as the guest's `conv=fsync`) and read (page cache, as the guest's reads through the
/// VMM) of it, 1 MiB at a time.
pub fn host_baseline(path: &Path, mib: u64) -> anyhow::Result<Throughput> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let buf: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
    let t0 = Instant::now();
    for i in 0..mib {
        f.write_all_at(&buf, i * BLOCK as u64)?;
    }
    f.sync_all()?;
    let write = t0.elapsed();
    f.seek(SeekFrom::Start(0))?;
    let mut rbuf = vec![0u8; BLOCK];
    let t0 = Instant::now();
    let mut total = 0u64;
    loop {
        let n = f.read(&mut rbuf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let read = t0.elapsed();
    Ok(Throughput {
        read_mb_s: mb_s(total, read),
        write_mb_s: mb_s(mib * BLOCK as u64, write),
    })
}

/// Runs one dd of `bytes` in the guest shell, timed on the host between the guest's `start`
/// and `done` lines (both cross the same console, so its latency cancels out; Debian's
/// busybox dd prints no throughput line).
fn guest_dd(
    stdin: &mut ChildStdin,
    rx: &Receiver<LineEvent>,
    cmd: &str,
    bytes: u64,
    deadline: Instant,
) -> anyhow::Result<f64> {
    writeln!(stdin, "echo {START}; {cmd} 2>&1; echo {DONE} $?")?;
    stdin.flush()?;
    let mut started = None;
    let mut last = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, Stream::Stdout, Some(line))) => {
                let l = line.trim();
                if l == START {
                    started = Some(at);
                } else if let (Some(t0), Some(status)) = (started, l.strip_prefix(DONE)) {
                    if status.trim() != "0" {
                        bail!("`{cmd}` failed in the guest: {last}");
                    }
                    return Ok(mb_s(bytes, at.duration_since(t0)));
                }
                last = line;
            }
            Ok((_, _, Some(_))) => {}
            Ok((_, _, None)) => bail!("the VM ended during `{cmd}`"),
            Err(_) => bail!("`{cmd}` did not finish in time (last output: {last:?})"),
        }
    }
}

/// Sequential read then write of `mib` MiB of /dev/vda in the guest.
pub fn in_guest(
    stdin: &mut ChildStdin,
    rx: &Receiver<LineEvent>,
    mib: u64,
    deadline: Instant,
) -> anyhow::Result<Throughput> {
    let read = guest_dd(
        stdin,
        rx,
        &format!("dd if=/dev/vda of=/dev/null bs=1M count={mib}"),
        mib * BLOCK as u64,
        deadline,
    )?;
    let write = guest_dd(
        stdin,
        rx,
        &format!("dd if=/dev/zero of=/dev/vda bs=1M count={mib} conv=fsync"),
        mib * BLOCK as u64,
        deadline,
    )?;
    Ok(Throughput {
        read_mb_s: read,
        write_mb_s: write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_baseline_measures_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.raw");
        let t = host_baseline(&p, 4).unwrap();
        assert!(t.read_mb_s > 0.0 && t.write_mb_s > 0.0);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4 << 20);
    }
}
