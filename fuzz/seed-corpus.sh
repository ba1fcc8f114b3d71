#!/usr/bin/env bash
# Seeds the raw-bytes corpus with every fixture and apiserver payload (bare requests wrapped).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/admission_bytes corpus/admission_structured
for f in ../fixtures/admission/*.json ../fixtures/bench/*.json ../../shared/corpora/admissionreview/*.json; do
  [ -f "$f" ] || continue
  if grep -q '"request"' "$f"; then
    cp "$f" "corpus/admission_bytes/$(basename "$f")"
  else
    printf '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":%s}' "$(cat "$f")" \
      > "corpus/admission_bytes/$(basename "$f")"
  fi
done
# The structured target reads its input as a tape of choices: a few fixed tapes to start from.
for i in $(seq 0 31); do
  s=""; while [ ${#s} -lt 64 ]; do s="$s$i-"; done
  printf '%s' "${s:0:64}" > "corpus/admission_structured/tape-$i"
done
