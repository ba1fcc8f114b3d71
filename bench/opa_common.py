"""What bench/opa_compare.py and bench/opa_gatekeeper.py share: the trivial policy whose cost is
OPA's input hand-off, the managedFields both sides drop, and the timing loop."""

import time

TRIVIAL = "package regate_bench_trivial\n\nallow := true\n"


def strip_managed_fields(review):
    for field in ("object", "oldObject"):
        obj = (review.get("request") or {}).get(field)
        if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            obj["metadata"].pop("managedFields", None)
    return review


def timed(engine, query, value, n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        engine.eval_query(query, value)
    return (time.perf_counter_ns() - t0) / n / 1e3
