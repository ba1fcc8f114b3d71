#!/usr/bin/env python3
"""Hostile load against a running `regate serve` (issue 15), and what it did to the server.

While the server's resident memory is sampled every 20 ms from /proc/PID/status:
  1. idle: a few ordinary reviews, then the idle RSS;
  2. attack, for --seconds:
     - --big clients (16) each sending, in a loop, worst-shape reviews: a Pod whose
       `metadata.finalizers` is `[{}, {}, …]` just under 8 MiB, and one at the largest size
       the server parses;
     - an HTTP/2 flood: --h2-connections connections × --h2-streams streams, each declaring a
       body of just under 8 MiB, sending what flow control lets through, and never finishing;
       a stream the server answers or resets is replaced by a new one;
     - an ordinary review (fixtures/admission/pod-secure.json) every 100 ms on one kept-alive
       HTTP/1.1 connection, timed, from a process of its own (--probe-in-process: from a
       thread of this one, whose wait for the GIL then counts as latency); it must be answered
       200 and allowed (`ordinary:200-not-allowed` counts the answers that deny it);
  3. after: the attack stops; RSS is sampled until it settles (ordinary reviews once a second).
Prints one JSON object: RSS idle / peak / after, the answers by status, ordinary review latency.

Needs the `h2` package (pip install h2). Standard library otherwise.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import ssl
import statistics
import sys
import threading
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
except ImportError:  # pragma: no cover
    sys.exit("bench/hostile.py needs the h2 package: pip install h2")

MIB = 1024 * 1024


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


class Sampler(threading.Thread):
    """RSS every `interval` seconds; kills the server past `limit_kib` (a safety net for
    measuring an unbounded build on a shared machine)."""

    def __init__(self, pid, interval, limit_kib):
        super().__init__(daemon=True)
        self.pid, self.interval, self.limit_kib = pid, interval, limit_kib
        self.samples = []
        self.stop = threading.Event()
        self.killed = False

    def run(self):
        while not self.stop.is_set():
            kib = rss_kib(self.pid)
            self.samples.append((time.monotonic(), kib))
            if self.limit_kib and kib > self.limit_kib and not self.killed:
                self.killed = True
                try:
                    os.kill(self.pid, 9)
                except OSError:
                    pass
            time.sleep(self.interval)

    def peak(self, since=0.0, until=float("inf")):
        return max((k for t, k in self.samples if since <= t <= until), default=0)


def tls_context(ca, alpn):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols([alpn])
    return ctx


def review(uid, inner_json=None, base=None):
    body = json.loads(base)
    body["request"]["uid"] = uid
    if inner_json is None:
        return json.dumps(body).encode()
    body["request"]["object"]["metadata"]["finalizers"] = "PLACEHOLDER"
    return json.dumps(body).replace('"PLACEHOLDER"', inner_json).encode()


def worst_shape(base, total_bytes):
    """`[{}, {}, …]` filling a Pod up to `total_bytes`."""
    empty = len(review("u", "[]", base))
    n = max(1, (total_bytes - empty) // 3)
    return review("worst", "[" + "{}," * (n - 1) + "{}]", base)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = {}
        self.latencies = []
        self.errors = {}

    def status(self, kind, code):
        with self.lock:
            key = f"{kind}:{code}"
            self.statuses[key] = self.statuses.get(key, 0) + 1

    def error(self, kind, e):
        with self.lock:
            key = f"{kind}:{type(e).__name__}"
            self.errors[key] = self.errors.get(key, 0) + 1


def post_http1(host, port, ctx, body, timeout):
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def big_client(args, bodies, stats, stop):
    ctx = tls_context(args.ca, "http/1.1")
    i = 0
    while not stop.is_set():
        kind, body = bodies[i % len(bodies)]
        i += 1
        try:
            stats.status(kind, post_http1("localhost", args.port, ctx, body, 120))
        except Exception as e:  # noqa: BLE001 - every failure is counted by kind
            stats.error(kind, e)
            time.sleep(0.05)


def h2_flood_connection(args, stats, stop):
    """One HTTP/2 connection keeping `--h2-streams` unfinished bodies open."""
    declared = args.body_limit - 1
    chunk = b" " * 16384
    while not stop.is_set():
        try:
            ctx = tls_context(args.ca, "h2")
            raw = socket.create_connection(("127.0.0.1", args.port), timeout=5)
            sock = ctx.wrap_socket(raw, server_hostname="localhost")
            sock.settimeout(0.05)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            sent = {}  # stream id -> bytes sent

            def open_streams():
                while len(sent) < args.h2_streams and conn.open_outbound_streams < min(
                    args.h2_streams, conn.remote_settings.max_concurrent_streams
                ):
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, [
                        (":method", "POST"), (":path", "/validate"), (":scheme", "https"),
                        (":authority", f"localhost:{args.port}"),
                        ("content-type", "application/json"),
                        ("content-length", str(declared)),
                    ])
                    sent[sid] = 0

            open_streams()
            while not stop.is_set():
                for sid in list(sent):
                    try:
                        while sent[sid] < declared - 1:
                            window = min(conn.local_flow_control_window(sid),
                                         conn.max_outbound_frame_size)
                            n = min(window, declared - 1 - sent[sid], len(chunk))
                            if n <= 0:
                                break
                            conn.send_data(sid, chunk[:n])
                            sent[sid] += n
                    except h2.exceptions.StreamClosedError:
                        sent.pop(sid, None)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
                try:
                    data = sock.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers).get(b":status", b"?").decode()
                        stats.status("h2-flood", status)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, (h2.events.StreamReset, h2.events.StreamEnded)):
                        sent.pop(event.stream_id, None)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        raise ConnectionError("GOAWAY")
                open_streams()
            sock.close()
        except Exception as e:  # noqa: BLE001
            stats.error("h2-flood", e)
            time.sleep(0.1)


def admitted(answer):
    """Whether an AdmissionReview answer allows its object."""
    try:
        return json.loads(answer)["response"]["allowed"] is True
    except (ValueError, KeyError, TypeError):
        return False


def ordinary(args, body, stats, stop, interval):
    ctx = tls_context(args.ca, "http/1.1")
    conn = None
    while not stop.is_set():
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPSConnection("localhost", args.port, context=ctx, timeout=30)
            conn.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
            elapsed = time.monotonic() - started
            # The ordinary Pod is one the default policies allow: an answer that denies it (a
            # policy failing for memory or time during the attack) counts as a failure too.
            allowed = response.status == 200 and admitted(answer)
            stats.status("ordinary", response.status if allowed or response.status != 200
                         else "200-not-allowed")
            if allowed:
                with stats.lock:
                    stats.latencies.append(elapsed * 1000)
        except Exception as e:  # noqa: BLE001
            stats.error("ordinary", e)
            conn = None
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def ordinary_process(args, body, stop, conn, interval):
    """`ordinary` in a process of its own: in the attacking process the probe waited for the
    GIL behind 24 attacking threads, and that wait was counted as the server's latency."""
    stats = Stats()
    ordinary(args, body, stats, stop, interval)
    conn.send((stats.statuses, stats.errors, stats.latencies))
    conn.close()


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p / 100))], 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--fixtures", default="fixtures/admission")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--big", type=int, default=16)
    parser.add_argument("--h2-connections", type=int, default=8)
    parser.add_argument("--h2-streams", type=int, default=32)
    parser.add_argument("--body-limit", type=int, default=8 * MIB)
    parser.add_argument("--largest-parsed", type=int, default=1_000_000,
                        help="`{}` count of the largest worst-shape body the server parses")
    parser.add_argument("--settle", type=float, default=30)
    parser.add_argument("--kill-above-mib", type=int, default=6144)
    parser.add_argument("--probe-in-process", action="store_true",
                        help="time ordinary reviews from a thread of the attacking process "
                             "(its GIL wait then counts as latency), as before 2026-12-06 16:00")
    args = parser.parse_args()

    with open(os.path.join(args.fixtures, "pod-secure.json")) as f:
        base = f.read()
    normal = review("ordinary", None, base)
    bodies = [
        ("worst-8MiB", worst_shape(base, args.body_limit - 4096)),
        ("worst-parsed", review("worst-parsed", "[" + "{}," * (args.largest_parsed - 1) + "{}]", base)),
    ]
    sampler = Sampler(args.pid, 0.02, args.kill_above_mib * 1024)
    sampler.start()

    # 1. idle
    idle_stats = Stats()
    idle_stop = threading.Event()
    t = threading.Thread(target=ordinary, args=(args, normal, idle_stats, idle_stop, 0.05))
    t.start()
    time.sleep(2)
    idle_stop.set()
    t.join()
    time.sleep(2)
    idle = statistics.median(rss_kib(args.pid) for _ in range(5))

    # 2. attack
    stats = Stats()
    stop = threading.Event()
    attack_started = time.monotonic()
    threads = [threading.Thread(target=big_client, args=(args, bodies, stats, stop), daemon=True)
               for _ in range(args.big)]
    threads += [threading.Thread(target=h2_flood_connection, args=(args, stats, stop), daemon=True)
                for _ in range(args.h2_connections)]
    if args.probe_in_process:
        probe = threading.Thread(target=ordinary, args=(args, normal, stats, stop, 0.1),
                                 daemon=True)
    else:
        # Spawned (not forked: this process is about to run threads), started before the attack.
        spawn = multiprocessing.get_context("spawn")
        probe_stop = spawn.Event()
        probe_results, probe_conn = spawn.Pipe(duplex=False)
        probe = spawn.Process(target=ordinary_process,
                              args=(args, normal, probe_stop, probe_conn, 0.1), daemon=True)
    for th in threads:
        th.start()
    time.sleep(1)  # the attack under way before the first timed review
    probe.start()
    time.sleep(args.seconds)
    stop.set()
    attack_ended = time.monotonic()
    if args.probe_in_process:
        probe.join(timeout=60)
    else:
        probe_stop.set()
        statuses, errors, latencies = probe_results.recv()
        probe.join(timeout=60)
        for key, n in statuses.items():
            stats.statuses[key] = stats.statuses.get(key, 0) + n
        for key, n in errors.items():
            stats.errors[key] = stats.errors.get(key, 0) + n
        stats.latencies.extend(latencies)
    for th in threads:
        th.join(timeout=130)
    peak = sampler.peak()

    # 3. after
    after_stats = Stats()
    after_stop = threading.Event()
    t = threading.Thread(target=ordinary, args=(args, normal, after_stats, after_stop, 1.0))
    t.start()
    deadline = time.monotonic() + args.settle
    after = rss_kib(args.pid)
    while time.monotonic() < deadline:
        time.sleep(1)
        after = rss_kib(args.pid)
        if after <= idle * 1.2:
            break
    after_stop.set()
    t.join()
    sampler.stop.set()

    lat = stats.latencies
    result = {
        "rss_kib": {"idle": int(idle), "peak": peak, "after": after,
                    "after_vs_idle": round(after / idle, 3) if idle else None},
        "killed_above_mib": args.kill_above_mib if sampler.killed else None,
        "attack_seconds": round(attack_ended - attack_started, 1),
        "answers": dict(sorted(stats.statuses.items())),
        "errors": dict(sorted(stats.errors.items())),
        "ordinary_probe": "thread of the attacking process" if args.probe_in_process
                          else "process of its own",
        "ordinary_ms": {"count": len(lat), "p50": percentile(lat, 50), "p99": percentile(lat, 99),
                        "max": round(max(lat), 1) if lat else None,
                        "over_100ms": sum(1 for x in lat if x > 100)},
        "ordinary_after": dict(after_stats.statuses),
        "targets": {
            "peak_rss_le_512MiB": peak <= 512 * 1024,
            "after_within_20pct_of_idle": after <= idle * 1.2,
            "ordinary_all_answered_within_100ms": bool(lat) and max(lat) <= 100
            and not [k for k in stats.statuses if k.startswith("ordinary:") and k != "ordinary:200"]
            and not [k for k in stats.errors if k.startswith("ordinary:")],
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
