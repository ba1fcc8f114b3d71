//! `regate audit`.

use clap::Args;

#[derive(Debug, Args)]
pub struct AuditArgs {}

pub fn run(_args: AuditArgs) -> anyhow::Result<i32> {
    anyhow::bail!("regate audit is not implemented yet")
}
