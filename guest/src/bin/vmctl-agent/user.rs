//! `--user` inside the container: "uid[:gid]" numbers, or names from the image's
//! /etc/passwd and /etc/group (read after pivot_root).

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid};

fn passwd_by(field: usize, value: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[field] == value)
}

fn group_gid(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)?
        .get(2)?
        .parse()
        .ok()
}

/// (uid, gid, home) for `user`; root when `None`.
pub fn resolve(user: Option<&str>) -> anyhow::Result<(Uid, Gid, String)> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((Uid::from_raw(0), Gid::from_raw(0), "/root".into()));
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid, home) = match u.parse::<u32>() {
        Ok(uid) => match passwd_by(2, u) {
            Some(f) => (uid, f[3].parse().unwrap_or(uid), f[5].clone()),
            None => (uid, uid, "/".to_string()),
        },
        Err(_) => {
            let f = passwd_by(0, u).with_context(|| {
                format!("unable to find user {u}: no matching entries in passwd file")
            })?;
            (
                f[2].parse().context("uid in /etc/passwd")?,
                f[3].parse().context("gid in /etc/passwd")?,
                f[5].clone(),
            )
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match group_gid(g) {
                Some(n) => n,
                None => bail!("unable to find group {g}: no matching entries in group file"),
            },
        };
    }
    Ok((Uid::from_raw(uid), Gid::from_raw(gid), home))
}
