//! `-o html`: one self-contained file (no external assets): summary cards, inline SVG charts of
//! findings by policy, by namespace and by severity, and a searchable, filterable table built a
//! page at a time from the findings embedded as JSON; with `--baseline`, each finding's state and
//! the resolved findings.

use std::io::{self, Write};

use crate::audit::baseline::State;
use crate::audit::record::Label;
use crate::audit::report::{escape_xml as e, namespace_label};
use crate::audit::runner::{AuditRun, SourceKind};
use crate::audit::totals::Counts;
use crate::policy::metadata::Severity;

/// No fetch of any kind; the inline style and script only.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:";

/// Bars shown per chart; the rest are summed into one.
const TOP: usize = 15;

fn color(label: Label) -> &'static str {
    match label {
        Label::Deny => "#d64545",
        Label::Warn => "#e8a317",
        Label::Audit => "#3b82c4",
        Label::Error => "#8e44ad",
    }
}

const STYLE: &str = r#"
:root { --fg:#1f2933; --muted:#62707f; --line:#e3e8ee; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif; color:var(--fg); background:var(--bg); }
header { background:#17324d; color:#fff; padding:18px 28px; }
header h1 { margin:0 0 4px; font-size:22px; }
header p { margin:0; color:#c9d6e3; }
main { padding:20px 28px 40px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin-bottom:20px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 16px; min-width:130px; }
.card .n { font-size:26px; font-weight:600; }
.card .l { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card.deny .n { color:#d64545; } .card.warn .n { color:#b97c0c; } .card.audit .n { color:#3b82c4; } .card.error .n { color:#8e44ad; }
.card.new .n { color:#d64545; } .card.resolved .n { color:#2f855a; }
.charts { display:flex; flex-wrap:wrap; gap:16px; margin-bottom:24px; }
figure { margin:0; background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; max-width:100%; overflow-x:auto; }
figcaption { font-weight:600; margin-bottom:6px; }
svg text { font:12px -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif; fill:var(--fg); }
.issues { background:#fff4e5; border:1px solid #f0c36d; border-radius:8px; padding:10px 16px; margin-bottom:20px; }
.toolbar { display:flex; flex-wrap:wrap; align-items:center; gap:14px; margin:8px 0 10px; }
#q { width:360px; max-width:100%; padding:7px 10px; border:1px solid #c5ced8; border-radius:6px; font-size:14px; }
.count { color:var(--muted); }
.pager { display:flex; align-items:center; gap:10px; margin:10px 0; color:var(--muted); }
.pager button { padding:4px 12px; border:1px solid #c5ced8; border-radius:6px; background:#fff; font-size:13px; cursor:pointer; }
.pager button:disabled { opacity:.45; cursor:default; }
/* A scrolling wrapper would unstick the header row, so only narrow screens get one. */
@media (max-width: 900px) { .scroll { overflow-x:auto; } }
table { width:100%; border-collapse:collapse; background:#fff; border:1px solid var(--line); }
caption { text-align:left; color:var(--muted); padding:4px 0; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; overflow-wrap:break-word; }
th { background:#eef2f6; font-size:12px; text-transform:uppercase; letter-spacing:.03em; position:sticky; top:0; }
td.msg { min-width:240px; max-width:520px; }
/* Long paths and locations may break anywhere; words and labels only where they must. */
td.msg, td code { overflow-wrap:anywhere; }
td code { font-size:12px; color:var(--muted); }
.tag { display:inline-block; white-space:nowrap; padding:1px 7px; border-radius:10px; color:#fff; font-size:12px; font-weight:600; }
.tag.new { background:#d64545; } .tag.unchanged { background:#8595a6; } .tag.resolved { background:#2f855a; }
.sev { font-size:12px; text-transform:uppercase; }
.empty { color:var(--muted); padding:16px; }
"#;

/// Builds at most one page of rows at a time: a 10,000-finding table laid out whole took the
/// browser over 3 s, while search and filters still run over every finding in the embedded data.
const SCRIPT: &str = r#"
(function () {
  var PAGE = 200;
  function data(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : [];
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text) { e.textContent = text; }
    return e;
  }
  function tag(text) { return el('span', 'tag ' + text, text); }
  // A table over `rows` (arrays of strings) that shows the matching ones a page at a time.
  function view(id, rows, rowOf, keep) {
    var tbody = document.querySelector('#' + id + ' tbody');
    var count = document.getElementById(id + '-count');
    var where = document.getElementById(id + '-page');
    var prev = document.getElementById(id + '-prev');
    var next = document.getElementById(id + '-next');
    var hay = rows.map(function (r) { return r.join(' ').toLowerCase(); });
    var matched = [];
    var page = 0;
    function render() {
      var pages = Math.max(1, Math.ceil(matched.length / PAGE));
      page = Math.min(Math.max(page, 0), pages - 1);
      var frag = document.createDocumentFragment();
      var from = page * PAGE;
      var to = Math.min(matched.length, from + PAGE);
      for (var i = from; i < to; i++) { frag.appendChild(rowOf(rows[matched[i]])); }
      tbody.textContent = '';
      tbody.appendChild(frag);
      count.textContent = matched.length + ' of ' + rows.length + ' findings';
      where.textContent = matched.length ? 'rows ' + (from + 1) + '–' + to + ' · page ' + (page + 1) + ' of ' + pages : 'no rows';
      prev.disabled = page === 0;
      next.disabled = page >= pages - 1;
    }
    prev.addEventListener('click', function () { page--; render(); });
    next.addEventListener('click', function () { page++; render(); });
    return function (terms, on) {
      matched = [];
      for (var i = 0; i < rows.length; i++) {
        var h = hay[i];
        if (keep(rows[i], on) && terms.every(function (t) { return h.indexOf(t) >= 0; })) { matched.push(i); }
      }
      page = 0;
      render();
    };
  }
  // A finding: [action, severity, category, policy, object, namespace, message, path, location, state].
  function findingRow(f) {
    var tr = el('tr');
    var td = el('td'); td.appendChild(tag(f[0])); tr.appendChild(td);
    if (hasState) { td = el('td'); td.appendChild(tag(f[9])); tr.appendChild(td); }
    tr.appendChild(el('td', 'sev', f[1]));
    tr.appendChild(el('td', '', f[2]));
    tr.appendChild(el('td', '', f[3]));
    tr.appendChild(el('td', '', f[4]));
    tr.appendChild(el('td', '', f[5]));
    td = el('td', 'msg', f[6]);
    if (f[7]) { td.appendChild(el('br')); td.appendChild(el('code', '', f[7])); }
    tr.appendChild(td);
    td = el('td'); td.appendChild(el('code', '', f[8])); tr.appendChild(td);
    return tr;
  }
  // A resolved finding: [action, severity, policy, object, namespace, message, path].
  function resolvedRow(f) {
    var tr = el('tr');
    var td = el('td'); td.appendChild(tag(f[0])); tr.appendChild(td);
    tr.appendChild(el('td', 'sev', f[1]));
    tr.appendChild(el('td', '', f[2]));
    tr.appendChild(el('td', '', f[3]));
    tr.appendChild(el('td', '', f[4]));
    td = el('td', 'msg', f[5]);
    if (f[6]) { td.appendChild(el('br')); td.appendChild(el('code', '', f[6])); }
    tr.appendChild(td);
    return tr;
  }
  var hasState = !!document.getElementById('state-filters');
  var q = document.getElementById('q');
  var boxes = Array.prototype.slice.call(document.querySelectorAll('.f'));
  var views = [view('findings', data('findings-data'), findingRow, function (f, on) {
    return on[f[0]] !== false && (!f[9] || on[f[9]] !== false);
  })];
  if (document.getElementById('resolved')) {
    views.push(view('resolved', data('resolved-data'), resolvedRow, function (f, on) { return on[f[0]] !== false; }));
  }
  function apply() {
    var terms = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    var on = {};
    boxes.forEach(function (b) { on[b.value] = b.checked; });
    views.forEach(function (v) { v(terms, on); });
  }
  // A link can carry the view: #q=<search>&hide=<label or state>,<label or state>
  var hash = {};
  location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
    var i = kv.indexOf('=');
    if (i > 0) { hash[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1).replace(/\+/g, ' ')); }
  });
  if (hash.q) { q.value = hash.q; }
  (hash.hide || '').split(',').forEach(function (l) {
    boxes.forEach(function (b) { if (b.value === l) { b.checked = false; } });
  });
  q.addEventListener('input', apply);
  boxes.forEach(function (b) { b.addEventListener('change', apply); });
  apply();
  // Time from navigation to a laid-out page (read by the tests, shown nowhere).
  void document.body.offsetHeight;
  document.body.setAttribute('data-ready-ms', String(Math.round(performance.now())));
})();
"#;

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// A horizontal stacked bar chart, one row per (label, counts).
fn bar_chart(rows: &[(String, Counts)]) -> String {
    let width = 540.0_f64;
    let label_w = 230.0_f64;
    let count_w = 44.0_f64;
    let bar_w = width - label_w - count_w;
    let row_h = 22.0_f64;
    let top = 24.0_f64;
    let height = top + row_h * rows.len().max(1) as f64 + 6.0;
    let max = rows
        .iter()
        .map(|(_, c)| c.total())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">"
    );
    // Legend.
    let mut lx = label_w;
    for label in Label::ALL {
        svg.push_str(&format!(
            "<rect x=\"{lx}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"13\">{}</text>",
            color(label),
            lx + 14.0,
            label.as_str()
        ));
        lx += 62.0;
    }
    if rows.is_empty() {
        svg.push_str(&format!(
            "<text x=\"{label_w}\" y=\"{}\" style=\"fill:#62707f\">no findings</text>",
            top + 15.0
        ));
    }
    for (i, (name, counts)) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        svg.push_str(&format!(
            "<g><title>{}: {} deny, {} warn, {} audit, {} error</title><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            e(name),
            counts.deny,
            counts.warn,
            counts.audit,
            counts.error,
            label_w - 8.0,
            y + 15.0,
            e(&truncate(name, 32))
        ));
        let mut x = label_w;
        for label in Label::ALL {
            let n = counts.get(label);
            if n == 0 {
                continue;
            }
            let w = (n as f64 / max * bar_w).max(1.5);
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"/>",
                y + 3.0,
                row_h - 6.0,
                color(label)
            ));
            x += w;
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\">{}</text></g>",
            x + 5.0,
            y + 15.0,
            counts.total()
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The `TOP` largest entries, the rest summed into one row.
fn top_rows(mut rows: Vec<(String, Counts)>) -> Vec<(String, Counts)> {
    rows.retain(|(_, c)| c.total() > 0);
    rows.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then_with(|| a.0.cmp(&b.0)));
    if rows.len() > TOP {
        let rest = rows.split_off(TOP - 1);
        let mut sum = Counts::default();
        for (_, c) in &rest {
            sum.deny += c.deny;
            sum.warn += c.warn;
            sum.audit += c.audit;
            sum.error += c.error;
        }
        rows.push((format!("{} more", rest.len()), sum));
    }
    rows
}

pub fn write(run: &mut AuditRun, out: &mut dyn Write) -> io::Result<()> {
    let t = &run.totals;
    let source = match run.source {
        SourceKind::Files => "files",
        SourceKind::Cluster => "cluster",
    };
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"
    )?;
    writeln!(
        out,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    )?;
    // Everything is inline: the browser is told to fetch nothing, so the report works offline
    // and cannot call out when opened.
    writeln!(
        out,
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
    )?;
    writeln!(
        out,
        "<title>regate audit</title>\n<style>{STYLE}{}</style>\n</head>\n<body>",
        Label::ALL
            .iter()
            .map(|l| format!(".tag.{} {{ background:{}; }}\n", l.as_str(), color(*l)))
            .collect::<String>()
    )?;
    writeln!(
        out,
        "<header><h1>regate audit</h1><p>Source: {source} · started {} · {:.1} s · {} policies · {:.0} objects/s</p></header>\n<main>",
        e(&k8s_openapi::jiff::Timestamp::from_second(run.started_at.as_second())
            .unwrap_or(run.started_at)
            .to_string()),
        run.duration.as_secs_f64(),
        run.policies.len(),
        run.rate()
    )?;

    writeln!(out, "<section class=\"cards\">")?;
    for (class, n, label) in [
        ("", t.objects, "objects judged"),
        ("", t.objects_with_findings, "objects with findings"),
        ("deny", t.findings.deny, "deny"),
        ("warn", t.findings.warn, "warn"),
        ("audit", t.findings.audit, "audit"),
        ("error", t.findings.error, "error"),
        ("", t.passes(), "passing checks"),
    ] {
        writeln!(
            out,
            "<div class=\"card {class}\"><div class=\"n\">{n}</div><div class=\"l\">{label}</div></div>"
        )?;
    }
    if let Some(b) = &run.baseline {
        for (class, n, label) in [
            ("new", b.summary.new, "new since baseline"),
            ("", b.summary.unchanged, "unchanged"),
            ("resolved", b.summary.resolved, "resolved"),
        ] {
            writeln!(
                out,
                "<div class=\"card {class}\"><div class=\"n\">{n}</div><div class=\"l\">{label}</div></div>"
            )?;
        }
    }
    writeln!(out, "</section>")?;

    if !run.issues.is_empty() {
        writeln!(out, "<section class=\"issues\"><strong>Incomplete:</strong> part of the audit could not be done.<ul>")?;
        for i in &run.issues {
            writeln!(out, "<li><b>{}</b>: {}</li>", e(&i.source), e(&i.message))?;
        }
        writeln!(out, "</ul></section>")?;
    }

    let by_policy = top_rows(t.by_policy.iter().map(|(k, c)| (k.clone(), *c)).collect());
    let by_namespace = top_rows(
        t.by_namespace
            .iter()
            .map(|(k, c)| (namespace_label(k).to_string(), c.findings))
            .collect(),
    );
    let by_severity: Vec<(String, Counts)> = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ]
    .into_iter()
    .map(|s| {
        (
            s.as_str().to_string(),
            t.by_severity.get(&s).copied().unwrap_or_default(),
        )
    })
    .collect();
    writeln!(out, "<section class=\"charts\">")?;
    for (id, caption, rows) in [
        ("chart-policy", "Findings by policy", &by_policy),
        ("chart-namespace", "Findings by namespace", &by_namespace),
        ("chart-severity", "Findings by severity", &by_severity),
    ] {
        writeln!(
            out,
            "<figure id=\"{id}\"><figcaption>{caption}</figcaption>{}</figure>",
            bar_chart(rows)
        )?;
    }
    writeln!(out, "</section>")?;

    let states = run.baseline.is_some();
    writeln!(out, "<section><h2>Findings</h2>\n<div class=\"toolbar\">")?;
    writeln!(
        out,
        "<input id=\"q\" type=\"search\" placeholder=\"Search policy, category, object, namespace, message…\" aria-label=\"Search findings\">"
    )?;
    for label in Label::ALL {
        writeln!(
            out,
            "<label><input type=\"checkbox\" class=\"f\" value=\"{0}\" checked> <span class=\"tag {0}\">{0}</span> {1}</label>",
            label.as_str(),
            t.findings.get(label)
        )?;
    }
    if let Some(b) = &run.baseline {
        write!(out, "<span id=\"state-filters\">")?;
        for (state, n) in [
            (State::New, b.summary.new),
            (State::Unchanged, b.summary.unchanged),
        ] {
            write!(
                out,
                "<label><input type=\"checkbox\" class=\"f\" value=\"{0}\" checked> <span class=\"tag {0}\">{0}</span> {n}</label> ",
                state.as_str()
            )?;
        }
        writeln!(out, "</span>")?;
    }
    writeln!(
        out,
        "<span id=\"findings-count\" class=\"count\" role=\"status\" aria-live=\"polite\"></span></div>"
    )?;
    let state_th = if states {
        "<th scope=\"col\">State</th>"
    } else {
        ""
    };
    table_open(
        out,
        "findings",
        "Findings, a page at a time; search and filters apply to all of them.",
        &format!("<th scope=\"col\">Action</th>{state_th}<th scope=\"col\">Severity</th><th scope=\"col\">Category</th><th scope=\"col\">Policy</th><th scope=\"col\">Object</th><th scope=\"col\">Namespace</th><th scope=\"col\">Message</th><th scope=\"col\">Location</th>"),
    )?;
    // The rows travel as data and the inline script builds the visible page.
    write!(
        out,
        "<script type=\"application/json\" id=\"findings-data\">["
    )?;
    let mut first = true;
    let baseline = run.baseline.as_ref();
    run.spool.for_each_partition::<io::Error>(|records| {
        for r in &records {
            let object = format!("{} {}", r.kind, r.name);
            let location = r.location().unwrap_or_default();
            for f in &r.findings {
                let state = baseline.map(|b| b.state(r, f).as_str()).unwrap_or_default();
                let row = [
                    f.action.as_str(),
                    f.severity.as_str(),
                    f.category.as_deref().unwrap_or_default(),
                    &f.policy,
                    &object,
                    namespace_label(r.namespace_key()),
                    &f.message,
                    f.path.as_deref().unwrap_or_default(),
                    &location,
                    state,
                ];
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                out.write_all(script_json(&row)?.as_bytes())?;
            }
        }
        Ok(())
    })?;
    writeln!(out, "]</script>")?;
    if t.findings.total() == 0 {
        writeln!(
            out,
            "<p class=\"empty\">No findings: every judged object passes every policy.</p>"
        )?;
    }
    writeln!(out, "</section>")?;

    if let Some(b) = &run.baseline {
        writeln!(
            out,
            "<section><h2>Resolved since the baseline</h2>\n<p>In <code>{}</code>, no longer found. <span id=\"resolved-count\" class=\"count\" role=\"status\" aria-live=\"polite\"></span></p>",
            e(&b.file)
        )?;
        table_open(
            out,
            "resolved",
            "Findings of the baseline that this audit no longer has.",
            "<th scope=\"col\">Action</th><th scope=\"col\">Severity</th><th scope=\"col\">Policy</th><th scope=\"col\">Object</th><th scope=\"col\">Namespace</th><th scope=\"col\">Message</th>",
        )?;
        write!(
            out,
            "<script type=\"application/json\" id=\"resolved-data\">["
        )?;
        for (i, f) in b.resolved.iter().enumerate() {
            let object = format!("{} {}", f.kind, f.name);
            let row = [
                f.action.as_str(),
                f.severity.as_str(),
                &f.policy,
                &object,
                namespace_label(f.namespace.as_deref().unwrap_or_default()),
                &f.message,
                f.path.as_deref().unwrap_or_default(),
            ];
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(script_json(&row)?.as_bytes())?;
        }
        writeln!(out, "]</script>\n</section>")?;
    }
    writeln!(out, "</main>\n<script>{SCRIPT}</script>\n</body>\n</html>")
}

/// An empty table for the script to fill, with its pager.
fn table_open(out: &mut dyn Write, id: &str, caption: &str, head: &str) -> io::Result<()> {
    writeln!(
        out,
        "<nav class=\"pager\" aria-label=\"{id} pages\"><button type=\"button\" id=\"{id}-prev\" aria-label=\"Previous page\">‹ Previous</button><span id=\"{id}-page\"></span><button type=\"button\" id=\"{id}-next\" aria-label=\"Next page\">Next ›</button></nav>"
    )?;
    writeln!(
        out,
        "<div class=\"scroll\"><table id=\"{id}\"><caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody></tbody></table></div>"
    )
}

/// JSON that can sit inside a `<script>` element: no `<`, so no `</script>` or `<!--`.
fn script_json(row: &[&str]) -> io::Result<String> {
    Ok(serde_json::to_string(row)
        .map_err(io::Error::other)?
        .replace('<', "\\u003c"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_its_element() -> io::Result<()> {
        let text = script_json(&["</script><script>alert(1)</script>", "<!-- x"])?;
        assert!(!text.contains('<'), "{text}");
        let back: Vec<String> = serde_json::from_str(&text).map_err(io::Error::other)?;
        assert_eq!(back, ["</script><script>alert(1)</script>", "<!-- x"]);
        Ok(())
    }
}
