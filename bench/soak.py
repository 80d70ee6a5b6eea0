#!/usr/bin/env python3
"""Soak: a bounded long run of mixed requests against one tricorn worker (`make soak`).

    .venv/bin/python bench/soak.py --requests 2000000

Starts `python -m tricorn bench.apps:soak` (the build installed in this venv: use a release
build, `make build`) and runs rounds until `--requests` are done; each round is

- wrk, 32 HTTP/1.1 keep-alive connections for `--round-seconds`, in turn `GET /`, `POST /echo`
  with 1 KiB and `GET /stream` (8 chunks of 1 KiB, chunked), bench/soak.lua;
- h2load, 20,000 requests of `GET /` over 8 fresh HTTP/2 cleartext connections, 10 streams each;
- bench/ws_load.py, 8 fresh WebSocket connections echoing 32-byte messages for 3 s (each
  message counts as a request), closed at the end.

The server's RSS and open file descriptors are sampled every `--sample-seconds` from
/proc, and once more after each round when no client is connected. The first round is the
warm-up. Prints the series and one JSON summary line: RSS after warm-up, largest and last
RSS after it, and the quiet fd count after every round (which must not grow). Exits 1 on
growth beyond `--max-growth-mib` or an fd leak.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample(pid: int) -> tuple[float, int]:
    """RSS in MiB and open fds of `pid`."""
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def run(command: list[str], timeout: float) -> str:
    done = subprocess.run(["nice", "-n", "10", *command], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    return done.stdout


def wrk_round(port: int, seconds: int) -> int:
    out = run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", str(BENCH / "soak.lua"), f"http://127.0.0.1:{port}/"],
        seconds + 30,
    )
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        raise RuntimeError(f"wrk reported errors: {errors.group(0)}")
    return int(re.search(r"(\d+) requests in", out).group(1))


def h2load_round(port: int) -> int:
    out = run(["h2load", "-n", "20000", "-c", "8", "-m", "10", f"http://127.0.0.1:{port}/"], 120)
    match = re.search(
        r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    total, succeeded, failed, errored = (int(g) for g in match.groups())
    if succeeded != total or failed or errored:
        raise RuntimeError(f"h2load: {match.group(0)}")
    return succeeded


def ws_round(port: int, python: str) -> int:
    out = run(
        [
            python,
            str(BENCH / "ws_load.py"),
            "--port",
            str(port),
            "--connections",
            "8",
            "--warmup",
            "0",
            "--duration",
            "3",
        ],
        60,
    )
    result = json.loads(out.strip().splitlines()[-1])
    if result.get("error") or result.get("errors"):
        raise RuntimeError(f"ws_load.py: {result}")
    return int(result["messages"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--round-seconds", type=int, default=5)
    parser.add_argument("--sample-seconds", type=float, default=2)
    parser.add_argument("--max-growth-mib", type=float, default=10, help="allowed RSS growth after the warm-up round")
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "tricorn", "bench.apps:soak", "--port", str(port), "--no-access-log"]
    command += ["--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT)
    series: list[tuple[float, float, int]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sampler() -> None:
        while not stop.wait(args.sample_seconds):
            series.append((round(time.monotonic() - started, 1), *sample(server.pid)))

    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        start_rss, start_fds = sample(server.pid)
        threading.Thread(target=sampler, daemon=True).start()
        rounds = []
        total = 0
        while total < args.requests:
            counts = {"http1": wrk_round(port, args.round_seconds), "http2": h2load_round(port)}
            counts["websocket"] = ws_round(port, sys.executable)
            total += sum(counts.values())
            time.sleep(1)
            rss, fds = sample(server.pid)
            rounds.append({"requests": total, **counts, "quiet_rss_mib": round(rss, 1), "quiet_fds": fds})
            print(json.dumps(rounds[-1]), flush=True)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.terminate()
        server.wait(15)
    warm = rounds[0]["quiet_rss_mib"]
    later = [r["quiet_rss_mib"] for r in rounds[1:]] or [warm]
    summary = {
        "command": " ".join(command[1:]),
        "requests": total,
        "seconds": round(elapsed, 1),
        "rounds": len(rounds),
        "start": {"rss_mib": round(start_rss, 1), "fds": start_fds},
        "rss_after_warmup_mib": warm,
        "rss_max_after_warmup_mib": max(later),
        "rss_last_mib": later[-1],
        "rss_max_under_load_mib": round(max(rss for _, rss, _ in series), 1) if series else None,
        "fds_max_under_load": max(fds for _, _, fds in series) if series else None,
        "quiet_fds": sorted({r["quiet_fds"] for r in rounds}),
        "series": series,
    }
    print(json.dumps(summary))
    if max(later) - warm > args.max_growth_mib or summary["quiet_fds"] != [start_fds]:
        sys.exit(f"RSS grew from {warm} to {max(later)} MiB after the warm-up, or fds leaked: {summary['quiet_fds']}")


if __name__ == "__main__":
    main()
