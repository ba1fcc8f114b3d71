#!/usr/bin/env python3
"""Connection floods against a real `regate serve`, for the figures in docs/RELIABILITY.md.

  scripts/flood.py idle-tls  [--bin target/debug/regate] [--connections 1100]
      N connections finish the TLS handshake and send nothing; then 20 fresh probes
      (new connection, GET /readyz). Reports probes answered, WARN lines, rejection counters.

  scripts/flood.py metrics-half-sent [--bin …] [--connections 1100] [--nofile 1024]
      Under `prlimit --nofile=L:L`, N connections to the metrics port send half a request
      and wait; then 20 fresh /validate requests and /readyz on the webhook port, and a scrape.
      Reports answers, "Too many open files" log lines, and how many flooding connections
      the server still holds after --hold seconds.

Starts the server itself (temporary certificates, the repository's policies) on free ports on
127.0.0.1, and stops it at the end. Standard library only.
"""

import argparse
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, tmp, nofile=None, config=""):
    subprocess.run([binary, "certs", "generate", "--out", os.path.join(tmp, "certs")],
                   check=True, capture_output=True)
    with open(os.path.join(tmp, "regate.yaml"), "w") as f:
        f.write(config)
    port, mport = free_port(), free_port()
    log = open(os.path.join(tmp, "regate.log"), "w")
    cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen",
           f"127.0.0.1:{mport}", "--tls-cert", os.path.join(tmp, "certs/tls.crt"),
           "--tls-key", os.path.join(tmp, "certs/tls.key"), "--policies",
           os.path.join(REPO, "policies"), "--config", os.path.join(tmp, "regate.yaml"),
           "--log-format", "json", "--log-level", "info"]
    if nofile:
        cmd = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] + cmd
    env = dict(os.environ, REGATE_WATCH_NAMESPACES="false")
    env.pop("RUST_LOG", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if "regate serving" in open(os.path.join(tmp, "regate.log")).read():
            break
        time.sleep(0.1)
    return proc, port, mport


def logs(tmp):
    lines = []
    for line in open(os.path.join(tmp, "regate.log")):
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"message": line.strip()})
    return lines


def scrape(mport, prefix):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
    except OSError as e:
        return [f"scrape failed: {e}"]
    return [l for l in text.splitlines() if l.startswith(prefix) and not l.endswith(" 0")]


def tls_context(tmp):
    ctx = ssl.create_default_context(cafile=os.path.join(tmp, "certs/ca.crt"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def probe(port, ctx, method="GET", path="/readyz", body=b""):
    """One fresh connection, one request; the status code or the error."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 5)
        head = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        writer.write(head + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return int(line.split()[1]) if line else "closed"
    except (OSError, asyncio.TimeoutError, ssl.SSLError, IndexError, ValueError) as e:
        return type(e).__name__


async def still_open(conns, wait=0.2):
    """How many of `conns` (reader, writer) the server has not closed."""
    async def one(reader):
        try:
            data = await asyncio.wait_for(reader.read(4096), wait)
            while data:
                data = await asyncio.wait_for(reader.read(4096), wait)
            return 0
        except asyncio.TimeoutError:
            return 1
        except (OSError, ssl.SSLError):
            return 0
    return sum(await asyncio.gather(*(one(r) for r, _ in conns)))


async def idle_tls(args, tmp, port, mport):
    ctx = tls_context(tmp)

    async def connect():
        try:
            return await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 10)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return None
    # In batches of 100 at once: the whole flood lands within the server's idle timeout.
    opened = []
    for start_at in range(0, args.connections, 100):
        batch = min(100, args.connections - start_at)
        opened += await asyncio.gather(*(connect() for _ in range(batch)))
    conns = [c for c in opened if c]
    failed = len(opened) - len(conns)
    results = [await probe(port, ctx) for _ in range(20)]
    print(f"flood: {args.connections} idle TLS connections ({failed} failed to connect)")
    print(f"fresh probes answered 200: {results.count(200)}/20 ({results})")
    print(f"flooding connections still open: {await still_open(conns)}")
    for c in conns:
        c[1].close()


async def metrics_half_sent(args, tmp, port, mport):
    ctx = tls_context(tmp)
    conns, failed = [], 0
    for _ in range(args.connections):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", mport), 5)
            w.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
            conns.append((r, w))
        except (OSError, asyncio.TimeoutError):
            failed += 1
    await asyncio.sleep(1)
    review = open(os.path.join(REPO, "fixtures/admission/pod-secure.json"), "rb").read()
    validate = [await probe(port, ctx, "POST", "/validate", review) for _ in range(20)]
    ready = await probe(port, ctx)
    print(f"flood: {args.connections} half-sent requests to the metrics port under "
          f"RLIMIT_NOFILE={args.nofile} ({failed} failed to connect)")
    print(f"webhook /validate answered 200: {validate.count(200)}/20 ({set(map(str, validate))})")
    print(f"webhook /readyz: {ready}")
    await asyncio.sleep(args.hold)
    print(f"flooding connections still open after {args.hold + 1} s: {await still_open(conns)}")
    for c in conns:
        c[1].close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["idle-tls", "metrics-half-sent"])
    p.add_argument("--bin", default=os.path.join(REPO, "target/debug/regate"))
    p.add_argument("--connections", type=int, default=1100)
    p.add_argument("--nofile", type=int, default=1024)
    p.add_argument("--hold", type=int, default=15)
    p.add_argument("--header-timeout-ms", type=int, default=None,
                   help="limits.headerReadTimeoutMs (a debug build needs longer than the default "
                        "10 s to take 1,100 handshakes: the first would be cut before the last)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nofile = args.nofile if args.mode == "metrics-half-sent" else None
        config = ""
        if args.header_timeout_ms:
            config = f"limits:\n  headerReadTimeoutMs: {args.header_timeout_ms}\n"
        proc, port, mport = start(args.bin, tmp, nofile, config)
        try:
            run = idle_tls if args.mode == "idle-tls" else metrics_half_sent
            asyncio.run(run(args, tmp, port, mport))
            lines = logs(tmp)
            emfile = sum("Too many open files" in json.dumps(l) for l in lines)
            warns = [l for l in lines if l.get("level") == "WARN"]
            by_message = {}
            for l in warns:
                key = l.get("message", "")[:90]
                by_message[key] = by_message.get(key, 0) + 1
            print(f'log lines with "Too many open files": {emfile}')
            print(f"WARN lines: {len(warns)} {by_message}")
            for line in scrape(mport, "regate_connections_rejected_total"):
                print(line)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
