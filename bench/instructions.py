"""Instructions per request of tricorn's hello world, counted by callgrind (repeatable to the
instruction whatever else the machine does, unlike requests/s).

Usage: .venv/bin/python bench/instructions.py [--requests 4000] [--connections 16] [--top 25]
       [--breakdown] [--access-log] [--loop asyncio] [--keep FILE]

The server runs under `valgrind --tool=callgrind`; counters are zeroed after a warm-up, then
h2load sends exactly N HTTP/1.1 requests, and the dump is read: user-space instructions per
request in total, per shared object, and the functions with the largest self cost.
`--breakdown` adds the stages of a request (bench/stages.py: inclusive costs of their entry
functions, each less its sub-stages). Kernel time (system calls) is not counted:
bench/perf_breakdown.py gives the same stages in microseconds, kernel included.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from callgrind import Profile, read_profile
from local_server import free_port, wait_ready
from stages import print_rows, stage_rows

ROOT = Path(__file__).resolve().parent.parent


def print_breakdown(profile: Profile, requests: int) -> None:
    rows, _ = stage_rows(profile)
    print("\nstages:")
    print_rows(rows, profile.total, 1 / requests, "instr", 0)


def profile_server(args: argparse.Namespace) -> Profile:
    """Run the server under callgrind, send the requests, return the profile of exactly those."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    access_log = [] if args.access_log else ["--no-access-log"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
            sys.executable, "-m", "tricorn", args.app, "--port", str(port), *access_log, "--loop", args.loop,
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
        dump = sorted(Path(tmp).glob("callgrind.out.*"))[0]
        if args.keep:
            shutil.copyfile(dump, args.keep)
        return read_profile(dump)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--app", default="bench.apps:hello")
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    parser.add_argument("--access-log", action="store_true", help="keep the access log on (it goes to /dev/null)")
    parser.add_argument("--breakdown", action="store_true", help="print the stages of a request (STAGES)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dump here (callgrind_annotate, kcachegrind)")
    args = parser.parse_args()

    profile = profile_server(args)
    n = args.requests
    log = "access log on" if args.access_log else "no access log"
    print(
        f"{args.app}: {profile.total / n:,.0f} instructions per request "
        f"({n} requests, {args.connections} connections, {args.loop}, {log})"
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
