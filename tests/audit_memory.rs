//! Memory stays flat however large the cluster: `regate audit --cluster` (a separate process) over
//! generated clusters of 10,000 and 100,000 objects, served page by page by the test API server
//! (which generates objects on demand and stores none). Records peak RSS and objects judged per
//! second. Ignored by default; run with
//!
//! ```text
//! cargo test --release --test audit_memory -- --ignored --nocapture audit_memory
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use std::path::Path;
use std::process::Command;

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
