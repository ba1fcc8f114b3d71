#!/usr/bin/env bash
# Regression guard (issue 7): the instructions it takes to judge the fixture mix once, counted
# by valgrind's callgrind, which machine noise does not move.
#
#   bench/callgrind.sh           # prints the count
#   bench/callgrind.sh --check   # fails when it exceeds the baseline in docs/BENCHMARKS.md by >2%
#
# What is counted: one timed pass of `regate bench policies` over fixtures/bench (parse each
# AdmissionReview into the value policies read, then judge it with the default policies: every
# matching policy, the decision), after one warm-up pass that fills the per-thread engines. Startup
# (loading and compiling the policies) and the warm-up are not counted (--toggle-collect).
# Needs valgrind and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

REGATE=${REGATE:-target/release/regate}
FIXTURES=${FIXTURES:-fixtures/bench}
POLICIES=${POLICIES:-policies}
TOLERANCE=${TOLERANCE:-0.02}

out=$(mktemp -t regate-callgrind-XXXXXX)
trap 'rm -f "$out" "$out.log"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*timed_pass*' \
    "$REGATE" bench policies --iterations 1 --warmup 1 -f "$FIXTURES" --policies "$POLICIES" \
    >/dev/null 2>"$out.log" || { cat "$out.log" >&2; exit 1; }
count=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
if [[ -z "$count" || "$count" == 0 ]]; then
    echo "no instructions collected (is the binary stripped of symbols?)" >&2
    exit 1
fi

if [[ "${1:-}" == "--check" ]]; then
    baseline=$(sed -n 's/.*callgrind-baseline: \([0-9]*\).*/\1/p' docs/BENCHMARKS.md | head -n1)
    if [[ -z "$baseline" ]]; then
        echo "no <!-- callgrind-baseline: N --> in docs/BENCHMARKS.md" >&2
        exit 1
    fi
    python3 - "$count" "$baseline" "$TOLERANCE" <<'EOF'
import sys
count, baseline, tolerance = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
change = count / baseline - 1
print(f"instructions: {count:,} (baseline {baseline:,}, {change:+.2%})")
if change > tolerance:
    sys.exit(f"regression: more than {tolerance:.0%} over the baseline")
EOF
else
    echo "$count"
fi
