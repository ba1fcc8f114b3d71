//! `regate test`: Rego unit tests and YAML cases.

use clap::Args;

#[derive(Debug, Args)]
pub struct TestArgs {}

pub fn run(_args: TestArgs) -> anyhow::Result<i32> {
    anyhow::bail!("regate test is not implemented yet")
}
