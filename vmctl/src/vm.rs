//! VM commands.

use crate::cli::RunArgs;

pub fn run_kernel(_args: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("vmctl run --kernel is not built yet")
}
