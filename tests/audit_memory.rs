//! Memory stays flat however large the cluster: `regate audit --cluster` (a separate process) over
//! generated clusters of 10,000 and 100,000 objects, served page by page by the test API server
//! (which generates objects on demand and stores none). Records peak RSS and objects judged per
//! second. Ignored by default; run with
//!
//! ```text
//! cargo test --release --test audit_memory -- --ignored --nocapture audit_memory
//! ```
//!
//! Also: the background audit's reports of a generated cluster stay within their limits
//! (`background_reports_of_a_large_cluster_stay_small`; `REGATE_AUDIT_REPORTS_OBJECTS` objects,
//! 2,000 unless set, so a plain `cargo test` stays quick; `.ci/run` sets 100,000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use audit_support::*;

struct Measure {
    objects: usize,
    peak_rss_kib: u64,
    wall_seconds: f64,
    objects_per_second: f64,
    findings: String,
}

fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(str::trim)
}

fn measure(total: usize, policies: &Path, dir: &Path) -> Measure {
    let server = FakeApiServer::start_generated(Generated::with_total(total));
    let kubeconfig = server.kubeconfig(dir);
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-v").arg(regate_bin());
        c
    } else {
        Command::new(regate_bin())
    };
    let out = cmd
        .args(["audit", "--cluster", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--policies")
        .arg(policies)
        .args([
            "-o",
            "json",
            "--output-file",
            "/dev/null",
            "--fail-on",
            "never",
        ])
        .env_remove("KUBECONFIG")
        .env("REGATE_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // regate's own closing line: "N objects judged in Xs (Y objects/s): ...; peak memory Z MiB".
    let line = stderr
        .lines()
        .find(|l| l.starts_with("regate audit:") && l.contains("objects judged"))
        .unwrap_or_else(|| panic!("no closing line: {stderr}"));
    let judged: usize = line["regate audit: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(judged >= total, "every generated object is judged: {line}");
    let rate: f64 = line
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let findings = line
        .split("): ")
        .nth(1)
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    let peak_rss_kib = match field(&stderr, "Maximum resident set size (kbytes):") {
        Some(v) => v.parse().unwrap(),
        None => {
            let mib: f64 = line
                .split("peak memory ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap()
                .parse()
                .unwrap();
            (mib * 1024.0) as u64
        }
    };
    let wall_seconds = field(&stderr, "Elapsed (wall clock) time (h:mm:ss or m:ss):")
        .map(|t| {
            t.split(':')
                .map(|p| p.parse::<f64>().unwrap())
                .fold(0.0, |acc, p| acc * 60.0 + p)
        })
        .unwrap_or(0.0);
    Measure {
        objects: total,
        peak_rss_kib,
        wall_seconds,
        objects_per_second: rate,
        findings,
    }
}

#[test]
#[ignore = "memory benchmark: run with --release --ignored"]
fn audit_memory() {
    let dir = tempfile::tempdir().unwrap();
    let real = repo().join("policies");
    let policies = if real.is_dir() {
        real
    } else {
        write_policies(dir.path())
    };
    let small = measure(10_000, &policies, dir.path());
    let large = measure(100_000, &policies, dir.path());
    let ratio = large.peak_rss_kib as f64 / small.peak_rss_kib as f64;
    let mut report = String::from(
        "| objects | peak RSS | wall time | objects judged/s | findings |\n|---:|---:|---:|---:|---|\n",
    );
    for m in [&small, &large] {
        report.push_str(&format!(
            "| {} | {:.1} MiB | {:.1} s | {:.0} | {} |\n",
            m.objects,
            m.peak_rss_kib as f64 / 1024.0,
            m.wall_seconds,
            m.objects_per_second,
            m.findings
        ));
    }
    report.push_str(&format!(
        "\npeak RSS ratio 100,000 / 10,000 objects: {ratio:.2}\n"
    ));
    println!("{report}");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit-memory.md");
    std::fs::write(&out, &report).unwrap();
    println!("written to {}", out.display());
    assert!(
        ratio < 1.5,
        "peak memory grew with the cluster: {ratio:.2}x"
    );
}

#[test]
fn background_reports_of_a_large_cluster_stay_small() {
    let total: usize = std::env::var("REGATE_AUDIT_REPORTS_OBJECTS")
        .ok()
        .map(|v| v.parse().unwrap())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let real = repo().join("policies");
    let policies = if real.is_dir() {
        real
    } else {
        write_policies(dir.path())
    };
    let mut resources = standard_resources();
    resources.extend(openreports_resources());
    let server = FakeApiServer::start_with(ApiState {
        resources,
        generated: Some(Generated::with_total(total)),
        strip_results: true,
        ..ApiState::default()
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let (first, second) = runtime.block_on(async {
        let set = Arc::new(build_set(
            &policies,
            regate::environment::NamespaceLabels::default(),
        ));
        let metrics = regate::metrics::Metrics::new().unwrap();
        let leader = AtomicBool::new(true);
        let mut state = regate::audit::background::ReportState::default();
        let client = server.client();
        let first = regate::audit::background::run_once_with(
            &client,
            set.clone(),
            &metrics,
            500,
            &leader,
            &mut state,
        )
        .await
        .unwrap();
        let second = regate::audit::background::run_once_with(
            &client, set, &metrics, 500, &leader, &mut state,
        )
        .await
        .unwrap();
        (first, second)
    });
    let seconds = started.elapsed().as_secs_f64();
    let t = &first.totals;
    assert!(t.objects >= total as u64, "{}", t.objects);
    let applies = server.applies();
    assert_eq!(first.outcome.written, applies.len());
    assert_eq!(first.outcome.failed, 0);
    let largest = applies.iter().map(|a| a.bytes).max().unwrap();
    let most = applies.iter().map(|a| a.results).max().unwrap();
    assert!(
        largest <= regate::audit::report::openreports::MAX_REPORT_BYTES,
        "{largest} bytes"
    );
    assert!(most <= 1_000, "{most} results");
    // The summaries add up to the audit's totals.
    let reports = server.report_objects();
    let sum = |field: &str| -> u64 {
        reports
            .values()
            .map(|r| r["summary"][field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("pass"), sum("fail"), sum("warn"), sum("error")),
        (
            t.passes(),
            t.findings.deny + t.findings.audit,
            t.findings.warn,
            t.findings.error
        )
    );
    // Re-running changes nothing: no write, no delete.
    assert_eq!(second.outcome.written, 0, "{:?}", second.outcome);
    assert_eq!(second.outcome.deleted, 0);
    assert_eq!(second.outcome.unchanged, first.outcome.written);
    assert_eq!(server.applies().len(), applies.len());
    println!(
        "background audit of {} objects: {} findings in {} reports (largest {} bytes, at most {} results); two rounds in {seconds:.1} s",
        t.objects,
        t.findings.total(),
        reports.len(),
        largest,
        most
    );
}
