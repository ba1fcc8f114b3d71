#!/usr/bin/env python3
"""The gatekeeper-library's templates, regate against OPA: the `--library` mode of
bench/opa_compare.py (runnable on its own too; same venv, which also needs PyYAML):

    target/opa-venv/bin/pip install pyyaml
    target/opa-venv/bin/python bench/opa_compare.py --library                # after cargo build --release
    target/opa-venv/bin/python bench/opa_compare.py --library --regate /tmp/regate-base --json
    target/opa-venv/bin/python bench/opa_gatekeeper.py [DIR] [--regate BIN] [--json]

DIR is the library folder (default ../shared/corpora/gatekeeper-library/library from the repo
root). For every suite test (a template and a sample constraint) that is not `skip`/`invalid`,
its cases' objects (cases with `inventory` or `skip` left out) are wrapped as AdmissionReview v1
CREATE requests (an AdmissionReview case object gives its own request, completed with uid, kind,
resource and operation where missing), and:

* regate: a temporary policy directory holding just the template and the constraint, a fixture
  directory with the reviews, `regate bench policies -o json`; each fixture's `mean_us` is the
  judge time of that review (constraint match and evaluation). Pairs the constraint's `match`
  excludes (regate evaluated nothing) are counted apart and not timed on either side.
* OPA: the template's Rego and libs, converted from v0 to v1 syntax (OPA 1.x parses only v1) by
  `to_rego_v1`, queried as `v := data.<package>.violation` with input
  `{"review": request, "parameters": spec.parameters (schema defaults applied, as regate does)}`;
  the input hand-off cost (a trivial rule on the same input) is subtracted as in opa_compare.py.
  OPA's violations are checked against the suite's assertions, and against regate's decision
  (allowed iff no violation); a template whose Rego does not convert or compile is listed, not
  timed, and every disagreement is printed.

`--objects DIR` adds, to every test, the objects in DIR (one JSON object per file) as cases
without assertions: regate's and OPA's decisions on them are compared, not timed against the
suite. The differential tests write such a directory of generated objects:

    REGATE_DIFFERENTIAL_DUMP=target/generated cargo test --test gatekeeper_backends generated
    target/opa-venv/bin/python bench/opa_gatekeeper.py --objects target/generated --iterations 3 --regate-iterations 1
"""
import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from opa_common import TRIVIAL, strip_managed_fields, timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LIBRARY = os.path.join(ROOT, "../shared/corpora/gatekeeper-library/library")
TARGET = "admission.k8s.gatekeeper.sh"
TRIVIAL_QUERY = "x := data.regate_bench_trivial.allow"


# --- YAML 1.2 booleans ------------------------------------------------------------------------

def yaml_loader():
    """PyYAML's SafeLoader with only true/false as booleans (YAML 1.2, as regate's serde_yaml
    reads suites: bare yes/no/on/off stay strings)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return Loader


def load_yaml(path, loader):
    import yaml
    with open(path) as f:
        docs = [d for d in yaml.load_all(f, Loader=loader) if d is not None]
    return docs[0] if docs else None


# --- Rego v0 -> v1 ----------------------------------------------------------------------------

class ConvertError(Exception):
    pass


def lex(src):
    """Tokens as (kind, start, end, after_newline): comments and whitespace dropped; strings
    (double-quoted with escapes, raw) kept whole so nothing inside them is touched."""
    toks, i, n, nl = [], 0, len(src), True
    while i < n:
        c = src[i]
        if c == "\n":
            nl, i = True, i + 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            while i < n and src[i] != "\n":
                i += 1
        elif c in "\"`":
            s, i = i, i + 1
            while i < n and src[i] != c:
                i += 2 if c == '"' and src[i] == "\\" else 1
            i = min(i + 1, n)
            toks.append(("str", s, i, nl))
            nl = False
        elif c.isalpha() or c == "_":
            s = i
            while i < n and (src[i].isalnum() or src[i] == "_"):
                i += 1
            toks.append(("ident", s, i, nl))
            nl = False
        elif c.isdigit():
            s = i
            while i < n and (src[i].isalnum() or src[i] in "._"):
                i += 1
            toks.append(("num", s, i, nl))
            nl = False
        else:
            s = i
            i += 2 if src[i:i + 2] in (":=", "==", "!=", "<=", ">=") else 1
            toks.append(("punct", s, i, nl))
            nl = False
    return toks


OPEN, CLOSE = "([{", ")]}"
# Keywords after which a `{` opens a literal, not a body (`else {` and `if {` do open bodies).
NOT_A_VALUE_END = {"contains", "in", "not", "some", "with", "as", "every", "default", "package", "import"}


def to_rego_v1(src):
    """Classic (v0) Rego to v1, rule by rule at the top level:

    * `name[x] {`                → `name contains x if {`       (partial set rules)
    * `name {`, `name = v {`, `name[k] = v {`, `f(x) {`, `f(x) = y {`  → `… if {`
    * `} else = v {`, `} else {` → `… if {`
    * `head { A } { B }`         → the head written out again before `{ B }`
    * `package`, `import`, `default` and body-less rules are left as they are, and so is a head
      that already has `if`.
    A body's `{` is told from an object/set literal in a head by what precedes it (a name, a
    literal or a closing bracket, not an operator). Comments and strings are never touched;
    only insertions and the `[`/`]` of set heads change, so the lines stay where they were
    (bar the written-out heads)."""
    toks = lex(src)
    text = lambda t: src[t[1]:t[2]]
    edits = []  # (start, end, replacement), non-overlapping

    def match_close(j):
        depth = 0
        for k in range(j, len(toks)):
            s = text(toks[k])
            if toks[k][0] == "punct" and s in OPEN:
                depth += 1
            elif toks[k][0] == "punct" and s in CLOSE:
                depth -= 1
                if depth == 0:
                    return k
        raise ConvertError(f"unbalanced bracket at offset {toks[j][1]}")

    def statement_end(i):
        """Index of the first token after the body-less statement starting at i."""
        depth, k = 0, i
        while k < len(toks):
            if k > i and depth == 0 and toks[k][3]:
                return k
            s = text(toks[k])
            if toks[k][0] == "punct" and s in OPEN:
                depth += 1
            elif toks[k][0] == "punct" and s in CLOSE:
                depth -= 1
            k += 1
        return k

    def find_body(i):
        """Index of the body `{` of the head starting at i, or None (a body-less rule)."""
        depth, k = 0, i
        while k < len(toks):
            kind, s = toks[k][0], text(toks[k])
            if k > i and depth == 0 and toks[k][3]:
                return None
            if kind == "punct" and s == "{" and depth == 0 and k > i:
                pk, ps = toks[k - 1][0], text(toks[k - 1])
                if (pk in ("str", "num") or ps in (")", "]", "}")
                        or (pk == "ident" and ps not in NOT_A_VALUE_END)):
                    return k
            if kind == "punct" and s in OPEN:
                depth += 1
            elif kind == "punct" and s in CLOSE:
                depth -= 1
            k += 1
        return None

    def head_edits(i, body):
        """Edits turning the head toks[i:body] into a v1 head, and the head's v1 text."""
        head = toks[i:body]
        words = [text(t) for t in head if t[0] == "ident"]
        if "if" in words:
            return [], src[head[0][1]:toks[body][1]]
        out = []
        # A partial set rule: `name[term]` (the bracket closing right before the body), no value.
        if (len(head) >= 4 and head[0][0] == "ident" and text(head[1]) == "["
                and match_close(i + 1) == body - 1 and "contains" not in words):
            out += [(head[1][1], head[1][2], " contains "), (head[-1][1], head[-1][2], "")]
        out.append((toks[body][1], toks[body][1], "if "))
        # The head's v1 text, for a written-out copy.
        s, pos = "", head[0][1]
        for a, b, r in out:
            s += src[pos:a] + r
            pos = b
        return out, s + src[pos:toks[body][1]]

    i = 0
    while i < len(toks):
        first = text(toks[i])
        if toks[i][0] == "ident" and first in ("package", "import", "default"):
            i = statement_end(i)
            continue
        body = find_body(i)
        if body is None:
            i = statement_end(i)
            continue
        eds, head_text = head_edits(i, body)
        edits += eds
        end = match_close(body)
        while end + 1 < len(toks):
            nxt = toks[end + 1]
            if text(nxt) == "else":
                b = find_body(end + 1)
                if b is None:  # `else = v` without a body
                    end = statement_end(end + 1) - 1
                    break
                if "if" not in [text(t) for t in toks[end + 1:b]]:
                    edits.append((toks[b][1], toks[b][1], "if "))
                end = match_close(b)
            elif text(nxt) == "{" and nxt[0] == "punct":
                edits.append((nxt[1], nxt[1], f"\n{head_text}"))
                end = match_close(end + 1)
            else:
                break
        i = end + 1
    edits.sort()
    out, pos = [], 0
    for a, b, r in edits:
        out.append(src[pos:a] + r)
        pos = b
    out.append(src[pos:])
    return "".join(out)


def package_of(rego):
    m = re.search(r"^\s*package\s+([\w.]+)", rego, re.M)
    if not m:
        raise ConvertError("no package line")
    return m.group(1)


# --- The library ------------------------------------------------------------------------------

def target_rego(template):
    """(rego, libs) of the admission target: `rego`/`libs`, or the `Rego` engine of `code`."""
    for t in (template.get("spec") or {}).get("targets") or []:
        if t.get("target") != TARGET:
            continue
        if t.get("rego"):
            return t["rego"], list(t.get("libs") or [])
        for c in t.get("code") or []:
            if c.get("engine") == "Rego":
                src = c.get("source") or {}
                if src.get("rego"):
                    return src["rego"], list(src.get("libs") or [])
    return None, []


def apply_defaults(schema, value):
    """schema.rs apply_defaults: `default`s of absent properties, recursively."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, prop in props.items():
            if key not in value and isinstance(prop, dict) and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                apply_defaults(prop, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, child in value.items():
                if key not in props:
                    apply_defaults(extra, child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)


def plural(kind):
    """review.rs plural()."""
    lower = kind.lower()
    if lower == "endpoints":
        return lower
    if lower in ("networkpolicy", "podsecuritypolicy", "policy"):
        return lower[:-1] + "ies"
    if lower == "ingress":
        return "ingresses"
    if lower.endswith("s"):
        return lower + "es"
    if lower.endswith("y") and not lower.endswith("ay") and not lower.endswith("ey"):
        return lower[:-1] + "ies"
    return lower + "s"


def gvk(obj):
    api = (obj or {}).get("apiVersion") or "v1"
    group, _, version = api.rpartition("/")
    return group, version, (obj or {}).get("kind") or ""


def review_request(obj, uid):
    """The AdmissionRequest regate and OPA both see for a case object."""
    if obj.get("kind") == "AdmissionReview" and str(obj.get("apiVersion", "")).startswith("admission.k8s.io/"):
        req = copy.deepcopy(obj.get("request") or {})
        subject = req.get("object") if isinstance(req.get("object"), dict) else req.get("oldObject") or {}
        group, version, kind = gvk(subject)
        if not req.get("uid"):
            req["uid"] = uid
        req.setdefault("kind", {"group": group, "version": version, "kind": kind})
        req.setdefault("resource", {"group": group, "version": version, "resource": plural(kind)})
        req.setdefault("operation", "CREATE")
        return req
    group, version, kind = gvk(obj)
    meta = obj.get("metadata") or {}
    return {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": plural(kind)},
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace") or "default",
        "operation": "CREATE",
        "userInfo": {"username": "bench"},
        "object": copy.deepcopy(obj),
    }


def assertions_hold(assertions, messages):
    """suite.rs Assertion::check over all assertions; None when they hold, else why not."""
    if not assertions:
        assertions = [{"violations": "no"}]
    for a in assertions:
        want = a.get("violations", "yes")
        rx = a.get("message")
        n = sum(1 for m in messages if rx is None or re.search(rx, m))
        ok = (n >= 1) if want == "yes" else (n == 0) if want == "no" else (n == int(want))
        if not ok:
            return f"{n} violations{f' matching {rx!r}' if rx else ''}, want {want}"
    return None


def collect(library, loader, log):
    """Templates as {name: {"dir", "template", "rego", "libs", "tests": [...]}}; skipped ones
    in log as (template, why)."""
    out = {}
    for group in sorted(os.listdir(library)):
        gdir = os.path.join(library, group)
        if not os.path.isdir(gdir):
            continue
        for name in sorted(os.listdir(gdir)):
            d = os.path.join(gdir, name)
            suite_path = os.path.join(d, "suite.yaml")
            if not os.path.isfile(suite_path):
                continue
            key = f"{group}/{name}"
            suite = load_yaml(suite_path, loader) or {}
            tests, skipped = [], defaultdict(int)
            for test in suite.get("tests") or []:
                if test.get("skip") or test.get("invalid"):
                    skipped["invalid" if test.get("invalid") else "skip"] += len(test.get("cases") or []) or 1
                    continue
                cases = []
                for case in test.get("cases") or []:
                    if case.get("skip"):
                        skipped["skip"] += 1
                    elif case.get("inventory"):
                        skipped["inventory"] += 1
                    else:
                        cases.append(case)
                if cases:
                    tests.append({"name": test.get("name", ""), "template": os.path.join(d, test["template"]),
                                  "constraint": os.path.join(d, test["constraint"]), "cases": cases})
            for why, n in sorted(skipped.items()):
                log.append((key, f"{n} case(s) left out: {why}"))
            if not tests:
                log.append((key, "no case to time"))
                continue
            templates = {t["template"] for t in tests}
            if len(templates) != 1:
                log.append((key, f"tests use {len(templates)} templates; only the first is timed"))
            tpath = tests[0]["template"]
            template = load_yaml(tpath, loader)
            rego, libs = target_rego(template)
            if rego is None:
                log.append((key, f"no Rego for target {TARGET} (CEL only)"))
                continue
            schema = (((template.get("spec") or {}).get("crd") or {}).get("spec") or {}).get(
                "validation", {}).get("openAPIV3Schema") or {}
            out[key] = {"dir": d, "template_path": tpath, "rego": rego, "libs": libs, "schema": schema,
                        "tests": [t for t in tests if t["template"] == tpath]}
    return out


# --- regate -----------------------------------------------------------------------------------

def run_regate(args, tpl, test, loader, work):
    """Writes the policy and fixture dirs for one test, runs regate; returns
    (pairs as [{case, request, parameters, regate_us, evaluated, allowed, assertions}], error)."""
    pol = os.path.join(work, "policies")
    fix = os.path.join(work, "fixtures")
    for p in (pol, fix):
        shutil.rmtree(p, ignore_errors=True)
        os.makedirs(p)
    shutil.copy(tpl["template_path"], os.path.join(pol, "template.yaml"))
    shutil.copy(test["constraint"], os.path.join(pol, "constraint.yaml"))
    constraint = load_yaml(test["constraint"], loader) or {}
    spec = constraint.get("spec") or {}
    params = copy.deepcopy(spec.get("parameters") or {})
    apply_defaults(tpl["schema"], params)
    pairs = {}
    for n, case in enumerate(test["cases"] + args.extra_cases):
        # A generated case carries its object, read once; a suite case names its file.
        obj = case["value"] if "value" in case else load_yaml(os.path.join(tpl["dir"], case["object"]), loader)
        if not isinstance(obj, dict):
            continue
        req = review_request(obj, f"bench-{n:04}")
        review = strip_managed_fields({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
        fname = f"{n:03}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', case.get('name') or 'case')}.json"
        with open(os.path.join(fix, fname), "w") as f:
            json.dump(review, f)
        pairs[fname] = {"case": case.get("name", ""), "request": review["request"], "parameters": params,
                        "assertions": case.get("assertions") or [], "generated": case.get("generated", False),
                        "action": spec.get("enforcementAction", "deny")}
    cmd = [args.regate, "bench", "policies", "-o", "json", "--policies", pol, "-f", fix,
           "--iterations", str(args.regate_iterations)]
    if args.strategy:
        cmd += ["--strategy", args.strategy]
    if args.cpu:
        cmd = ["taskset", "-c", args.cpu, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "REGATE_LOG_LEVEL": "warn", "REGATE_LOG_FORMAT": "json"})
    if out.returncode not in (0, 1):
        return [], f"regate exited {out.returncode}: {out.stderr.strip()[-600:]}"
    report = json.loads(out.stdout)
    warnings = [l for l in out.stderr.splitlines() if '"WARN"' in l or '"ERROR"' in l or l.startswith("error")]
    if warnings:
        return [], "regate warned: " + " | ".join(warnings)[-600:]
    for fx in report["fixtures"]:
        p = pairs.get(fx["name"])
        if p is not None:
            p.update(regate_us=fx["mean_us"], evaluated=bool(fx.get("policies")), allowed=fx.get("allowed"),
                     failed=bool(fx.get("failed")))
    return [dict(p, fixture=k) for k, p in sorted(pairs.items()) if "regate_us" in p], None


# --- OPA --------------------------------------------------------------------------------------

def opa_engine(OpaEngine, tpl):
    """An engine holding the converted modules; (engine, package) or raises ConvertError."""
    e = OpaEngine()
    pieces = [("template.rego", tpl["rego"])] + [(f"lib{i}.rego", lib) for i, lib in enumerate(tpl["libs"])]
    for name, src in pieces:
        v1 = to_rego_v1(src)
        try:
            e.add_policy(name, v1)
        except Exception as ex:  # noqa: BLE001 - OpaError: parse errors of the converted module
            raise ConvertError(f"{name}: {ex}".strip()[:800]) from None
    e.add_policy("regate_bench_trivial.rego", TRIVIAL)
    return e, package_of(tpl["rego"])


def opa_messages(e, query, value):
    rs = e.eval_query(query, value)
    vs = rs[0].get("v") if rs else []
    return sorted(str((v or {}).get("msg", "")) for v in vs or [])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("library", nargs="?", default=DEFAULT_LIBRARY, help="the gatekeeper-library's library/")
    ap.add_argument("--regate", default=os.path.join(ROOT, "target/release/regate"))
    ap.add_argument("--regate-iterations", type=int, default=500)
    ap.add_argument("--iterations", type=int, default=300, help="OPA evaluations per pair and query")
    ap.add_argument("--strategy", default="", help="regate's --strategy (default: regate's own)")
    ap.add_argument("--cpu", default="", help="taskset CPU list for the regate runs")
    ap.add_argument("--only", default="", help="regex on group/template: time only these")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--objects", default="", help="a directory of objects (JSON) judged by every test too")
    args = ap.parse_args(argv)
    args.extra_cases = []
    if args.objects:
        for name in sorted(os.listdir(args.objects)):
            path = os.path.abspath(os.path.join(args.objects, name))
            if not name.endswith(".json"):
                continue
            with open(path) as f:
                obj = json.load(f)
            meta = obj.get("metadata") if isinstance(obj, dict) else None
            # A request names the object with strings: others are not reviews an apiserver sends.
            if not isinstance(meta, dict) or not all(
                    isinstance(v, str) for v in (obj.get("kind"), obj.get("apiVersion"), meta.get("name", ""),
                                                 meta.get("namespace", ""), meta.get("generateName", ""))):
                continue
            args.extra_cases.append({"name": f"generated {name}", "generated": True, "value": obj})

    try:
        from opa_bindings import OpaEngine
    except ImportError:
        sys.exit("opa_bindings not importable: see the install lines at the top of opa_compare.py")
    try:
        loader = yaml_loader()
    except ImportError:
        sys.exit("PyYAML missing: target/opa-venv/bin/pip install pyyaml")
    if not os.path.isdir(args.library):
        sys.exit(f"{args.library}: not found")

    log = []  # (template, note) for templates or cases left out
    problems = []  # (template, what) for conversion failures and disagreements
    templates = collect(args.library, loader, log)
    if args.only:
        templates = {k: v for k, v in templates.items() if re.search(args.only, k)}
        log = [(k, w) for k, w in log if re.search(args.only, k)]
    rows = []
    unmatched_total = 0
    work = tempfile.mkdtemp(prefix="regate-opa-gk-")
    try:
        for key, tpl in templates.items():
            print(f"{key} …", file=sys.stderr, flush=True)
            try:
                e, package = opa_engine(OpaEngine, tpl)
            except ConvertError as ex:
                problems.append((key, f"not converted to Rego v1 / not compiled by OPA: {ex}"))
                continue
            query = f"v := data.{package}.violation"
            d = {"regate": [], "opa": [], "opa_gross": [], "handoff": [], "unmatched": 0, "disagree": 0,
                 "both_failed": 0}
            for test in tpl["tests"]:
                pairs, err = run_regate(args, tpl, test, loader, work)
                if err:
                    problems.append((key, f"{test['name']}: {err}"))
                    continue
                for p in pairs:
                    label = f"{test['name']}/{p['case']}"
                    if not p["evaluated"]:
                        d["unmatched"] += 1
                        continue
                    value = {"review": p["request"], "parameters": p["parameters"]}
                    try:
                        msgs = opa_messages(e, query, value)
                    except Exception as ex:  # noqa: BLE001 - OpaError at evaluation (compile errors)
                        # OPA's builtins fail strictly here (a type error is an error); regate's
                        # interpreter fails the policy on the same errors: agreement.
                        if not p.get("failed"):
                            problems.append((key, f"{label}: OPA evaluation failed, regate did not: {str(ex)[:600]}"))
                            d["disagree"] += 1
                        else:
                            d["both_failed"] += 1
                        continue
                    if p.get("failed"):
                        problems.append((key, f"{label}: regate's evaluation failed, OPA's did not ({msgs})"))
                        d["disagree"] += 1
                        continue
                    why = None if p["generated"] else assertions_hold(p["assertions"], msgs)
                    regate_denies = p["allowed"] is False
                    opa_denies = bool(msgs) and p["action"] == "deny"
                    if why:
                        problems.append((key, f"{label}: OPA vs suite: {why}; OPA messages {msgs}"))
                    if regate_denies != opa_denies:
                        problems.append((key, f"{label}: regate {'denies' if regate_denies else 'allows'}, "
                                              f"OPA {'denies' if opa_denies else 'allows'} ({msgs})"))
                    if why or regate_denies != opa_denies:
                        d["disagree"] += 1
                    for _ in range(20):
                        e.eval_query(query, value)
                        e.eval_query(TRIVIAL_QUERY, value)
                    gross, handoff = [], []
                    for _ in range(3):
                        gross.append(timed(e, query, value, args.iterations // 3 or 1))
                        handoff.append(timed(e, TRIVIAL_QUERY, value, args.iterations // 3 or 1))
                    g, h = min(gross), min(handoff)
                    d["regate"].append(p["regate_us"])
                    d["opa_gross"].append(g)
                    d["handoff"].append(h)
                    d["opa"].append(max(g - h, 0.0))
            unmatched_total += d["unmatched"]
            if d["both_failed"]:
                log.append((key, f"{d['both_failed']} pair(s) failed on both engines (an error, as OPA's is)"))
            if d["unmatched"]:
                log.append((key, f"{d['unmatched']} pair(s) excluded by the constraint's match, not timed"))
            if not d["regate"]:
                continue
            mean = lambda xs: sum(xs) / len(xs)
            r, o = mean(d["regate"]), mean(d["opa"])
            rows.append({
                "template": key, "pairs": len(d["regate"]), "disagreements": d["disagree"],
                "regate_us": round(r, 2), "opa_us": round(o, 2),
                "opa_gross_us": round(mean(d["opa_gross"]), 2), "opa_handoff_us": round(mean(d["handoff"]), 2),
                "speedup": round(o / r, 2) if r > 0 else None,
                "_r": d["regate"], "_o": d["opa"],
            })
    finally:
        shutil.rmtree(work, ignore_errors=True)

    all_r = [x for row in rows for x in row.pop("_r")]
    all_o = [x for row in rows for x in row.pop("_o")]
    sum_r = sum(row["regate_us"] for row in rows)
    sum_o = sum(row["opa_us"] for row in rows)
    summary = {
        "library": os.path.normpath(args.library),
        "templates": rows,
        "summed_over_templates": {"templates": len(rows), "regate_us": round(sum_r, 2), "opa_us": round(sum_o, 2),
                                  "speedup": round(sum_o / sum_r, 2) if sum_r else None},
        "all_pairs": {"pairs": len(all_r), "unmatched_pairs": unmatched_total,
                      "regate_us": round(sum(all_r) / len(all_r), 2) if all_r else None,
                      "opa_us": round(sum(all_o) / len(all_o), 2) if all_o else None,
                      "speedup": round(sum(all_o) / sum(all_r), 2) if all_r else None},
        "min_speedup": min((x["speedup"] for x in rows if x["speedup"] is not None), default=None),
        "problems": [{"template": t, "problem": w} for t, w in problems],
        "notes": [{"template": t, "note": w} for t, w in log],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'TEMPLATE':<44} {'PAIRS':>5} {'REGATE µs':>10} {'OPA µs':>10} {'(gross':>9} {'handoff)':>9} {'OPA/REGATE':>10}")
    for x in rows:
        flag = f"  ({x['disagreements']} disagree)" if x["disagreements"] else ""
        print(f"{x['template']:<44} {x['pairs']:>5} {x['regate_us']:>10.2f} {x['opa_us']:>10.2f} "
              f"{x['opa_gross_us']:>9.2f} {x['opa_handoff_us']:>9.2f} {x['speedup']:>9.2f}x{flag}")
    s, a = summary["summed_over_templates"], summary["all_pairs"]
    print(f"{'sum over templates':<44} {s['templates']:>5} {s['regate_us']:>10.2f} {s['opa_us']:>10.2f} "
          f"{'':>9} {'':>9} {s['speedup']:>9.2f}x")
    print(f"{'mean over pairs':<44} {a['pairs']:>5} {a['regate_us']:>10.2f} {a['opa_us']:>10.2f} "
          f"{'':>9} {'':>9} {a['speedup']:>9.2f}x")
    print(f"slowest ratio: {summary['min_speedup']}x; target: regate at least 3x faster summed over the templates")
    if log:
        print("\nleft out:")
        for t, w in log:
            print(f"  {t}: {w}")
    if problems:
        print("\nconversion failures and disagreements:")
        for t, w in problems:
            print(f"  {t}: {w}")


if __name__ == "__main__":
    main()
