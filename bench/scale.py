#!/usr/bin/env python3
"""How the cost of a review grows with the policy set: generated Gatekeeper constraints, N at a
time, some matching the request and some excluded by kind, by namespace or by labels, and the
whole gatekeeper-library beside the defaults.

    cargo build --release
    bench/scale.py                                   # N = 0 10 50 100 300 1000, the library if found
    bench/scale.py --sizes 0 10 50 --iterations 20 --json out.json --svg docs/scale.svg
    bench/scale.py --policies-only my-policies/      # your own set: judge time, startup, RSS
    bench/scale.py --from-json out.json --html scale.html   # redraw a saved run, measure nothing

For every set it prints the per-review judge time on a Pod (`regate bench policies`, mean and
p99), the time from `regate serve` starting to its first ready answer, and serve's resident memory
once ready and after --reloads policy reloads. The cost per constraint is fitted by least squares
over series in which every generated constraint matches the Pod, or every one is excluded by
kind, by namespace, or by labels.

--html writes one self-contained page (the curve as inline SVG, every set and the fitted costs in
tables; nothing fetched, so it opens offline and can be attached to a CI run). Only the Python
standard library is used. Needs a release build (or --regate) and writes its
generated sets under a temporary directory.
"""
import argparse
import html
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TEMPLATE = """apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sscalerepo
spec:
  crd:
    spec:
      names:
        kind: K8sScaleRepo
      validation:
        openAPIV3Schema:
          type: object
          properties:
            repos:
              type: array
              items: {type: string}
            labels:
              type: array
              items: {type: string}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sscalerepo

        violation[{"msg": msg}] {
          container := input.review.object.spec.containers[_]
          not any_repo(container.image)
          msg := sprintf("container <%v> has an invalid image repo <%v>, allowed repos are %v", [container.name, container.image, input.parameters.repos])
        }

        violation[{"msg": msg}] {
          provided := {label | input.review.object.metadata.labels[label]}
          required := {label | label := input.parameters.labels[_]}
          missing := required - provided
          count(missing) > 0
          msg := sprintf("you must provide labels: %v", [missing])
        }

        any_repo(image) {
          repo := input.parameters.repos[_]
          startswith(image, repo)
        }
"""

# How a generated constraint relates to the benchmark Pod (namespace "shop", no "tier" label).
MATCH = {
    "match": "      kinds: [{apiGroups: [\"\"], kinds: [Pod]}]\n",
    "kind": "      kinds: [{apiGroups: [\"\"], kinds: [Service]}]\n",
    "namespace": "      kinds: [{apiGroups: [\"\"], kinds: [Pod]}]\n"
                 "      namespaces: [\"elsewhere-{i}\"]\n",
    "labels": "      kinds: [{apiGroups: [\"\"], kinds: [Pod]}]\n"
              "      labelSelector: {matchLabels: {tier: \"t{i}\"}}\n",
}
# The mixed series: of every ten constraints, four match, two are excluded by each means.
MIX = ["match", "kind", "match", "namespace", "match", "labels", "match", "kind", "namespace", "labels"]


def constraint(i, how):
    return (
        "apiVersion: constraints.gatekeeper.sh/v1beta1\n"
        "kind: K8sScaleRepo\n"
        f"metadata:\n  name: scale-{how}-{i}\n"
        "spec:\n  match:\n" + MATCH[how].replace("{i}", str(i)) +
        "  parameters:\n"
        f"    repos: [\"registry.example/team-{i}/\", \"ghcr.io/\"]\n"
        f"    labels: [\"app\", \"owner-{i % 7}\"]\n"
    )


def write_set(path, kinds):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "template.yaml"), "w") as f:
        f.write(TEMPLATE)
    for i, how in enumerate(kinds):
        with open(os.path.join(path, f"c{i:05}.yaml"), "w") as f:
            f.write(constraint(i, how))


def library_set(path, library, unique_names=False):
    """The gatekeeper-library's templates and sample constraints, one file each. Samples that
    reuse a (kind, name) pair are kept once, as one cluster could hold only one of them."""
    os.makedirs(path, exist_ok=True)
    seen = set()
    templates = constraints = 0
    for group in sorted(os.listdir(library)):
        if not os.path.isdir(os.path.join(library, group)):
            continue
        for name in sorted(os.listdir(os.path.join(library, group))):
            d = os.path.join(library, group, name)
            t = os.path.join(d, "template.yaml")
            if not os.path.isfile(t):
                continue
            shutil.copy(t, os.path.join(path, f"{group}.{name}.template.yaml"))
            templates += 1
            samples = os.path.join(d, "samples")
            for s in sorted(os.listdir(samples)) if os.path.isdir(samples) else []:
                c = os.path.join(samples, s, "constraint.yaml")
                if not os.path.isfile(c):
                    continue
                text = open(c).read()
                kind = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("kind:")), "")
                cname = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("  name:")), s)
                key = cname if unique_names else (kind, cname)
                if key in seen:
                    continue
                seen.add(key)
                shutil.copy(c, os.path.join(path, f"{group}.{name}.{s}.constraint.yaml"))
                constraints += 1
    return templates, constraints


def judge(regate, policies, fixtures, iterations, defaults):
    cmd = [regate, "bench", "policies", "-o", "json", "--policies", policies, "-f", fixtures,
           "--iterations", str(iterations), "--warmup", str(max(1, iterations // 10))]
    if defaults:
        cmd.append("--include-defaults")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    pods = [f for f in report["fixtures"] if f["kind"] == "Pod"]
    return {
        "mix_mean_us": report["mix"]["mean_us"],
        "mix_p99_us": report["mix"]["p99_us"],
        "pod_mean_us": statistics.fmean(f["mean_us"] for f in pods) if pods else None,
        "pod_p99_us": max(f["p99_us"] for f in pods) if pods else None,
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data.decode(errors="replace")
                data += chunk
    except OSError:
        return ""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(l.split(":", 1) for l in f if ":" in l)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def reload_count(metrics):
    for line in http_get(metrics, "/metrics").splitlines():
        if line.startswith('regate_policy_reload_total{result="success"}'):
            return int(float(line.split()[-1]))
    return 0


def serve(regate, policies, certs, defaults, reloads):
    """Time to ready, RSS once ready and after each reload (a constraint rewritten)."""
    port, metrics = free_port(), free_port()
    cmd = [regate, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}",
           "--tls-cert", f"{certs}/tls.crt", "--tls-key", f"{certs}/tls.key", "--policies", policies,
           "--log-level", "warn"]
    if defaults:
        cmd.append("--include-defaults")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not http_get(metrics, "/readyz").startswith("HTTP/1.1 200"):
            if p.poll() is not None:
                sys.exit(f"regate serve exited with {p.returncode} on {policies}")
            if time.perf_counter() - t0 > 120:
                sys.exit("not ready within 120 s")
            time.sleep(0.002)
        ready_ms = (time.perf_counter() - t0) * 1e3
        rss, _ = rss_kib(p.pid)
        after = []
        target = os.path.join(policies, "zz-reload.yaml")
        for r in range(reloads):
            before = reload_count(metrics)
            with open(target + ".tmp", "w") as f:
                f.write(f"# reload {r}\n")
            os.replace(target + ".tmp", target)
            deadline = time.monotonic() + 10
            while reload_count(metrics) <= before and time.monotonic() < deadline:
                time.sleep(0.05)
            after.append(rss_kib(p.pid)[0])
        _, hwm = rss_kib(p.pid)
    finally:
        p.terminate()
        p.wait()
        if reloads and os.path.exists(os.path.join(policies, "zz-reload.yaml")):
            os.remove(os.path.join(policies, "zz-reload.yaml"))
    return {
        "ready_ms": round(ready_ms, 1),
        "rss_mib": round(rss / 1024, 1),
        "peak_rss_mib": round(hwm / 1024, 1),
        "rss_after_reloads_mib": [round(a / 1024, 1) for a in after],
    }


def fit(points):
    """Least-squares slope and intercept of (n, us) points."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return {"us_per_constraint": round(slope, 3), "intercept_us": round(my - slope * mx, 1)}


# The series drawn, in the order they are measured.
CURVES = ["mixed (40% match)", "all match", "all excluded by kind", "all excluded by namespace",
          "all excluded by labels"]


def curves_of(report):
    """{series name: [(N, Pod mean µs)]} from a report's sets."""
    curves = {}
    for name in CURVES:
        pts = [(row["constraints"], row.get("pod_mean_us")) for row in report["sets"] if row["set"] == name]
        if pts:
            curves[name] = pts
    return curves


def svg(series):
    """A plain line chart: Pod judge time (µs, log scale) against constraints (N); None without points."""
    import math
    w, h, l, b, t, r = 760, 420, 70, 50, 30, 210
    all_pts = [pt for s in series.values() for pt in s if pt[1] and pt[1] > 0]
    if not all_pts:
        return None
    xmax = max(p[0] for p in all_pts) or 1
    ymin = min(p[1] for p in all_pts)
    ymax = max(p[1] for p in all_pts)
    lo, hi = math.floor(math.log10(max(ymin, 1))), math.ceil(math.log10(ymax + 1))
    hi = max(hi, lo + 1)
    X = lambda x: l + (w - l - r) * x / xmax
    Y = lambda y: h - b - (h - b - t) * (math.log10(max(y, 1)) - lo) / (hi - lo)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{l}" y="18" font-size="14">Pod review judge time vs. generated constraints (regate bench policies)</text>']
    for e in range(lo, hi + 1):
        y = Y(10 ** e)
        out.append(f'<line x1="{l}" x2="{w - r}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{l - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g} µs</text>')
    # A tick at every measured N; a label only where it clears the last one (the axis is linear,
    # so 0, 10, 25 and 50 would print over each other).
    labelled = None
    for x in sorted({p[0] for p in all_pts}):
        out.append(f'<line x1="{X(x):.1f}" x2="{X(x):.1f}" y1="{h - b}" y2="{h - b + 4}" stroke="black"/>')
        if labelled is None or X(x) - labelled >= 28:
            out.append(f'<text x="{X(x):.1f}" y="{h - b + 16}" text-anchor="middle">{x}</text>')
            labelled = X(x)
    out.append(f'<text x="{(l + w - r) / 2:.0f}" y="{h - 12}" text-anchor="middle">constraints in the set (N)</text>')
    out.append(f'<line x1="{l}" x2="{l}" y1="{t}" y2="{h - b}" stroke="black"/>')
    out.append(f'<line x1="{l}" x2="{w - r}" y1="{h - b}" y2="{h - b}" stroke="black"/>')
    for k, (name, pts) in enumerate(series.items()):
        pts = [p for p in pts if p[1]]
        c = colors[k % len(colors)]
        d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{c}"/>')
        ly = t + 20 + 18 * k
        out.append(f'<line x1="{w - r + 12}" x2="{w - r + 32}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        out.append(f'<text x="{w - r + 38}" y="{ly + 4}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


PAGE_STYLE = """body { margin:0; font:14px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif; color:#1f2933; background:#f6f8fa; }
header { background:#17324d; color:#fff; padding:18px 28px; } header h1 { margin:0; font-size:22px; }
main { padding:20px 28px 40px; } figure { margin:0 0 20px; background:#fff; border:1px solid #e3e8ee; border-radius:8px; padding:12px; max-width:100%; overflow-x:auto; display:inline-block; }
.scroll { overflow-x:auto; } table { border-collapse:collapse; background:#fff; border:1px solid #e3e8ee; margin-bottom:20px; }
th, td { text-align:left; padding:5px 10px; border-bottom:1px solid #e3e8ee; } td.n { text-align:right; font-variant-numeric:tabular-nums; }
th { background:#eef2f6; font-size:12px; }"""


def page(report):
    """The report as one self-contained HTML page (the same Content-Security-Policy as `regate audit -o html`)."""
    e = lambda v: html.escape("" if v is None else str(v))
    out = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; img-src data:">',
           '<title>regate scale benchmark</title>', f'<style>{PAGE_STYLE}</style>', '</head>', '<body>',
           '<header><h1>regate scale benchmark</h1></header>', '<main>']
    chart = svg(curves_of(report))
    if chart:
        out.append(f'<figure id="scale-curve"><figcaption>Pod review judge time against the number of constraints</figcaption>{chart}</figure>')
    cols = [("set", "set"), ("constraints", "constraints"), ("pod_mean_us", "Pod mean µs"), ("pod_p99_us", "Pod p99 µs"),
            ("mix_mean_us", "mix mean µs"), ("ready_ms", "ready ms"), ("rss_mib", "RSS MiB")]
    out.append('<h2>Sets</h2><div class="scroll"><table id="scale-sets"><caption>Every measured set</caption><thead><tr>')
    out.extend(f'<th scope="col">{e(label)}</th>' for _, label in cols)
    out.append('</tr></thead><tbody>')
    for row in report["sets"]:
        cells = "".join(f'<td>{e(row.get(k))}</td>' if k == "set" else f'<td class="n">{e(row.get(k))}</td>' for k, _ in cols)
        out.append(f'<tr>{cells}</tr>')
    out.append('</tbody></table></div>')
    if report.get("fits"):
        out.append('<h2>Cost per constraint on a Pod (least squares)</h2><table id="scale-fits"><thead><tr>'
                   '<th scope="col">series</th><th scope="col">µs per constraint</th><th scope="col">intercept µs</th></tr></thead><tbody>')
        for how, f in report["fits"].items():
            f = f or {}
            out.append(f'<tr><td>{e(how)}</td><td class="n">{e(f.get("us_per_constraint"))}</td><td class="n">{e(f.get("intercept_us"))}</td></tr>')
        out.append('</tbody></table>')
    out += ['</main>', '</body>', '</html>']
    return "\n".join(out) + "\n"


def write_outputs(a, report):
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    if a.svg:
        chart = svg(curves_of(report))
        if chart:
            with open(a.svg, "w") as f:
                f.write(chart)
    if a.html:
        with open(a.html, "w") as f:
            f.write(page(report))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regate", default=os.path.join(ROOT, "target/release/regate"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 10, 50, 100, 300, 1000])
    ap.add_argument("--fit-sizes", type=int, nargs="+", default=[0, 25, 50, 100],
                    help="sizes of the single-cause series the per-constraint costs are fitted on")
    ap.add_argument("--iterations", type=int, default=50, help="timed passes per set (fewer for large sets)")
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "fixtures/bench"))
    ap.add_argument("--library", default=os.path.join(ROOT, "../shared/corpora/gatekeeper-library/library"),
                    help="the gatekeeper-library's library/ folder (skipped with a note when absent)")
    ap.add_argument("--unique-names", action="store_true",
                    help="keep one library constraint per name (for builds that identify constraints by name alone)")
    ap.add_argument("--policies-only", metavar="DIR", help="measure this set only (with the defaults)")
    ap.add_argument("--reloads", type=int, default=0, help="reloads per serve run, RSS read after each")
    ap.add_argument("--no-serve", action="store_true", help="skip startup time and RSS")
    ap.add_argument("--json", help="write the whole report here")
    ap.add_argument("--svg", help="draw the curve here")
    ap.add_argument("--html", help="write a self-contained page with the curve and the tables here")
    ap.add_argument("--from-json", metavar="FILE", help="draw a report saved by --json; measure nothing")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            report = json.load(f)
        a.json = None
        write_outputs(a, report)
        return
    if not os.path.exists(a.regate):
        sys.exit(f"{a.regate} not found: cargo build --release first, or pass --regate")
    work = tempfile.mkdtemp(prefix="regate-scale-")
    certs = os.path.join(work, "certs")
    subprocess.run([a.regate, "certs", "generate", "--out", certs], check=True, capture_output=True)
    report = {"sets": [], "fits": {}}

    def measure(label, path, defaults, n, iterations):
        row = {"set": label, "constraints": n, "defaults": defaults}
        row.update(judge(a.regate, path, a.fixtures, iterations, defaults))
        if not a.no_serve:
            row.update(serve(a.regate, path, certs, defaults, a.reloads))
        report["sets"].append(row)
        extra = "" if a.no_serve else f"  ready {row['ready_ms']:>7} ms  RSS {row['rss_mib']:>6} MiB"
        print(f"{label:<28} N={n:<5} pod {row['pod_mean_us'] or 0:>10.1f} µs (p99 {row['pod_p99_us'] or 0:>10.1f})"
              f"  mix {row['mix_mean_us']:>10.1f} µs{extra}", flush=True)
        return row

    def iters(n):
        return max(3, a.iterations // (1 + n // 100))

    try:
        if a.policies_only:
            measure(os.path.basename(a.policies_only.rstrip("/")), a.policies_only, True, 0, a.iterations)
        else:
            empty = os.path.join(work, "defaults")
            os.makedirs(empty)
            measure("defaults alone", empty, True, 0, a.iterations)
            for n in a.sizes:
                path = os.path.join(work, f"mix-{n}")
                write_set(path, [MIX[i % len(MIX)] for i in range(n)])
                measure("mixed (40% match)", path, True, n, iters(n))
            for how in ["match", "kind", "namespace", "labels"]:
                pts = []
                name = f"all {how}" if how == "match" else f"all excluded by {how}"
                sizes = a.fit_sizes if how == "match" else sorted(set(a.fit_sizes) | {300, 1000})
                for n in sizes:
                    path = os.path.join(work, f"{how}-{n}")
                    write_set(path, [how] * n)
                    saved, a.no_serve = a.no_serve, True
                    row = measure(name, path, True, n, iters(n))
                    a.no_serve = saved
                    pts.append((n, row["pod_mean_us"]))
                report["fits"][how] = fit(pts)
            if os.path.isdir(a.library):
                path = os.path.join(work, "library")
                templates, constraints = library_set(path, a.library, a.unique_names)
                row = measure(f"gatekeeper-library ({templates} templates)", path, True, constraints, a.iterations)
                report["library"] = row
            else:
                print(f"gatekeeper-library skipped: {a.library} not found", file=sys.stderr)
        print("cost per constraint on a Pod (least squares):")
        for how, f in report["fits"].items():
            print(f"  {how:<10} {f}")
        write_outputs(a, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
