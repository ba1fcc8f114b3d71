#!/usr/bin/env bash
# Soak test: the real `regate serve` on 127.0.0.1 under a realistic mix (every fixture of
# fixtures/admission and fixtures/bench, /validate and /mutate, HTTP/1.1 and HTTP/2 clients that
# reconnect every 200 requests) for SOAK_SECONDS (default 600), while a policy file is rewritten
# every 10 s (hot reload) and the serving certificate is replaced every 60 s (rotation). Every
# answer is checked against the fixture's expected decision; RSS is sampled every 5 s and must
# stay within 10% after a one-minute warm-up. Loopback only; stops by itself.
#
#   scripts/soak.sh                      # 10 minutes
#   SOAK_SECONDS=120 scripts/soak.sh     # shorter
#   SOAK_WORKERS=8 scripts/soak.sh       # more concurrent clients (default 4)
#
# The driver is the `soak_full` test in tests/reliability.rs (a 25-second variant, `soak_smoke`,
# runs in CI). Output goes to the terminal and to target/soak-<timestamp>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${SOAK_SECONDS:-600}"
log="target/soak-$(date +%Y%m%d-%H%M%S).log"
mkdir -p target
echo "soak: building (debug profile, as CI builds it)"
cargo test --test reliability --no-run --quiet
echo "soak: ${seconds} s; log in ${log}"
# The test stops itself after SOAK_SECONDS; the timeout is only a guard against a hang.
set +e
SOAK_SECONDS="$seconds" timeout "$((seconds + 300))" \
  cargo test --quiet --test reliability soak_full -- --ignored --exact --nocapture 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
echo
grep -E '^soak ' "$log" || true
exit "$status"
