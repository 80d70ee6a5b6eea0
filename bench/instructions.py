"""Instructions per request of tricorn's hello world, counted by callgrind (repeatable to the
instruction whatever else the machine does, unlike requests/s).

Usage: .venv/bin/python bench/instructions.py [--requests 4000] [--connections 16] [--top 25]
       [--breakdown] [--access-log] [--loop asyncio] [--keep FILE]
       [--server granian|uvicorn] [--proto h2c [--streams 10]] [--app bench.apps:json] [--close]
       [--header 'User-Agent: ...' ...]

The server runs under `valgrind --tool=callgrind`; counters are zeroed after a warm-up, then
h2load sends exactly N HTTP/1.1 requests, and the dump is read: user-space instructions per
request in total, per shared object, and the functions with the largest self cost.
`--server granian` (or uvicorn) counts a peer the same way, started as bench/run.py starts it from
bench/.venv-peers, all its processes and threads included: the same comparison as the req/s rows,
free of the noise of a shared machine (user space only: what each server costs the kernel is not
in it). `--proto h2c` sends HTTP/2 by prior knowledge instead, `--streams` at a time per connection.
`--close` sends `Connection: close` with every HTTP/1.1 request, so each comes on a new connection
(h2load reconnects): the cost of a connection's accept, set-up and close is in the count.
`--header` adds a request header (repeatable, h2load's `-H`): h2load alone sends only `host` and
`user-agent`, where a browser sends ten or more.
`--breakdown` adds the stages of a request (bench/stages.py: inclusive costs of their entry
functions, each less its sub-stages). Kernel time (system calls) is not counted:
bench/perf_breakdown.py gives the same stages in microseconds, kernel included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from callgrind import Profile, read_profile
from local_server import free_port
from stages import print_rows, stage_rows

ROOT = Path(__file__).resolve().parent.parent


def print_breakdown(profile: Profile, requests: int) -> None:
    rows, _ = stage_rows(profile)
    print("\nstages:")
    print_rows(rows, profile.total, 1 / requests, "instr", 0)


def server_command(args: argparse.Namespace, port: int) -> list[str]:
    """The server's command line: tricorn's own options, or a peer's as bench/run.py starts it."""
    if args.server == "tricorn":
        access_log = [] if args.access_log else ["--no-access-log"]
        return [sys.executable, "-m", "tricorn", args.app, "--port", str(port), *access_log, "--loop", args.loop]
    from run import server_command as bench_command

    return bench_command(args.server, args.app, port, args.proto, args.access_log)


def load_command(args: argparse.Namespace, url: str, requests: int) -> list[str]:
    """h2load sending exactly `requests` requests: HTTP/1.1 (one at a time per connection) or h2c."""
    connections = str(min(args.connections, requests))
    headers = [arg for header in args.header for arg in ("-H", header)]
    if args.proto == "h1":
        close = ["-H", "Connection: close"] if args.close else []
        return ["h2load", "--h1", "-c", connections, "-n", str(requests), *close, *headers, url]
    return ["h2load", "-c", connections, "-m", str(args.streams), "-n", str(requests), *headers, url]


def wait_answered(args: argparse.Namespace, url: str, timeout: float) -> None:
    """Poll with the load generator itself (one request) until the server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run(load_command(args, url, 1), capture_output=True, text=True)
        if "1 succeeded" in probe.stdout:
            return
        time.sleep(0.5)
    raise SystemExit(f"{args.server} did not answer on {url} within {timeout}s")


def profile_server(args: argparse.Namespace) -> Profile:
    """Run the server under callgrind, send the requests, return the profile of exactly those.

    Every process of the server's tree runs under callgrind (a peer may fork or spawn a worker);
    the profile is the sum of their dumps, as CPU time is summed over the tree in bench/run.py.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        valgrind = [
            "valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}.%p",
            "--dump-instr=no",
        ]  # fmt: skip
        server = subprocess.Popen(
            valgrind + server_command(args, port),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_answered(args, url, 180)
            subprocess.run(load_command(args, url, 1000), check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-z"], check=True, capture_output=True)
            done = subprocess.run(load_command(args, url, args.requests), check=True, capture_output=True, text=True)
            if f"{args.requests} succeeded" not in done.stdout:
                raise SystemExit(f"not every request succeeded:\n{done.stdout}")
            subprocess.run(["callgrind_control", "-d"], check=True, capture_output=True)
        finally:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
        # `-d` writes `callgrind.out.PID.1` for every process under callgrind at that moment
        dumps = sorted(Path(tmp).glob("callgrind.out.*.1"))
        if not dumps:
            raise SystemExit("callgrind wrote no dump")
        if args.keep:
            shutil.copyfile(max(dumps, key=lambda d: d.stat().st_size), args.keep)
        return merge_profiles([read_profile(dump) for dump in dumps])


def merge_profiles(profiles: list[Profile]) -> Profile:
    """One profile with the counts of all `profiles` added up."""
    merged = Profile()
    for profile in profiles:
        merged.total += profile.total
        merged.self_by_fn.update(profile.self_by_fn)
        merged.self_by_ob.update(profile.self_by_ob)
        merged.calls.update(profile.calls)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="tricorn", choices=("tricorn", "granian", "uvicorn"))
    parser.add_argument("--proto", default="h1", choices=("h1", "h2c"), help="h2c: HTTP/2 by prior knowledge")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams per connection (h2c)")
    parser.add_argument("--close", action="store_true", help="a new connection for every request (HTTP/1.1)")
    parser.add_argument("--header", action="append", default=[], help="an extra request header, 'Name: value'")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--app", default="bench.apps:hello")
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    parser.add_argument("--access-log", action="store_true", help="keep the access log on (it goes to /dev/null)")
    parser.add_argument("--breakdown", action="store_true", help="print the stages of a request (STAGES)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dump here (callgrind_annotate, kcachegrind)")
    args = parser.parse_args()
    if args.close and args.proto != "h1":
        parser.error("--close is HTTP/1.1's Connection: close: only with --proto h1")
    if args.breakdown and args.server != "tricorn":
        parser.error("--breakdown names tricorn's own functions: only with --server tricorn")

    profile = profile_server(args)
    n = args.requests
    log = "access log on" if args.access_log else "no access log"
    load = f"{args.connections} connections" + (f" x {args.streams} streams, h2c" if args.proto == "h2c" else "")
    if args.close:
        load = f"a new connection each, {args.connections} at a time"
    if args.header:
        load += f", {len(args.header)} extra request headers"
    loop = args.loop if args.server == "tricorn" else "as bench/run.py starts it"
    print(
        f"{args.server} {args.app}: {profile.total / n:,.0f} instructions per request "
        f"({n} requests, {load}, {loop}, {log})"
    )
    print("\nper object:")
    for name, cost in profile.self_by_ob.most_common(6):
        print(f"  {cost / n:9,.0f}  {Path(name).name}")
    print(f"\ntop {args.top} functions (self):")
    for name, cost in profile.self_by_fn.most_common(args.top):
        print(f"  {cost / n:9,.0f}  {name[:110]}")
    if args.breakdown:
        print_breakdown(profile, n)


if __name__ == "__main__":
    main()
