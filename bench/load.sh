#!/usr/bin/env bash
# The admission figures of docs/BENCHMARKS.md, in one run (issue 7):
#   1. the echo floor (`regate bench echo-server`): maximum throughput, closed loop;
#   2. `regate serve` with the default policies: maximum throughput, closed loop, and the ratio;
#   3. a fresh `regate serve`: open loop at $RATE req/s, then its peak RSS (VmHWM).
# Server and load generator are pinned to different cores; everything listens on 127.0.0.1.
#
#   bench/load.sh                      # 10 s per measurement
#   DURATION=5s RATE=1000 CONCURRENCY=32 HTTP2=1 bench/load.sh
#
# Both sides are also measured with wrk (Debian package `wrk`; an independent load tool, one core,
# HTTP/1.1 keep-alive, $WRK_CONNECTIONS connections) when it is installed: `wrk_serve_over_echo`.
# Needs a release build (cargo build --release) and curl. Prints one JSON object on stdout;
# each load report goes to stderr as it completes.
set -euo pipefail
cd "$(dirname "$0")/.."

REGATE=${REGATE:-target/release/regate}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
RATE=${RATE:-1000}
CONCURRENCY=${CONCURRENCY:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
FIXTURES=${FIXTURES:-fixtures/bench}
POLICIES=${POLICIES:-policies}
PORT=${PORT:-18443}
METRICS_PORT=${METRICS_PORT:-19090}
ECHO_PORT=${ECHO_PORT:-18444}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
PROTO=()
[[ -n "${HTTP2:-}" ]] && PROTO=(--http2)
# SHADOW=DIR: every `regate serve` also judges each request with the candidate set in DIR
# (shadow evaluation; SHADOW_CONFIG=FILE for its regate.yaml).
SHADOW_ARGS=()
[[ -n "${SHADOW:-}" ]] && SHADOW_ARGS=(--shadow-policies "$SHADOW")
[[ -n "${SHADOW_CONFIG:-}" ]] && SHADOW_ARGS+=(--shadow-config "$SHADOW_CONFIG")

work=$(mktemp -d -t regate-load-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$REGATE" certs generate --out "$work/certs" >/dev/null

wait_for() { # URL [curl args...]
    local url=$1; shift
    for _ in $(seq 1 400); do
        if curl -sf -o /dev/null "$@" "$url"; then return 0; fi
        sleep 0.025
    done
    echo "not ready: $url" >&2
    return 1
}

start_echo() {
    taskset -c "$SERVER_CPU" "$REGATE" bench echo-server --listen "127.0.0.1:$ECHO_PORT" \
        --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" 2>"$work/echo.log" &
    server_pid=$!
    pids+=("$server_pid")
    wait_for "https://127.0.0.1:$ECHO_PORT/healthz" --cacert "$work/certs/ca.crt"
}

start_serve() {
    taskset -c "$SERVER_CPU" "$REGATE" serve --listen "127.0.0.1:$PORT" \
        --metrics-listen "127.0.0.1:$METRICS_PORT" --policies "$POLICIES" \
        --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" "${SHADOW_ARGS[@]}" \
        2>"$work/serve.log" &
    server_pid=$!
    pids+=("$server_pid")
    wait_for "http://127.0.0.1:$METRICS_PORT/readyz"
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

load() { # PORT mode-args...
    local port=$1; shift
    taskset -c "$CLIENT_CPU" "$REGATE" bench load --target "https://127.0.0.1:$port/validate" \
        --ca "$work/certs/ca.crt" -f "$FIXTURES" --duration "$DURATION" --warmup "$WARMUP" \
        "${PROTO[@]}" -o json "$@" || true
}

hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$server_pid/status"; }
# CPU seconds the server has used so far (user + system).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$server_pid/stat"; }
now_s() { date +%s.%N; }
# Share of one core the server used between two (cpu, wall) readings: near 1.0 means the
# server was the bottleneck; well below means the load generator (or the machine) was.
util() { python3 -c "import sys; c0,w0,c1,w1=map(float,sys.argv[1:]); print(round((c1-c0)/(w1-w0),2))" "$@"; }

# wrk's closed loop against a server already started: one JSON line (bench/wrk-mix.lua).
wrk_load() { # PORT
    if ! command -v wrk >/dev/null; then echo '{}'; return; fi
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$WRK_CONNECTIONS" -d"$DURATION" --latency \
        -s bench/wrk-mix.lua "https://127.0.0.1:$1/validate" -- "$FIXTURES"/*.json | tail -1
}

start_echo
wrk_echo=$(wrk_load "$ECHO_PORT"); echo "wrk echo: $wrk_echo" >&2
stop_server
start_serve
wrk_serve=$(wrk_load "$PORT"); echo "wrk serve: $wrk_serve" >&2
stop_server

start_echo
c0=$(cpu_s); w0=$(now_s)
echo_max=$(load "$ECHO_PORT" --concurrency "$CONCURRENCY" --any-decision); echo "echo max: $echo_max" >&2
echo_util=$(util "$c0" "$w0" "$(cpu_s)" "$(now_s)")
stop_server

# A fresh `regate serve` under one load: sets $report, $used (share of its core), $hwm (KiB).
measure_serve() { # LABEL mode-args...
    local label=$1; shift
    start_serve
    local c0 w0
    c0=$(cpu_s); w0=$(now_s)
    report=$(load "$PORT" "$@"); echo "$label: $report" >&2
    used=$(util "$c0" "$w0" "$(cpu_s)" "$(now_s)")
    hwm=$(hwm_kib)
    stop_server
}

measure_serve "serve max" --concurrency "$CONCURRENCY"
serve_max=$report; serve_util=$used; max_hwm=$hwm
measure_serve "serve at $RATE/s" --rate "$RATE"
serve_rate=$report; rate_util=$used; rate_hwm=$hwm

python3 - "$echo_max" "$serve_max" "$serve_rate" "$max_hwm" "$rate_hwm" "$echo_util" "$serve_util" "$rate_util" "$wrk_echo" "$wrk_serve" <<'EOF'
import json, sys
echo, serve, rate = (json.loads(a) for a in sys.argv[1:4])
wecho, wserve = json.loads(sys.argv[9]), json.loads(sys.argv[10])
wrk = {}
if wecho and wserve:
    wrk = {
        "wrk_echo_rps": round(wecho["throughput_rps"]),
        "wrk_serve_rps": round(wserve["throughput_rps"]),
        "wrk_serve_over_echo": round(wserve["throughput_rps"] / wecho["throughput_rps"], 3),
        "wrk_errors": wecho["errors"] + wserve["errors"] + wecho["non2xx"] + wserve["non2xx"],
        "wrk_serve_p99_ms": wserve["p99_ms"],
    }
print(json.dumps({
    **wrk,
    "echo_server_cpu": float(sys.argv[6]),
    "serve_server_cpu": float(sys.argv[7]),
    "rate_server_cpu": float(sys.argv[8]),
    "echo_max_rps": round(echo["throughput_rps"]),
    "serve_max_rps": round(serve["throughput_rps"]),
    "serve_over_echo": round(serve["throughput_rps"] / echo["throughput_rps"], 3),
    "max_errors": echo["errors"] + serve["errors"],
    "serve_max_p99_ms": serve["p99_ms"],
    "rate": rate.get("rate"),
    "rate_requests": rate["requests"],
    "rate_errors": rate["errors"],
    "rate_p50_ms": rate["p50_ms"],
    "rate_p90_ms": rate["p90_ms"],
    "rate_p99_ms": rate["p99_ms"],
    "rate_p999_ms": rate["p999_ms"],
    "rate_max_ms": rate["max_ms"],
    "rate_peak_rss_mib": round(int(sys.argv[5]) / 1024, 1),
    "max_load_peak_rss_mib": round(int(sys.argv[4]) / 1024, 1),
}, indent=2))
EOF
