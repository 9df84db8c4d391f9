//! `--user` for the OCI spec: "uid[:gid]" numbers, or names looked up in the image's
//! /etc/passwd and /etc/group (the topmost layer that has the file wins).

use std::path::PathBuf;

use anyhow::{bail, Context};

fn image_file(layers: &[PathBuf], rel: &str) -> Option<String> {
    layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join(rel)).ok())
}

fn passwd_by(layers: &[PathBuf], field: usize, value: &str) -> Option<Vec<String>> {
    image_file(layers, "etc/passwd")?
        .lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[field] == value)
}

fn group_gid(layers: &[PathBuf], name: &str) -> Option<u32> {
    image_file(layers, "etc/group")?
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)?
        .get(2)?
        .parse()
        .ok()
}

/// (uid, gid) for `user` in the image made of `layers` (bottom first).
pub fn resolve(user: &str, layers: &[PathBuf]) -> anyhow::Result<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd_by(layers, 2, u)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(uid),
        ),
        Err(_) => {
            let f = passwd_by(layers, 0, u).with_context(|| {
                format!("--user {user:?}: no user {u:?} in the image's /etc/passwd")
            })?;
            (
                f[2].parse().context("uid in /etc/passwd")?,
                f[3].parse().context("gid in /etc/passwd")?,
            )
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match group_gid(layers, g) {
                Some(n) => n,
                None => bail!("--user {user:?}: no group {g:?} in the image's /etc/group"),
            },
        };
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_the_top_layer() {
        let t = tempfile::tempdir().unwrap();
        let (l0, l1) = (t.path().join("0"), t.path().join("1"));
        for (l, passwd) in [
            (&l0, "app:x:5:5::/:/bin/sh\n"),
            (&l1, "app:x:7:8::/:/bin/sh\n"),
        ] {
            std::fs::create_dir_all(l.join("etc")).unwrap();
            std::fs::write(l.join("etc/passwd"), passwd).unwrap();
        }
        std::fs::write(l0.join("etc/group"), "staff:x:50:\n").unwrap();
        let layers = vec![l0, l1];
        assert_eq!(resolve("app", &layers).unwrap(), (7, 8));
        assert_eq!(resolve("app:staff", &layers).unwrap(), (7, 50));
        assert_eq!(resolve("1000", &layers).unwrap(), (1000, 1000));
        assert_eq!(resolve("7", &layers).unwrap(), (7, 8));
        assert_eq!(resolve("1000:3", &layers).unwrap(), (1000, 3));
        assert!(resolve("ghost", &layers)
            .unwrap_err()
            .to_string()
            .contains("ghost"));
    }
}
