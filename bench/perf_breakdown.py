"""Where the CPU time of a hello-world request goes, kernel included: tricorn pinned to CPU 0
under `wrk` pinned to CPU 1, sampled by `perf record` (needs perf and root, or
kernel.perf_event_paranoid <= 1 for the kernel side).

Usage: .venv/bin/python bench/perf_breakdown.py [--duration 5] [--loop asyncio] [--access-log]
       [--us-per-request 12.6] [--keep FILE]

Two measured windows after a warm-up: the first without perf gives requests/s and the server's
user and kernel CPU time per request (/proc/PID/stat); during the second, perf samples the
server (software clock, DWARF call graphs, so Rust and CPython frames unwind). The samples are
grouped into the stages of bench/stages.py, and each stage's share of the samples times the CPU
time per request is its microseconds (`--us-per-request` puts a figure from a quieter run in
place of the first window's). On a busy machine the shares hold better than the times.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from local_server import free_port, wait_ready
from stages import print_rows, stage_rows

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, LOADGEN_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# kernel entry points shown on their own below the stage table
KERNEL_PARTS = {
    "do_writev": "writev(): send the response",
    "net_rx_action": "  of which softirq: loopback delivery to the client, ACKs",
    "ksys_read": "read(): the request",
    "do_epoll_wait": "epoll_wait() (uvloop's and the runtime's)",
    "ksys_write": "write(): eventfd wake-ups",
}


@dataclass
class PerfProfile:
    """`perf report --children` of one recording: percent of samples per symbol."""

    total: float = 100.0
    children: dict[str, float] = field(default_factory=dict)  # inclusive share, percent
    kernel: float = 0.0  # share of the samples taken in the kernel, percent

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return sorted(name for name in self.children if regex.search(name))

    def inclusive(self, function: str) -> float:
        return self.children.get(function, 0.0)


_REPORT_LINE = re.compile(r"^\s*([\d.]+)%\s+([\d.]+)%\s+\[([.k])\]\s+(.*?)\s*$")


def read_report(text: str) -> PerfProfile:
    """Parse `perf report --children --sort sym --stdio -g none`; inlined frames are left out
    (their caller's symbol carries their cost)."""
    profile = PerfProfile()
    for line in text.splitlines():
        match = _REPORT_LINE.match(line)
        if not match or match.group(4).endswith("(inlined)"):
            continue
        children, own, space, name = float(match.group(1)), float(match.group(2)), match.group(3), match.group(4)
        profile.children[name] = profile.children.get(name, 0.0) + children
        if space == "k":
            profile.kernel += own
    return profile


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and kernel CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def wrk(url: str, seconds: int, connections: int) -> int:
    """Run wrk on LOADGEN_CPU; returns the requests it completed."""
    cmd = ["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+) requests in", out)
    if not found or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk run failed:\n{out}")
    return int(found.group(1))


@dataclass
class Window:
    requests: int
    seconds: float
    user: float
    kernel: float

    def line(self) -> str:
        cpu = (self.user + self.kernel) * 1e6 / self.requests
        kernel = self.kernel / (self.user + self.kernel)
        return (
            f"{self.requests / self.seconds:,.0f} req/s, CPU {cpu:.2f} µs/request "
            f"(user {self.user * 1e6 / self.requests:.2f}, kernel {self.kernel * 1e6 / self.requests:.2f}: "
            f"{kernel:.0%}), server CPU {(self.user + self.kernel) / self.seconds:.2f} of its core"
        )


def measure(pid: int, url: str, seconds: int, connections: int) -> Window:
    user0, kernel0 = cpu_seconds(pid)
    start = time.monotonic()
    requests = wrk(url, seconds, connections)
    wall = time.monotonic() - start
    user1, kernel1 = cpu_seconds(pid)
    return Window(requests, wall, user1 - user0, kernel1 - kernel0)


def record(pid: int, url: str, args: argparse.Namespace, data: Path) -> Window:
    perf = [
        "perf", "record", "-e", "cpu-clock", "-F", str(args.frequency), "--call-graph", "dwarf,32768",
        "-p", str(pid), "-o", str(data), "--", "sleep", str(args.duration),
    ]  # fmt: skip
    sampler = subprocess.Popen(perf, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        window = measure(pid, url, args.duration, args.connections)
    finally:
        _, err = sampler.communicate(timeout=args.duration + 60)
    if sampler.returncode != 0:
        raise SystemExit(f"perf record failed:\n{err}")
    return window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of each measured window (default 5)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--frequency", type=int, default=1999, help="perf samples per second (default 1999)")
    parser.add_argument("--app", default="bench.apps:hello")
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    parser.add_argument("--access-log", action="store_true", help="keep the access log on (it goes to /dev/null)")
    parser.add_argument("--us-per-request", type=float, help="CPU µs per request to scale the shares with")
    parser.add_argument("--keep", type=Path, help="copy perf.data here (perf report -i FILE)")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    access_log = [] if args.access_log else ["--no-access-log"]
    cmd = [
        "taskset", "-c", SERVER_CPU, sys.executable, "-m", "tricorn", args.app,
        "--port", str(port), *access_log, "--loop", args.loop,
    ]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        try:
            wait_ready(url, 60)
            wrk(url, 2, args.connections)  # warm-up
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            plain = measure(server.pid, url, args.duration, args.connections)
            sampled = record(server.pid, url, args, data)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--children", "--sort", "sym", "--stdio", "-g", "none"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if args.keep:
            shutil.copyfile(data, args.keep)
    profile = read_report(report)
    if not profile.matching(r"^_tricorn::"):
        print("warning: no tricorn symbols in the samples (was the extension rebuilt during the run?)")

    log = "access log on" if args.access_log else "no access log"
    print(f"{args.app}, {args.loop}, {log}, wrk -c{args.connections}, load average {load}")
    print(f"  without perf: {plain.line()}")
    print(f"  under perf:   {sampled.line()}")
    us = args.us_per_request or (plain.user + plain.kernel) * 1e6 / plain.requests
    print(f"\nstages, at {us:.2f} CPU µs per request ({profile.kernel:.0f}% of the samples in the kernel):")
    rows, _ = stage_rows(profile)
    print_rows(rows, profile.total, us / profile.total, "µs", 2)
    print("\nkernel entry points (inclusive, already counted in the stages above):")
    for name, label in KERNEL_PARTS.items():
        share = profile.inclusive(name)
        print(f"  {share * us / profile.total:8.2f}  {share / profile.total:6.1%}  {label}")


if __name__ == "__main__":
    main()
