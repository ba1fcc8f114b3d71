//! The HTML report rendered in headless Chromium (Debian's `chromium`): a screenshot, and the DOM
//! after the inline script ran. Skips with a note when chromium is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_support::*;
use regate::audit::cluster::{audit_cluster, ClusterOptions};
use regate::audit::report::{self, FailOn, Format};
use regate::environment::NamespaceLabels;

fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(PathBuf::from(name));
        }
    }
    None
}

/// Runs chromium headless with the flags that keep it off the network, killing it after 90 s.
/// Output goes to files: a large `--dump-dom` would fill a pipe nobody reads until exit.
fn run_chromium(bin: &Path, profile: &Path, args: &[String]) -> Output {
    let stdout_path = profile.join("stdout.txt");
    let stderr_path = profile.join("stderr.txt");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Output {
                status,
                stdout: std::fs::read(&stdout_path).unwrap(),
                stderr: std::fs::read(&stderr_path).unwrap(),
            };
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An audit of a generated cluster (2,000 objects in 100 namespaces) with the default policies
/// (or the test policies when policies/ is missing), as HTML.
fn html_report(dir: &Path) -> (String, u64) {
    let server = FakeApiServer::start_generated(Generated::with_total(2_000));
    let real = repo().join("policies");
    let policies = if real.is_dir() {
        real
    } else {
        write_policies(dir)
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut run = runtime.block_on(async {
        let set = Arc::new(build_set(&policies, NamespaceLabels::default()));
        audit_cluster(&server.client(), set, &ClusterOptions::default())
            .await
            .unwrap()
    });
    let mut out = Vec::new();
    report::write(Format::Html, &mut run, FailOn::Deny, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), run.totals.findings.total())
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (html, findings) = html_report(dir.path());
    assert!(findings > 0);
    let page = dir.path().join("audit.html");
    std::fs::write(&page, &html).unwrap();
    let Some(bin) = chromium() else {
        eprintln!("note: chromium is not installed (apt-get install -y chromium); skipping the rendering check");
        return;
    };
    let url = format!("file://{}", page.display());

    // The DOM after the inline script ran: the filter counted every row.
    let profile = tempfile::tempdir().unwrap();
    let out = run_chromium(
        &bin,
        profile.path(),
        &["--dump-dom".to_string(), url.clone()],
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let expected = format!("<span id=\"count\">{findings} of {findings} findings</span>");
    assert!(
        dom.contains(&expected),
        "script did not run: {}",
        &dom[dom.len().saturating_sub(2000)..]
    );

    // A screenshot, kept for people to look at.
    let shot_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&shot_dir).unwrap();
    let shot = shot_dir.join("audit-report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = run_chromium(
        &bin,
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,1000".to_string(),
            url,
        ],
    );
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A blank page compresses to a few kilobytes; charts and a table do not.
    assert!(
        png.len() > 40_000,
        "screenshot is suspiciously small ({} bytes)",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
