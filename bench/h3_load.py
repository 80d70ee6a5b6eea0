#!/usr/bin/env python3
"""HTTP/3 load generator with niquests (qh3) for the `h3-hello-niquests` scenario of bench/run.py.

    .venv/bin/python bench/h3_load.py --port 8443 --cafile bench/.certs/ca.pem --procs 4 --warmup 3 --duration 10

Every process holds one niquests session forced to HTTP/3 (HTTP/1.1 and HTTP/2 disabled,
so the very first request goes over QUIC) and issues GET requests in a loop:

- ``--mode seq`` (default): one request at a time, the next one when the answer is in;
- ``--mode mux``: ``--inflight K`` requests at a time on the one QUIC connection
  (niquests' multiplexed session: K lazy requests, then ``gather()``).

``--procs N`` runs N such processes (several processes are what it takes to load a server
with a Python client: one niquests session costs the client far more CPU per request than
the servers spend).  After ``--warmup`` seconds ``# measure start`` is printed, after
``--duration`` more seconds ``# measure end`` (bench/run.py samples the server's CPU time
on those lines), then one JSON line: requests answered 200 over HTTP/3 within the measured
window, req/s, latency mean / p50 / p99 / max (seq: every request; mux: per batch), the
clients' own CPU use (``client_cpu_util``: CPU seconds of all processes / wall seconds,
1.0 = one full core) and errors.

``--check``: one request, verify status 200, HTTP/3 and the body (``--expect``), exit 0/1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _session(multiplexed: bool):
    import niquests

    return niquests.Session(disable_http1=True, disable_http2=True, multiplexed=multiplexed)


def _bad(resp, expect: bytes | None) -> str | None:
    if resp.status_code != 200:
        return f"status {resp.status_code}"
    if resp.http_version != 30:
        return f"answered over HTTP/{resp.http_version / 10:g}, not HTTP/3"
    if expect is not None and resp.content != expect:
        return f"unexpected body {resp.content[:100]!r}"
    return None


def worker(args, start_at: float, end_at: float, out) -> None:
    """One process: loop until ``end_at`` (CLOCK_MONOTONIC is system-wide on Linux, so all
    processes share the window); count what completes inside [start_at, end_at]."""
    url = f"https://{args.host}:{args.port}{args.path}"
    session = _session(args.mode == "mux")
    n = 0
    lat: list[float] = []
    errors: list[str] = []
    cpu0 = cpu1 = None
    try:
        while True:
            now = time.monotonic()
            if cpu0 is None and now >= start_at:
                cpu0 = _cpu()
            if now >= end_at:
                break
            t0 = time.perf_counter()
            try:
                if args.mode == "seq":
                    resps = [session.get(url, verify=args.cafile, timeout=args.timeout)]
                else:
                    resps = [session.get(url, verify=args.cafile, timeout=args.timeout) for _ in range(args.inflight)]
                    session.gather()
                bad = [b for b in (_bad(r, None) for r in resps) if b]
            except Exception as e:  # noqa: BLE001 - reported, the loop goes on
                bad = [repr(e)]
                resps = []
            t1 = time.perf_counter()
            done = time.monotonic()
            if start_at <= done <= end_at:
                n += len(resps) - len(bad)
                lat.append(t1 - t0)
                errors += bad
        cpu1 = _cpu()
    finally:
        session.close()
    out.put({"requests": n, "latencies": lat, "errors": errors, "cpu_s": (cpu1 or 0.0) - (cpu0 or cpu1 or 0.0)})


def run(args) -> dict:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.monotonic() + args.warmup
    end_at = start_at + args.duration
    procs = [ctx.Process(target=worker, args=(args, start_at, end_at, out)) for _ in range(args.procs)]
    for p in procs:
        p.start()
    time.sleep(max(0.0, start_at - time.monotonic()))
    print("# measure start", flush=True)
    time.sleep(max(0.0, end_at - time.monotonic()))
    print("# measure end", flush=True)
    parts = [out.get(timeout=args.timeout + 30) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    n = sum(p["requests"] for p in parts)
    s = sorted(x for p in parts for x in p["latencies"])
    errors = [e for p in parts for e in p["errors"]]
    q = (lambda f: round(s[min(len(s) - 1, int(f * len(s)))] * 1e3, 3)) if s else (lambda f: None)
    return {
        "client": "niquests",
        "mode": args.mode,
        "procs": args.procs,
        "inflight": args.inflight if args.mode == "mux" else 1,
        "requests": n,
        "elapsed_s": args.duration,
        "rps": round(n / args.duration, 1),
        "client_cpu_util": round(sum(p["cpu_s"] for p in parts) / args.duration, 3),
        "latency_samples": len(s),
        "mean_ms": round(sum(s) / len(s) * 1e3, 3) if s else None,
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "max_ms": round(s[-1] * 1e3, 3) if s else None,
        "errors": len(errors),
        "first_errors": errors[:5],
    }


def check(args) -> str | None:
    url = f"https://{args.host}:{args.port}{args.path}"
    try:
        with _session(False) as session:
            resp = session.get(url, verify=args.cafile, timeout=args.timeout)
    except Exception as e:  # noqa: BLE001
        return f"check failed: {e!r}"
    return _bad(resp, args.expect.encode() if args.expect is not None else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--cafile", required=True, help="CA that signed the server certificate")
    ap.add_argument("--mode", choices=("seq", "mux"), default="seq")
    ap.add_argument("--inflight", type=int, default=10, help="--mode mux: requests per gather()")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--timeout", type=float, default=10, help="per-request timeout (s)")
    ap.add_argument("--check", action="store_true", help="one request, verify it, exit")
    ap.add_argument("--expect", help="--check: the exact body expected")
    args = ap.parse_args(argv)
    if args.check:
        err = check(args)
        print(err or "ok")
        return 1 if err else 0
    res = run(args)
    print(json.dumps(res), flush=True)
    return 0 if res["requests"] and not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
