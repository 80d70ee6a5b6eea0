#!/usr/bin/env python3
"""10,000 idle HTTP/1.1 keep-alive connections against one tricorn worker (`make idle-connections`).

    .venv/bin/python bench/idle_connections.py --connections 10000

Starts `python -m tricorn bench.apps:hello` (the build installed in this venv: use a release
build, `make build`) with a long `--timeout-keep-alive` and `--backlog 8192`, then:

1. baseline: the server's RSS after 200 warm-up requests, and the latency of 100 requests,
   each on a fresh connection;
2. opens N connections and sends one request on each (keep-alive), then leaves them idle:
   RSS and open fds of the server, bytes per idle connection, and the latency of 100 requests
   on fresh connections while the N sit idle; then checks that every idle connection still
   answers a second request;
3. closes them all, then opens N connections that send nothing (they count as idle until
   their first byte) and measures the same.

`--server uvicorn --python ../ref-venv/bin/python` runs the same against uvicorn. Prints a
summary and one JSON line. Stdlib only; raises its own and the server's
`RLIMIT_NOFILE` to the hard limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
RESPONSE_END = b"Hello, world!"


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} file descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_response(sock: socket.socket) -> None:
    data = b""
    while not data.endswith(RESPONSE_END):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected response {data[:80]!r}")


def request(port: int) -> float:
    """One request on a fresh connection; seconds from connect to the whole response."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(REQUEST)
        read_response(sock)
    return time.perf_counter() - start


def latencies(port: int, count: int = 100) -> dict:
    samples = sorted(request(port) for _ in range(count))
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 3),
        "max_ms": round(samples[-1] * 1000, 3),
    }


def open_connections(port: int, count: int, send_request: bool, batch: int = 200) -> list[socket.socket]:
    """`count` connections; with `send_request`, each gets one answered request first."""
    socks: list[socket.socket] = []
    while len(socks) < count:
        group = [
            socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(min(batch, count - len(socks)))
        ]
        if send_request:
            for sock in group:
                sock.sendall(REQUEST)
            for sock in group:
                read_response(sock)
        socks.extend(group)
    return socks


def settle(pid: int, seconds: float = 2.0) -> tuple[int, int]:
    time.sleep(seconds)
    return rss_bytes(pid), open_fds(pid)


def phase(pid: int, port: int, count: int, send_request: bool, base_rss: int, base_fds: int) -> dict:
    started = time.perf_counter()
    socks = open_connections(port, count, send_request)
    opened_in = time.perf_counter() - started
    rss, fds = settle(pid)
    result = {
        "connections": count,
        "opened_in_s": round(opened_in, 2),
        "rss_mib": round(rss / 2**20, 1),
        "server_fds": fds,
        "bytes_per_connection": round((rss - base_rss) / count),
        "latency_while_idle": latencies(port),
    }
    if fds - base_fds < count:
        raise RuntimeError(f"the server holds {fds - base_fds} of the {count} connections")
    if send_request:
        # Every idle connection is still alive and answers a second request.
        started = time.perf_counter()
        for i in range(0, count, 200):
            group = socks[i : i + 200]
            for sock in group:
                sock.sendall(REQUEST)
            for sock in group:
                read_response(sock)
        result["second_request_on_all_s"] = round(time.perf_counter() - started, 2)
    for sock in socks:
        sock.close()
    rss, fds = settle(pid, 3.0)
    result["after_close"] = {"rss_mib": round(rss / 2**20, 1), "server_fds": fds}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--python", default=sys.executable, help="the venv whose server to run")
    parser.add_argument("--server", default="tricorn", help="the server module (uvicorn for comparison)")
    args = parser.parse_args()
    raise_fd_limit(args.connections + 1000)
    port = free_port()
    command = [args.python, "-m", args.server, "bench.apps:hello", "--port", str(port)]
    command += ["--timeout-keep-alive", "600", "--backlog", "8192", "--no-access-log", "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                request(port)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        for _ in range(200):
            request(port)
        base_rss, base_fds = settle(server.pid)
        report = {
            "command": " ".join(command[1:]),
            "baseline": {
                "rss_mib": round(base_rss / 2**20, 1),
                "server_fds": base_fds,
                "latency": latencies(port),
            },
            "after_one_request": phase(server.pid, port, args.connections, True, base_rss, base_fds),
            "connected_only": phase(server.pid, port, args.connections, False, base_rss, base_fds),
        }
    finally:
        server.terminate()
        server.wait(15)
    base, kept, bare = report["baseline"], report["after_one_request"], report["connected_only"]
    print(f"baseline: RSS {base['rss_mib']} MiB, {base['server_fds']} fds, fresh-connection latency {base['latency']}")
    for name, res in (("after one request", kept), ("connected only", bare)):
        print(
            f"{res['connections']} idle ({name}): RSS {res['rss_mib']} MiB, {res['server_fds']} fds, "
            f"{res['bytes_per_connection']} B/connection, latency while idle {res['latency_while_idle']}, "
            f"after close RSS {res['after_close']['rss_mib']} MiB / {res['after_close']['server_fds']} fds"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
