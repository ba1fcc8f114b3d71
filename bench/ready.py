#!/usr/bin/env python3
"""Time from `regate serve` starting to its first ready answer (GET /readyz -> 200 on the
metrics port), certificate generation aside: the certificate is generated beforehand.

    bench/ready.py [--regate target/release/regate] [--runs 10] [--cpu 0] [-- extra serve args]

Prints one JSON object: runs, min_ms, median_ms, max_ms, and the samples.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--regate", default="target/release/regate")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cpu", default="0", help="taskset CPU list for the server ('' for none)")
    ap.add_argument("extra", nargs="*", help="extra arguments for regate serve")
    a = ap.parse_args()
    certs = tempfile.mkdtemp(prefix="regate-ready-")
    subprocess.run([a.regate, "certs", "generate", "--out", certs], check=True, capture_output=True)
    env = dict(os.environ)
    samples = []
    for _ in range(a.runs):
        port, metrics = free_port(), free_port()
        cmd = [a.regate, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}",
               "--tls-cert", f"{certs}/tls.crt", "--tls-key", f"{certs}/tls.key", *a.extra]
        if a.cpu:
            cmd = ["taskset", "-c", a.cpu, *cmd]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            while not ready(metrics):
                if p.poll() is not None:
                    sys.exit(f"regate serve exited with {p.returncode}")
                if time.perf_counter() - t0 > 10:
                    sys.exit("not ready within 10 s")
                time.sleep(0.0005)
            samples.append((time.perf_counter() - t0) * 1e3)
        finally:
            p.terminate()
            p.wait()
    print(json.dumps({
        "runs": len(samples),
        "min_ms": round(min(samples), 1),
        "median_ms": round(statistics.median(samples), 1),
        "max_ms": round(max(samples), 1),
        "samples_ms": [round(s, 1) for s in samples],
    }))


if __name__ == "__main__":
    main()
