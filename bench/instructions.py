"""Instructions per request of tricorn's hello world, counted by callgrind (repeatable to the
instruction whatever else the machine does, unlike requests/s).

Usage: .venv/bin/python bench/instructions.py [--requests 4000] [--connections 16] [--top 25]
       [--breakdown [--user-us 7.4]] [--access-log] [--loop asyncio] [--keep FILE]

The server runs under `valgrind --tool=callgrind`; counters are zeroed after a warm-up, then
h2load sends exactly N HTTP/1.1 requests, and the dump is read: user-space instructions per
request in total, per shared object, and the functions with the largest self cost.
`--breakdown` adds the stages of a request (STAGES below: inclusive costs of their entry
functions, each less its sub-stages), `--user-us` scales them to microseconds. Kernel time
(system calls) is not counted: see `perf` or `strace -c` for those (docs/performance.md).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from callgrind import Profile, read_profile

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stage:
    """A part of a request: the inclusive cost of the functions `entry` (a regular expression)
    finds, less the cost of its sub-stages. A stage whose entry is not in the profile (another
    loop, inlined by another build) hands its sub-stages to its parent."""

    label: str
    entry: str
    children: tuple[Stage, ...] = ()


STAGES = Stage(
    "event loop iteration (libuv, epoll_wait; asyncio: _run_once) and what callgrind cannot place",
    "",
    (
        Stage(
            "Rust runtime: drive() (epoll events, executor, hyper's connection task)",
            r"^_tricorn::runtime::Runtime::drive$",
            (
                Stage("hyper: read the socket, parse the request head", r"Conn<I,B,T>::poll_read_head$"),
                Stage(
                    "hand-off to Python: service, exchange, receive/send, app_runner()",
                    r"^_tricorn::asgi::service::AsgiService::handle$",
                    (
                        Stage(
                            "request checks (Host, target, transfer codings)",
                            r"^_tricorn::request_checks::check_http1$",
                        ),
                        Stage("scope dict", r"^_tricorn::asgi::scope::ScopeTemplate::build$"),
                        Stage(
                            "asyncio.Task creation (Task.__init__, call_soon)",
                            r"^_tricorn::asgi::task::TaskSpawner::spawn$",
                        ),
                    ),
                ),
                Stage(
                    "hyper: encode the response, write the socket",
                    r"Dispatcher<D,Bs,I,T>::poll_write$|Buffered<T,B>::poll_flush$",
                ),
            ),
        ),
        Stage(
            "event loop: ready callbacks (uvloop Loop._on_idle)",
            r"Loop__on_idle$",
            (
                Stage(
                    "task step: app_runner() and the app's bytecode",
                    r"^task_step_impl$",
                    (Stage("send(): ASGI messages into Rust, response queued", r"Send::__pymethod___call____$"),),
                ),
            ),
        ),
    ),
)


Row = tuple[int, str, int]  # depth, label, own cost


def stage_rows(profile: Profile, stage: Stage, depth: int = 0) -> tuple[list[Row], int]:
    """The rows of `stage` and its sub-stages (depth first) and the stage's inclusive cost; the
    root (no entry) costs the profile's total."""
    found = profile.matching(stage.entry) if stage.entry else []
    if stage.entry and not found:  # hand the sub-stages to the parent
        lifted = [stage_rows(profile, child, depth) for child in stage.children]
        return [row for rows, _ in lifted for row in rows], sum(cost for _, cost in lifted)
    below = [stage_rows(profile, child, depth + 1) for child in stage.children]
    inclusive = sum(profile.inclusive(name) for name in found) if stage.entry else profile.total
    inner = sum(cost for _, cost in below)
    return [(depth, stage.label, inclusive - inner), *(row for rows, _ in below for row in rows)], inclusive


def print_breakdown(profile: Profile, requests: int, user_us: float | None) -> None:
    rows, _ = stage_rows(profile, STAGES)
    scale = f"{'µs':>7}" if user_us else ""
    print(f"\nstages (own cost; a sub-stage is indented below its parent):\n  {'instr':>7}  {'share':>6}{scale}  stage")
    for depth, label, cost in rows:
        share = cost / profile.total
        micro = f"{share * user_us:7.2f}" if user_us else ""
        print(f"  {cost / requests:7,.0f}  {share:6.1%}{micro}  {'  ' * depth}{label}")


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
    parser.add_argument(
        "--user-us", type=float, help="measured user-space CPU µs per request: --breakdown shows µs per stage too"
    )
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
        print_breakdown(profile, n, args.user_us)


if __name__ == "__main__":
    main()
