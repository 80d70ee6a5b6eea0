"""Instructions per request of tricorn's hello world, counted by callgrind (repeatable to the
instruction whatever else the machine does, unlike requests/s).

Usage: .venv/bin/python bench/instructions.py [--requests 4000] [--connections 16] [--top 25]

The server runs under `valgrind --tool=callgrind`; counters are zeroed after a warm-up, then
h2load sends exactly N HTTP/1.1 requests, and the dump is read: user-space instructions per
request in total, per shared object, and the functions with the largest self cost. Kernel time
(system calls) is not counted: see `strace -c` for those.
"""

from __future__ import annotations

import argparse
import collections
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server did not answer on {url} within {timeout}s")


def self_costs(path: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Total, per-object and per-function self cost (Ir) of a callgrind out file."""
    names: dict[str, str] = {}
    objects: dict[str, str] = {}
    by_fn: collections.Counter[str] = collections.Counter()
    by_ob: collections.Counter[str] = collections.Counter()
    fn = ob = ""
    after_calls = False
    total = 0
    for line in path.read_text().splitlines():
        head = line[:4]
        if head in ("ob=(", "cob="):
            match = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line)
            if match and match.group(2):
                objects[match.group(1)] = match.group(2)
            if head == "ob=(" and match:
                ob = objects.get(match.group(1), match.group(1))
        elif head in ("fn=(", "cfn="):
            match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
            if match and match.group(2):
                names[match.group(1)] = match.group(2)
            if head == "fn=(" and match:
                fn = names.get(match.group(1), match.group(1))
        elif line.startswith("calls="):
            after_calls = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            fields = line.split()
            if len(fields) < 2:
                continue
            if after_calls:  # the inclusive cost of a call, not self cost
                after_calls = False
                continue
            cost = int(fields[1])
            by_fn[fn] += cost
            by_ob[ob] += cost
            total += cost
    return total, by_ob, by_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--app", default="bench.apps:hello")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
            sys.executable, "-m", "tricorn", args.app, "--port", str(port), "--no-access-log", "--loop", "uvloop",
        ]  # fmt: skip
        server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(url, 120)
            h2load = ["h2load", "--h1", "-c", str(args.connections)]
            subprocess.run([*h2load, "-n", "1000", url], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
            done = subprocess.run([*h2load, "-n", str(args.requests), url], check=True, capture_output=True, text=True)
            if f"{args.requests} succeeded" not in done.stdout:
                raise SystemExit(f"not every request succeeded:\n{done.stdout}")
            subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(60)
        dumps = sorted(Path(tmp).glob("callgrind.out.*"))
        total, by_ob, by_fn = self_costs(dumps[0])

    n = args.requests
    print(f"{args.app}: {total / n:,.0f} instructions per request ({n} requests, {args.connections} connections)")
    print("\nper object:")
    for name, cost in by_ob.most_common(6):
        print(f"  {cost / n:9,.0f}  {Path(name).name}")
    print(f"\ntop {args.top} functions (self):")
    for name, cost in by_fn.most_common(args.top):
        print(f"  {cost / n:9,.0f}  {name[:110]}")


if __name__ == "__main__":
    main()
