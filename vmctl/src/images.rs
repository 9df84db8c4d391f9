//! `vmctl images`, `vmctl image import`, `vmctl image rm`, and image resolution for `run`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use runtime::image::{Image, ImageStore};

use crate::cli::{ImageCommand, StoreArgs};

fn open(store: &StoreArgs) -> anyhow::Result<ImageStore> {
    ImageStore::open(&store.root)
        .with_context(|| format!("open the image store {}", store.root.display()))
}

/// The image to run: `image` by name or id, or the embedded default image when `None`.
#[allow(dead_code)] // called by `vmctl run`
pub fn resolve(store: &StoreArgs, image: Option<&str>) -> anyhow::Result<Image> {
    let s = open(store)?;
    Ok(match image {
        Some(name) => s.get(name)?,
        None => s.ensure_default()?,
    })
}

fn age(created: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(created);
    let s = now.saturating_sub(created);
    match s {
        0..120 => format!("{s} seconds ago"),
        120..7200 => format!("{} minutes ago", s / 60),
        7200..172_800 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// `vmctl images`.
pub fn list(store: &StoreArgs) -> anyhow::Result<i32> {
    let s = open(store)?;
    println!(
        "{:<40} {:<12}  {:>6}  CREATED",
        "NAME", "IMAGE ID", "LAYERS"
    );
    for info in s.list()? {
        let names = if info.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            info.names.clone()
        };
        for n in names {
            println!(
                "{:<40} {:<12}  {:>6}  {}",
                n,
                info.short_id(),
                info.layers.len(),
                age(info.created)
            );
        }
    }
    Ok(0)
}

/// `vmctl image ...`.
pub fn image(cmd: ImageCommand) -> anyhow::Result<i32> {
    match cmd {
        ImageCommand::Import { path, name, store } => {
            let s = open(&store)?;
            let info = s
                .import(&path, name.as_deref())
                .with_context(|| format!("import {}", path.display()))?;
            println!("{}", info.id);
            Ok(0)
        }
        ImageCommand::Rm { images, store } => {
            let s = open(&store)?;
            let mut code = 0;
            for i in images {
                match s.remove(&i) {
                    Ok(()) => println!("removed {i}"),
                    Err(e) => {
                        eprintln!("vmctl: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
    }
}
