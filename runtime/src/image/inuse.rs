//! Finds overlay mounts that use layer directories, in every mount namespace on the host,
//! so that removing an image cannot pull layers out from under a running container.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// The first mount (as "pid PID: MOUNTPOINT") whose options name one of `dirs`.
pub(crate) fn mounted_user(dirs: &[&Path]) -> Option<String> {
    if dirs.is_empty() {
        return None;
    }
    let needles: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut seen_ns = HashSet::new();
    let procs = fs::read_dir("/proc").ok()?;
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // One look per mount namespace is enough.
        let Ok(ns) = fs::read_link(p.path().join("ns/mnt")) else {
            continue;
        };
        if !seen_ns.insert(ns) {
            continue;
        }
        let Ok(info) = fs::read_to_string(p.path().join("mountinfo")) else {
            continue;
        };
        for line in info.lines().filter(|l| l.contains(" - overlay ")) {
            // lowerdir=a:b,upperdir=... : match whole path elements only.
            let hit = needles
                .iter()
                .any(|n| line.split([',', ':', '=', ' ']).any(|part| part == n));
            if hit {
                let mountpoint = line.split(' ').nth(4).unwrap_or("?");
                return Some(format!("pid {pid}: overlay on {mountpoint}"));
            }
        }
    }
    None
}
