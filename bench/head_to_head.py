"""tricorn and a peer on the same core at the same time: CPU time per request of each, side by side.

Usage: .venv/bin/python bench/head_to_head.py [--peer granian] [--scenarios hello,json,...]
       [--runs 7] [--duration 5] [--out bench/HEAD_TO_HEAD.md] [--python INTERPRETER]

bench/run.py measures one server at a time, and on a shared virtual machine whose speed moves
by half from one minute to the next, even back-to-back rounds of two servers can land on
different speeds. Here both servers run pinned to CPU 0 at once, each driven by its own load
generator on CPU 1 (the command of the scenario in bench/run.py), and each server's CPU time is
read over the very same seconds: whatever slows the core slows both. The kernel shares the core
between them, so neither reaches its own requests/s; what each one's CPU time per request says is
how many requests a core of its own would serve, which is what the requests/s ratio of a pinned
run measures when the machine holds still. Each run starts both servers afresh; the table gives
the median of the runs' ratios and their range.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import run

SCENARIOS = ("hello", "json", "echo", "fastapi", "stream", "hello-close", "h2c-hello", "h2-tls-hello")


def load_command(sc: run.Scenario, port: int, duration: int) -> list[str]:
    """The scenario's load generator (wrk or h2load), as bench/run.py runs it, pinned to CPU 1."""
    if run.load_kind(sc) == "h2load":
        cmd = run.h2load_command(sc, port, duration, 0, 10, 10)
        cmd = [arg for arg in cmd if not arg.startswith("--warm-up-time")]
    else:
        cmd = run.wrk_command(sc, port, duration, 64, 1, False)
    return ["taskset", "-c", "1", *cmd]


def answered(kind: str, out: str) -> int:
    """Requests answered with success, from wrk's or h2load's report."""
    if kind == "h2load":
        m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
        return int(m.group(1)) if m else 0
    res = run.parse_wrk(out)
    return (res.get("requests") or 0) - (res.get("non_2xx") or 0)


def one_run(sc: run.Scenario, peer: str, duration: int, logdir: Path) -> dict:
    """Both servers started, warmed up, then loaded at once; CPU µs per request of each."""
    kind = run.load_kind(sc)
    servers = {}
    try:
        for server in ("tricorn", peer):
            port = run.free_port()
            servers[server] = (run.start_server(server, sc, port, logdir / f"{server}.log", 60), port)
        for _, port in servers.values():  # warm-up, one server at a time
            subprocess.run(load_command(sc, port, 2), capture_output=True, check=True)
        trees = {server: run.process_tree(proc.pid) for server, (proc, _) in servers.items()}
        before = {server: run.cpu_seconds(pids) for server, pids in trees.items()}
        loads = {
            server: subprocess.Popen(load_command(sc, port, duration), stdout=subprocess.PIPE, text=True)
            for server, (_, port) in servers.items()
        }
        outs = {server: load.communicate(timeout=duration + 60)[0] for server, load in loads.items()}
        after = {server: run.cpu_seconds(pids) for server, pids in trees.items()}
    finally:
        for proc, _ in servers.values():
            run.stop_process(proc)
    result = {}
    for server in servers:
        requests = answered(kind, outs[server])
        if not requests:
            raise SystemExit(f"{sc.name}: {server} answered no request:\n{outs[server]}")
        cpu = after[server] - before[server]
        result[server] = {"requests": requests, "cpu_s": cpu, "cpu_us_per_req": cpu * 1e6 / requests}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", default="granian", choices=("granian", "uvicorn"))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--out", type=Path, default=run.BENCH / "HEAD_TO_HEAD.md")
    parser.add_argument("--python", help="interpreter for both servers, as bench/run.py --python")
    args = parser.parse_args()
    names = args.scenarios.split(",")
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    run.ensure_certs()
    if args.python:
        run.use_python(args.python)
        run.ensure_peers_venv(args.python)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    with tempfile.TemporaryDirectory(prefix="head-to-head-") as tmp:
        for name in names:
            sc = run.SCENARIO_BY_NAME[name]
            runs = []
            for i in range(args.runs):
                res = one_run(sc, args.peer, args.duration, Path(tmp))
                ratio = res["tricorn"]["cpu_us_per_req"] / res[args.peer]["cpu_us_per_req"]
                runs.append((ratio, res))
                print(
                    f"{name} run {i + 1}: tricorn {res['tricorn']['cpu_us_per_req']:.1f} µs/req, {args.peer} "
                    f"{res[args.peer]['cpu_us_per_req']:.1f} µs/req: {ratio:.2f}×",
                    flush=True,
                )
            rows.append((sc, runs))
    write_report(args, started, rows)
    return 0


def write_report(args: argparse.Namespace, started: str, rows: list) -> None:
    peer = args.peer
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=run.ROOT)
    tcp = ", ".join(f"{key} {value}" for key, value in run.tcp_settings().items()) or "settings unknown"
    versions = run.venv_versions(run.MAIN_VENV)
    lines = [
        f"# tricorn and {peer} on one core at the same time\n",
        f"Generated {started} by `bench/head_to_head.py` (`{' '.join(sys.argv[1:]) or 'defaults'}`), "
        f"tricorn {git.stdout.strip()} ({versions.get('tricorn_build', 'build unknown')}), "
        f"Python {versions.get('python', '?')}, "
        f"kernel {platform.release()}, TCP {tcp}. "
        "Method: the docstring of "
        "bench/head_to_head.py; servers, apps and load generators as in [RESULTS.md](RESULTS.md) "
        "(one worker each, access log off; wrk "
        "`-t1 -c64`, h2load `-c 10 -m 10`), both servers on CPU 0 and both load generators on CPU 1, "
        f"{args.duration} s per run after a 2 s warm-up of each, {args.runs} runs, both servers started "
        "afresh for each.\n",
        f"| scenario | tricorn CPU µs/req | {peer} CPU µs/req | tricorn / {peer} (median) | range | "
        f"requests per core, tricorn / {peer} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for sc, runs in rows:
        ratios = sorted(ratio for ratio, _ in runs)
        median = statistics.median(ratios)
        t = statistics.median(res["tricorn"]["cpu_us_per_req"] for _, res in runs)
        p = statistics.median(res[peer]["cpu_us_per_req"] for _, res in runs)
        lines.append(
            f"| {sc.name} | {t:.1f} | {p:.1f} | {median:.2f}× | {ratios[0]:.2f}–{ratios[-1]:.2f}× | {1 / median:.2f}× |"
        )
    lines.append(
        "\nThe last column is the inverse of the median ratio: how many requests a core serves with "
        f"tricorn for each one it serves with {peer}."
    )
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
