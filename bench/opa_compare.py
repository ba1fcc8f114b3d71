#!/usr/bin/env python3
"""Per-policy evaluation time: regate (regorus, as `regate bench policies` measures it) against
OPA's own engine on the same Rego, the same inputs and the same data.

OPA is the Go engine embedded in the PyPI package `opa-golib-python-bindings` (OPA v1.20). It
declares Python 3.14; on 3.11 it installs with `--ignore-requires-python`:

    python3.11 -m venv target/opa-venv
    target/opa-venv/bin/pip install --ignore-requires-python opa-golib-python-bindings
    target/opa-venv/bin/python bench/opa_compare.py            # after cargo build --release

For every (policy, fixture) pair that `regate bench policies -o json` timed, OPA evaluates the
same output rules (deny, and warn where the policy has one) as one prepared query (the bindings
keep a prepared query per query string), with `data.regate.environment` and
`data.regate.parameters` as regate resolves them, on the input regorus sees (the AdmissionReview,
`managedFields` dropped as regate drops it). The bindings hand input over as JSON, which OPA then
parses; that cost is measured with a trivial rule (`allow := true`) on the same input, in the
same engine, and subtracted, so it is not counted against OPA.

Prints a table per policy (regate mean, OPA net mean, OPA/regate), and with --json one object.

`--library [DIR]` runs the same comparison over the gatekeeper-library's templates instead
(DIR defaults to ../shared/corpora/gatekeeper-library/library; the venv also needs PyYAML); it
is bench/opa_gatekeeper.py, whose docstring says how the suites' cases become inputs and how the
templates' v0 Rego is converted for OPA:

    target/opa-venv/bin/pip install pyyaml
    target/opa-venv/bin/python bench/opa_compare.py --library [DIR] [--regate BIN] [--json]
"""
import argparse
import glob
import json
import os
import subprocess
import sys
from collections import defaultdict

from opa_common import TRIVIAL, strip_managed_fields, timed

def load_report(args):
    if args.report:
        with open(args.report) as f:
            return json.load(f)
    cmd = [args.regate, "bench", "policies", "-o", "json", "--policies", args.policies,
           "-f", args.fixtures, "--iterations", str(args.regate_iterations)]
    if args.cpu:
        cmd = ["taskset", "-c", args.cpu, *cmd]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def libraries(policies_dir):
    return [p for p in sorted(glob.glob(os.path.join(policies_dir, "lib", "*.rego")))
            if not p.endswith("_test.rego")]


def policy_file(policies_dir, row):
    name = os.path.basename(row["file"].replace("embedded:", ""))
    path = os.path.join(policies_dir, name)
    if not os.path.exists(path):
        sys.exit(f"{path}: not found (policy {row['name']})")
    return path


def library_argv(argv):
    """opa_gatekeeper.py's arguments from ours: `--library[=DIR]` becomes its positional DIR."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--library="):
            out.append(a.split("=", 1)[1])
        elif a == "--library":
            if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                out.append(argv[i + 1])
                i += 1
        else:
            out.append(a)
        i += 1
    return out


def main():
    argv = sys.argv[1:]
    if any(a == "--library" or a.startswith("--library=") for a in argv) and not {"-h", "--help"} & set(argv):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import opa_gatekeeper
        return opa_gatekeeper.main(library_argv(argv))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", nargs="?", metavar="DIR",
                    help="compare over the gatekeeper-library's templates (bench/opa_gatekeeper.py; "
                         "its options are --regate, --regate-iterations, --iterations, --strategy, "
                         "--cpu, --only, --json)")
    ap.add_argument("--regate", default="target/release/regate")
    ap.add_argument("--policies", default="policies")
    ap.add_argument("--fixtures", default="fixtures/bench")
    ap.add_argument("--report", help="a saved `regate bench policies -o json` (default: run it)")
    ap.add_argument("--regate-iterations", type=int, default=500)
    ap.add_argument("--iterations", type=int, default=300, help="OPA evaluations per pair and query")
    ap.add_argument("--cpu", default="", help="taskset CPU list for the regate run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    try:
        from opa_bindings import OpaEngine
    except ImportError:
        sys.exit("opa_bindings not importable: see the install lines at the top of this script")

    report = load_report(args)
    if report.get("mismatches"):
        print(f"warning: regate decisions differ from expected.yaml: {report['mismatches']}", file=sys.stderr)
    inputs = {}
    for name in {p["fixture"] for p in report["pairs"]}:
        with open(os.path.join(args.fixtures, name)) as f:
            inputs[name] = strip_managed_fields(json.load(f))
    libs = [(p, open(p).read()) for p in libraries(args.policies)]
    rows = {r["name"]: r for r in report["policies"]}

    engines = {}

    def engine_for(policy, env):
        key = (policy, env)
        if key not in engines:
            row = rows[policy]
            e = OpaEngine()
            for path, text in libs:
                e.add_policy(path, text)
            path = policy_file(args.policies, row)
            e.add_policy(path, open(path).read())
            e.add_policy("regate_bench_trivial.rego", TRIVIAL)
            e.add_data({"regate": {"environment": env, "parameters": row["parameters"].get(env, {})}})
            engines[key] = e
        return engines[key]

    per_policy = defaultdict(lambda: {"regate": [], "opa": [], "opa_gross": [], "handoff": []})
    for pair in report["pairs"]:
        policy, env = pair["policy"], pair["environment"]
        row = rows[policy]
        rules = row.get("rules") or ["deny"]
        query = "; ".join(f"{r} := {row['package']}.{r}" for r in rules)
        e = engine_for(policy, env)
        value = inputs[pair["fixture"]]
        for _ in range(20):
            e.eval_query(query, value)
            e.eval_query("x := data.regate_bench_trivial.allow", value)
        # Interleave the two measurements so drift in machine load hits both alike.
        gross, handoff = [], []
        for _ in range(3):
            gross.append(timed(e, query, value, args.iterations // 3 or 1))
            handoff.append(timed(e, "x := data.regate_bench_trivial.allow", value, args.iterations // 3 or 1))
        g, h = min(gross), min(handoff)
        d = per_policy[policy]
        d["regate"].append(pair["mean_us"])
        d["opa_gross"].append(g)
        d["handoff"].append(h)
        d["opa"].append(max(g - h, 0.0))

    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
    out = []
    for policy in sorted(per_policy):
        d = per_policy[policy]
        r, o = mean(d["regate"]), mean(d["opa"])
        out.append({
            "policy": policy,
            "pairs": len(d["regate"]),
            "regate_us": round(r, 2),
            "opa_us": round(o, 2),
            "opa_gross_us": round(mean(d["opa_gross"]), 2),
            "opa_handoff_us": round(mean(d["handoff"]), 2),
            "speedup": round(o / r, 2) if r > 0 else None,
        })
    all_r = [x for d in per_policy.values() for x in d["regate"]]
    all_o = [x for d in per_policy.values() for x in d["opa"]]
    summary = {
        "strategy": report.get("strategy"),
        "policies": out,
        "all_pairs": {"pairs": len(all_r), "regate_us": round(mean(all_r), 2), "opa_us": round(mean(all_o), 2),
                      "speedup": round(mean(all_o) / mean(all_r), 2) if all_r else None},
        "min_speedup": min((p["speedup"] for p in out if p["speedup"] is not None), default=None),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'POLICY':<32} {'PAIRS':>5} {'REGATE µs':>10} {'OPA µs':>10} {'(gross':>9} {'handoff)':>9} {'OPA/REGATE':>10}")
    for p in out:
        print(f"{p['policy']:<32} {p['pairs']:>5} {p['regate_us']:>10.2f} {p['opa_us']:>10.2f} "
              f"{p['opa_gross_us']:>9.2f} {p['opa_handoff_us']:>9.2f} {p['speedup']:>9.2f}x")
    a = summary["all_pairs"]
    print(f"{'all pairs':<32} {a['pairs']:>5} {a['regate_us']:>10.2f} {a['opa_us']:>10.2f} {'':>9} {'':>9} {a['speedup']:>9.2f}x")
    print(f"slowest ratio: {summary['min_speedup']}x (target: at least 3x)")


if __name__ == "__main__":
    main()
