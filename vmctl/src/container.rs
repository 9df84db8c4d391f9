//! Container commands.

use crate::cli::RunArgs;

pub fn run(_args: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("vmctl run --isolation container is not built yet")
}
