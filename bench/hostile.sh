#!/usr/bin/env bash
# Memory under hostile load (issue 15): a fresh `regate serve` with the default policies and
# limits, then bench/hostile.py against it: 16 clients sending worst-shape 8 MiB reviews
# (`[{}, {}, …]` inside a Pod) and the largest worst-shape body the server parses, an HTTP/2
# flood of unfinished bodies (8 connections × 32 streams declaring just under 8 MiB), and an
# ordinary review every 100 ms, timed from a process of its own. Targets: peak RSS ≤ 512 MiB,
# RSS back within 20% of idle afterwards, every ordinary review answered (200) within 100 ms.
#
#   bench/hostile.sh                                  # target/release/regate, 20 s of attack
#   REGATE=/path/to/other/regate SECONDS_OF_ATTACK=10 bench/hostile.sh
#   MEMORY_CEILING_MIB=256 bench/hostile.sh           # the evaluation memory ceiling under the chart
#
# Needs a release build (cargo build --release), curl, and Python 3 with the h2 package
# (pip install h2). Prints hostile.py's JSON report on stdout, with `uptime` before and after on
# stderr. The server is killed if its RSS passes KILL_ABOVE_MIB (6144): a safety net when
# measuring a build without the budgets on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."

REGATE=${REGATE:-target/release/regate}
SECONDS_OF_ATTACK=${SECONDS_OF_ATTACK:-20}
PORT=${PORT:-18543}
METRICS_PORT=${METRICS_PORT:-19190}
POLICIES=${POLICIES:-policies}
KILL_ABOVE_MIB=${KILL_ABOVE_MIB:-6144}
H2_CONNECTIONS=${H2_CONNECTIONS:-8}
# The chart's 512 Mi limit makes the ceiling 256 MiB; unset, it is half this machine's memory.
MEMORY_CEILING_MIB=${MEMORY_CEILING_MIB:-}
BIG=${BIG:-16}
# 1: time the ordinary reviews from a thread of the attacking Python process, as the figures
# before 2026-12-06 16:00 did (that thread's wait for the GIL then counts as latency).
PROBE_IN_PROCESS=${PROBE_IN_PROCESS:-0}

python3 -c 'import h2' 2>/dev/null || { echo "bench/hostile.sh needs the Python h2 package: pip install h2" >&2; exit 2; }

work=$(mktemp -d -t regate-hostile-XXXXXX)
server_pid=
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$REGATE" certs generate --out "$work/certs" >/dev/null
"$REGATE" serve --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
    --policies "$POLICIES" --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" \
    --log-level warn ${MEMORY_CEILING_MIB:+--memory-ceiling-mib "$MEMORY_CEILING_MIB"} \
    2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 1 400); do
    curl -sf -o /dev/null "http://127.0.0.1:$METRICS_PORT/readyz" && break
    sleep 0.025
done

probe=()
[[ "$PROBE_IN_PROCESS" == 1 ]] && probe=(--probe-in-process)
echo "uptime before: $(uptime)" >&2
python3 bench/hostile.py --port "$PORT" --ca "$work/certs/ca.crt" --pid "$server_pid" \
    --seconds "$SECONDS_OF_ATTACK" --big "$BIG" --h2-connections "$H2_CONNECTIONS" \
    --kill-above-mib "$KILL_ABOVE_MIB" "${probe[@]}"
echo "uptime after: $(uptime)" >&2
if kill -0 "$server_pid" 2>/dev/null; then
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^regate_(memory_budget|overload)' >&2 || true
fi
grep -c 'WARN' "$work/serve.log" 2>/dev/null | sed 's/^/WARN log lines: /' >&2 || true
