//! Command-line device specs: `--disk PATH[,ro][,id=ID][,bw=B][,iops=N]`,
//! `--net tap=NAME[,mac=MAC][,bw=B]`, `--vsock cid=N,uds=PATH`, and cross-device checks.

use std::collections::HashSet;
use std::path::PathBuf;

use super::block::{BlockConfig, ID_LEN};
use super::net::{parse_mac, NetConfig};
use super::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
use super::vsock::VsockConfig;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{flag} {spec:?}: {why}; expected {usage}")]
    Bad {
        flag: &'static str,
        spec: String,
        why: String,
        usage: &'static str,
    },
    #[error("two disks have the id {0:?}; give each --disk a distinct id=NAME")]
    DuplicateDiskId(String),
    #[error("disk image {0:?} is attached twice; attach it once (or use a copy)")]
    DuplicateDiskPath(PathBuf),
    #[error("TAP {0:?} is used by two --net devices; give each its own TAP")]
    DuplicateTap(String),
    #[error("only one --vsock device is supported; remove the extra ones")]
    MultipleVsock,
    #[error(
        "disk {0:?} is marked root but is not the first --disk; the root disk must come first \
         (it is /dev/vda in the guest)"
    )]
    RootNotFirst(PathBuf),
}

const DISK_USAGE: &str = "PATH[,ro][,root][,id=ID][,bw=BYTES_PER_SEC][,iops=OPS_PER_SEC]";
const NET_USAGE: &str = "tap=NAME[,mac=aa:bb:cc:dd:ee:ff][,bw=BYTES_PER_SEC]";
const VSOCK_USAGE: &str = "cid=N,uds=PATH (N >= 3)";

fn bad(flag: &'static str, spec: &str, why: impl Into<String>, usage: &'static str) -> SpecError {
    SpecError::Bad {
        flag,
        spec: spec.into(),
        why: why.into(),
        usage,
    }
}

/// A per-second limit as a token bucket refilled every second.
fn per_second(n: u64) -> TokenBucketConfig {
    TokenBucketConfig {
        size: n,
        one_time_burst: 0,
        refill_time_ms: 1000,
    }
}

fn number(
    flag: &'static str,
    spec: &str,
    key: &str,
    v: &str,
    usage: &'static str,
) -> Result<u64, SpecError> {
    v.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
        bad(
            flag,
            spec,
            format!("{key}={v:?} is not a positive integer"),
            usage,
        )
    })
}

/// Parses `PATH[,ro][,id=ID][,bw=B][,iops=N]`; the id is left empty unless given (see
/// [`check_devices`]).
pub fn parse_disk(spec: &str) -> Result<BlockConfig, SpecError> {
    let f = "--disk";
    let mut parts = spec.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad(f, spec, "no image path", DISK_USAGE))?;
    let mut cfg = BlockConfig {
        path: PathBuf::from(path),
        read_only: false,
        id: String::new(),
        rate_limiter: None,
        root: false,
    };
    let mut rl = RateLimiterConfig::default();
    for p in parts {
        match p.split_once('=') {
            None if p == "ro" => cfg.read_only = true,
            None if p == "rw" => cfg.read_only = false,
            None if p == "root" => cfg.root = true,
            Some(("id", v)) if !v.is_empty() && v.len() <= ID_LEN => cfg.id = v.into(),
            Some(("id", v)) => {
                return Err(bad(
                    f,
                    spec,
                    format!("id {v:?} must be 1 to 20 bytes"),
                    DISK_USAGE,
                ))
            }
            Some(("bw", v)) => {
                rl.bandwidth = Some(per_second(number(f, spec, "bw", v, DISK_USAGE)?))
            }
            Some(("iops", v)) => rl.ops = Some(per_second(number(f, spec, "iops", v, DISK_USAGE)?)),
            _ => return Err(bad(f, spec, format!("unknown option {p:?}"), DISK_USAGE)),
        }
    }
    if rl != RateLimiterConfig::default() {
        cfg.rate_limiter = Some(rl);
    }
    Ok(cfg)
}

/// Parses `tap=NAME[,mac=MAC][,bw=B]` (bw limits each direction).
pub fn parse_net(spec: &str) -> Result<NetConfig, SpecError> {
    let f = "--net";
    let mut cfg = NetConfig::default();
    for p in spec.split(',') {
        match p.split_once('=') {
            Some(("tap", v)) => cfg.tap_name = v.into(),
            Some(("mac", v)) => {
                cfg.mac = Some(parse_mac(v).map_err(|e| bad(f, spec, e.to_string(), NET_USAGE))?)
            }
            Some(("bw", v)) => {
                let rl = RateLimiterConfig {
                    bandwidth: Some(per_second(number(f, spec, "bw", v, NET_USAGE)?)),
                    ops: None,
                };
                cfg.rx_rate_limiter = Some(rl);
                cfg.tx_rate_limiter = Some(rl);
            }
            _ => return Err(bad(f, spec, format!("unknown option {p:?}"), NET_USAGE)),
        }
    }
    if cfg.tap_name.is_empty() {
        return Err(bad(f, spec, "no tap=NAME", NET_USAGE));
    }
    Ok(cfg)
}

/// Parses `cid=N,uds=PATH`.
pub fn parse_vsock(spec: &str) -> Result<VsockConfig, SpecError> {
    let f = "--vsock";
    let (mut cid, mut uds) = (None, None);
    for p in spec.split(',') {
        match p.split_once('=') {
            Some(("cid", v)) => {
                cid =
                    Some(v.parse::<u64>().map_err(|_| {
                        bad(f, spec, format!("cid {v:?} is not a number"), VSOCK_USAGE)
                    })?)
            }
            Some(("uds", v)) if !v.is_empty() => uds = Some(PathBuf::from(v)),
            _ => return Err(bad(f, spec, format!("unknown option {p:?}"), VSOCK_USAGE)),
        }
    }
    let (Some(guest_cid), Some(uds_path)) = (cid, uds) else {
        return Err(bad(f, spec, "cid and uds are both required", VSOCK_USAGE));
    };
    let cfg = VsockConfig {
        guest_cid,
        uds_path,
    };
    if guest_cid < 3 || guest_cid >= u64::from(u32::MAX) {
        return Err(bad(
            f,
            spec,
            format!("cid {guest_cid} is reserved or too large"),
            VSOCK_USAGE,
        ));
    }
    Ok(cfg)
}

/// Gives unnamed disks ids (`disk0`, `disk1`, ... by position) and rejects duplicate disk ids,
/// images, TAPs and more than one vsock.
pub fn check_devices(
    disks: &mut [BlockConfig],
    nets: &[NetConfig],
    vsocks: &[VsockConfig],
) -> Result<(), SpecError> {
    for (i, d) in disks.iter_mut().enumerate() {
        if d.id.is_empty() {
            d.id = format!("disk{i}");
        }
    }
    if let Some(d) = disks.iter().skip(1).find(|d| d.root) {
        return Err(SpecError::RootNotFirst(d.path.clone()));
    }
    let mut ids = HashSet::new();
    let mut paths = HashSet::new();
    for d in disks.iter() {
        if !ids.insert(d.id.clone()) {
            return Err(SpecError::DuplicateDiskId(d.id.clone()));
        }
        let canon = std::fs::canonicalize(&d.path).unwrap_or_else(|_| d.path.clone());
        if !paths.insert(canon) {
            return Err(SpecError::DuplicateDiskPath(d.path.clone()));
        }
    }
    let mut taps = HashSet::new();
    for n in nets {
        if !taps.insert(n.tap_name.clone()) {
            return Err(SpecError::DuplicateTap(n.tap_name.clone()));
        }
    }
    if vsocks.len() > 1 {
        return Err(SpecError::MultipleVsock);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs() {
        let d = parse_disk("/img/root.ext4,ro,id=root,iops=100").unwrap();
        assert_eq!(d.path, PathBuf::from("/img/root.ext4"));
        assert!(d.read_only);
        assert_eq!(d.id, "root");
        assert_eq!(d.rate_limiter.unwrap().ops.unwrap().size, 100);
        let e = parse_disk("/a,rox").unwrap_err().to_string();
        assert!(e.contains("\"rox\"") && e.contains("PATH[,ro]"), "{e}");
        assert!(parse_disk("").is_err());
        assert!(parse_disk("/a,bw=0")
            .unwrap_err()
            .to_string()
            .contains("bw=\"0\""));
    }

    #[test]
    fn net_and_vsock_specs() {
        let n = parse_net("tap=tap0,mac=06:00:00:00:00:01").unwrap();
        assert_eq!(n.tap_name, "tap0");
        assert_eq!(n.mac, Some([6, 0, 0, 0, 0, 1]));
        assert!(parse_net("mac=06:00:00:00:00:01")
            .unwrap_err()
            .to_string()
            .contains("tap=NAME"));
        let v = parse_vsock("cid=3,uds=/run/v.sock").unwrap();
        assert_eq!(v.guest_cid, 3);
        let e = parse_vsock("cid=2,uds=/run/v.sock")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cid 2") && e.contains("N >= 3"), "{e}");
        assert!(parse_vsock("cid=9").is_err());
    }

    #[test]
    fn duplicates_are_rejected() {
        let mut disks = vec![parse_disk("/a").unwrap(), parse_disk("/b").unwrap()];
        check_devices(&mut disks, &[], &[]).unwrap();
        assert_eq!(
            (disks[0].id.as_str(), disks[1].id.as_str()),
            ("disk0", "disk1")
        );
        let mut disks = vec![
            parse_disk("/a,id=x").unwrap(),
            parse_disk("/b,id=x").unwrap(),
        ];
        assert_eq!(
            check_devices(&mut disks, &[], &[]),
            Err(SpecError::DuplicateDiskId("x".into()))
        );
        let mut disks = vec![parse_disk("/a").unwrap(), parse_disk("/a,ro").unwrap()];
        assert!(matches!(
            check_devices(&mut disks, &[], &[]),
            Err(SpecError::DuplicateDiskPath(_))
        ));
        let nets = vec![parse_net("tap=t").unwrap(), parse_net("tap=t").unwrap()];
        assert!(check_devices(&mut [], &nets, &[])
            .unwrap_err()
            .to_string()
            .contains("\"t\""));
        let v = parse_vsock("cid=3,uds=/x").unwrap();
        assert_eq!(
            check_devices(&mut [], &[], &[v.clone(), v]),
            Err(SpecError::MultipleVsock)
        );
    }
}
