//! `regate verify`.

use clap::Args;

#[derive(Debug, Args)]
pub struct VerifyArgs {}

pub fn run(_args: VerifyArgs) -> anyhow::Result<i32> {
    anyhow::bail!("regate verify is not implemented yet")
}
