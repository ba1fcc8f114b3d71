//! `regate verify`: runs Gatekeeper test suites (`gator verify`'s format) through regate's
//! decision path.

use std::path::PathBuf;

use clap::Args;

use crate::gatekeeper::suite::{self, Report, Status};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Suite files, or directories searched recursively for `suite.yaml`.
    #[arg(required = true)]
    pub suites: Vec<PathBuf>,
    /// Print failures and the summary only.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let report = suite::run(&args.suites)?;
    print(&report, args.quiet);
    Ok(if report.failed() > 0 { 1 } else { 0 })
}

pub fn print(report: &Report, quiet: bool) {
    for o in &report.outcomes {
        let name = [o.test.as_str(), o.case.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" / ");
        match &o.status {
            Status::Pass if !quiet => println!("ok    {}: {name}", o.suite),
            Status::Skip if !quiet => println!("skip  {}: {name}", o.suite),
            Status::Fail(why) => println!("FAIL  {}: {name}\n      {why}", o.suite),
            _ => {}
        }
    }
    let skipped = report.skipped();
    let skipped = if skipped > 0 {
        format!(", {skipped} skipped")
    } else {
        String::new()
    };
    println!(
        "{} passed, {} failed{skipped}",
        report.passed(),
        report.failed()
    );
}
