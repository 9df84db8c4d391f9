//! `vmctl ps`, `logs`, `stop` and `rm` over both stores: containers (`container.rs`) and the
//! VM-backed runs (`guest::registry`, microvm and hosted). A name, id or unique id prefix is
//! looked up in both; an ambiguous or unknown one is a clear error.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use guest::registry;

/// One row of `vmctl ps`.
pub(crate) struct Entry {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    /// "container", "microvm" or "hosted".
    pub isolation: &'static str,
    pub state: State,
}

/// How a row's workload stands.
pub(crate) enum State {
    Running,
    /// `at`: when it ended (seconds since the epoch), when known.
    Exited {
        code: Option<i32>,
        at: Option<u64>,
    },
    /// Its supervisor was killed: `vmctl rm` cleans it.
    Dead,
    /// Another runtime state (created, paused).
    Other(String),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A file's modification time, seconds since the epoch.
pub(crate) fn mtime(p: &Path) -> Option<u64> {
    std::fs::metadata(p)
        .ok()?
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// docker's human durations: "Less than a second", "5 seconds", "About a minute", "2 hours".
pub(crate) fn human(secs: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        0 => "Less than a second".into(),
        1..=59 => plural(secs, "second"),
        60..=119 => "About a minute".into(),
        120..=3599 => plural(secs / 60, "minute"),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86_400, "day"),
    }
}

impl Entry {
    fn running(&self) -> bool {
        matches!(self.state, State::Running | State::Other(_))
    }

    /// docker's STATUS column: "Up 5 seconds", "Exited (3) 2 minutes ago".
    fn status(&self) -> String {
        let now = now();
        match &self.state {
            State::Running => format!("Up {}", human(now.saturating_sub(self.created))),
            State::Exited { code, at } => {
                let code = code.map_or("?".to_string(), |c| c.to_string());
                match at {
                    Some(t) => format!("Exited ({code}) {} ago", human(now.saturating_sub(*t))),
                    None => format!("Exited ({code})"),
                }
            }
            State::Dead => "Dead".into(),
            State::Other(s) => s.clone(),
        }
    }

    /// The id as ps shows it (docker's 12 digits).
    fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

fn vm_entries() -> Vec<Entry> {
    registry::list()
        .into_iter()
        .map(|r| {
            let state = match r.state() {
                registry::State::Running => State::Running,
                registry::State::Dead => State::Dead,
                registry::State::Exited(code) => State::Exited {
                    code,
                    at: r.updated(),
                },
            };
            Entry {
                isolation: match r.isolation.as_str() {
                    "microvm" => "microvm",
                    _ => "hosted",
                },
                id: r.id,
                name: r.name,
                image: r.image,
                command: r.command,
                created: r.created,
                state,
            }
        })
        .collect()
}

/// Containers and VMs, newest first.
fn all() -> Vec<Entry> {
    let mut v = crate::container::entries();
    v.extend(vm_entries());
    v.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    v
}

/// Whether a container or VM has the name `name` (names are unique across both).
pub(crate) fn name_in_use(name: &str) -> bool {
    all().iter().any(|e| e.name == name)
}

/// The container or VM whose id, name or unique id prefix is `key`.
pub(crate) fn resolve(key: &str) -> Result<Entry> {
    if key.is_empty() {
        bail!("an empty name matches nothing: give a container or VM id or name (vmctl ps -a)");
    }
    let all = all();
    let exact: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].id == key || all[i].name == key)
        .collect();
    let hits = if exact.is_empty() {
        (0..all.len())
            .filter(|&i| all[i].id.starts_with(key))
            .collect()
    } else {
        exact
    };
    match hits.as_slice() {
        [] => bail!("no such container or VM: {key:?} (see vmctl ps -a)"),
        [i] => Ok(all.into_iter().nth(*i).expect("index from the same list")),
        many => {
            let which: Vec<String> = many
                .iter()
                .map(|&i| {
                    format!(
                        "{} {} ({})",
                        all[i].isolation,
                        all[i].short_id(),
                        all[i].name
                    )
                })
                .collect();
            bail!(
                "{key:?} is ambiguous: it matches {}; give more of the id",
                which.join(", ")
            )
        }
    }
}

pub fn ps(show_all: bool, quiet: bool) -> Result<i32> {
    let mut rows = vec![[
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "STATUS".into(),
        "ISOLATION".into(),
        "NAMES".into(),
    ]];
    for e in all() {
        if !show_all && !e.running() {
            continue;
        }
        if quiet {
            println!("{}", e.short_id());
            continue;
        }
        let mut cmd = format!("\"{}\"", e.command.join(" "));
        if cmd.chars().count() > 26 {
            cmd = format!("{}…\"", cmd.chars().take(24).collect::<String>());
        }
        rows.push([
            e.short_id().to_string(),
            e.image.chars().take(30).collect(),
            cmd,
            e.status(),
            e.isolation.to_string(),
            e.name.clone(),
        ]);
    }
    if quiet {
        return Ok(0);
    }
    // Columns as wide as their widest cell plus three spaces, as docker prints them.
    let mut width = [0usize; 6];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i == 5 {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}", w = width[i] + 3));
            }
        }
        println!("{line}");
    }
    Ok(0)
}

/// Copies `f` to stdout; with `follow`, keeps going until `ended()` and the file is drained.
pub(crate) fn copy_log(
    mut f: std::fs::File,
    follow: bool,
    ended: impl Fn() -> bool,
) -> Result<i32> {
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let done = !follow || ended();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
        out.flush()?;
        if done {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn vm_logs(id: &str, follow: bool) -> Result<i32> {
    let r = registry::find(id)?;
    let path = r.dir().join("output.log");
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        // Nothing written yet (still booting), or a record that never ran.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !follow || !r.alive() {
                return Ok(0);
            }
            while !path.exists() && registry::find(id).is_ok_and(|r| r.alive()) {
                std::thread::sleep(Duration::from_millis(100));
            }
            match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(_) => return Ok(0),
            }
        }
        Err(e) => bail!("read {}: {e}", path.display()),
    };
    let key = r.id.clone();
    copy_log(f, follow, move || {
        registry::find(&key).map_or(true, |r| !r.alive())
    })
}

pub fn logs(key: &str, follow: bool) -> Result<i32> {
    let e = resolve(key)?;
    match e.isolation {
        "container" => crate::container::logs(&e.id, follow),
        _ => vm_logs(&e.id, follow),
    }
}

pub fn stop(keys: &[String], grace: u64) -> Result<i32> {
    for key in keys {
        let e = resolve(key)?;
        match e.isolation {
            "container" => crate::container::stop(&e.id, grace)?,
            _ => registry::stop(&e.id, Duration::from_secs(grace))?,
        }
        println!("{key}");
    }
    Ok(0)
}

pub fn rm(keys: &[String], force: bool) -> Result<i32> {
    for key in keys {
        let e = resolve(key)?;
        match e.isolation {
            "container" => crate::container::rm(&e.id, force)?,
            _ => registry::remove(&e.id, force)?,
        }
        println!("{key}");
    }
    Ok(0)
}
