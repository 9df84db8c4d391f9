//! Parsing of `vmctl run` flag values (--memory, --user).

use anyhow::{Context, Result};

/// `--memory`: a bare number is MiB; suffixes b, k, m, g.
pub fn parse_memory(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'b')) => (&t[..i], 1),
        Some((i, 'k')) => (&t[..i], 1 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t.as_str(), 1 << 20),
    };
    let n: f64 = num.parse().ok().filter(|n: &f64| *n > 0.0).with_context(|| {
        format!("--memory {s:?}: expected a positive size like 512, 512m or 1g (a bare number is MiB)")
    })?;
    Ok((n * mult as f64) as i64)
}

pub fn parse_user(u: &str) -> Result<(u32, u32)> {
    let (a, b) = u.split_once(':').unwrap_or((u, ""));
    let num = |x: &str| if x == "root" { Some(0) } else { x.parse().ok() };
    let uid = num(a).with_context(|| format!("--user {u:?}: use a numeric uid[:gid]"))?;
    let gid = if b.is_empty() {
        uid
    } else {
        num(b).with_context(|| format!("--user {u:?}: use a numeric gid"))?
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512").unwrap(), 512 << 20);
        assert_eq!(parse_memory("64k").unwrap(), 64 << 10);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5m").unwrap(), 3 << 19);
        assert!(parse_memory("lots")
            .unwrap_err()
            .to_string()
            .contains("lots"));
        assert!(parse_memory("0").is_err());
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("1000").unwrap(), (1000, 1000));
        assert_eq!(parse_user("1000:50").unwrap(), (1000, 50));
        assert_eq!(parse_user("root").unwrap(), (0, 0));
        assert!(parse_user("bob").is_err());
    }
}
