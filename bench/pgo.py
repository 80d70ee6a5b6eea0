"""A profile-guided (PGO) build of tricorn's extension: what `make wheel` ships and `make bench`
measures.

1. `maturin develop --profile wheel` (thin LTO, one codegen unit) with `-Cprofile-generate`: an
   instrumented extension, into the venv;
2. training: every load of TRAINING against a fresh tricorn, each worker writing its counters
   when it exits;
3. `llvm-profdata merge` (from rustup's `llvm-tools` component, added when missing);
4. `maturin develop --profile wheel` with `-Cprofile-use`, and with `--wheel` also `maturin build`
   of the same into target/wheels-pgo (apart from target/wheels, where `pip install .` leaves
   its wheel without the profile).

The extension reports how it was built in `tricorn._tricorn.BUILD` (TRICORN_BUILD at compile
time); bench/run.py records it with the machine facts.

usage: bench/pgo.py [--venv .venv] [--wheel] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

PGO_DIR = run.ROOT / "target" / "pgo"
# Where `--wheel` leaves the profile-guided wheel.
WHEEL_DIR = run.ROOT / "target" / "wheels-pgo"
PROFILE = "wheel"
# (scenario of bench/run.py, clients): HTTP/1.1 keep-alive, with the access log, bodies both
# ways, a framework, streaming, a file by pathsend, a new connection per request, HTTP/2 with and
# without TLS, HTTP/3 and WebSocket: the server's code paths a production app takes.
TRAINING = [
    "hello",
    "hello-log",
    "json",
    "echo",
    "fastapi",
    "stream",
    "file-50k",
    "hello-close",
    "h2c-hello",
    "h2-tls-hello",
    "h3-hello",
    "ws-echo",
]


def llvm_profdata() -> str:
    """llvm-profdata of the Rust toolchain's own LLVM (a system one may not read its profiles)."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout
    host = next(
        line.split()[1]
        for line in subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("host:")
    )
    tool = Path(sysroot.strip()) / "lib" / "rustlib" / host / "bin" / "llvm-profdata"
    if not tool.exists():
        run.log("adding rustup's llvm-tools component (llvm-profdata)")
        if subprocess.run(["rustup", "component", "add", "llvm-tools"]).returncode != 0 or not tool.exists():
            raise SystemExit(f"llvm-profdata not found at {tool} (rustup component add llvm-tools)")
    return str(tool)


def maturin(venv: Path, rustflags: str, build: str, command: str = "develop", *extra: str) -> None:
    """`maturin COMMAND --profile wheel` for venv's Python, with rustflags added to RUSTFLAGS."""
    python = venv / "bin" / "python"
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PYO3_PYTHON=str(python), TRICORN_BUILD=build)
    env["RUSTFLAGS"] = " ".join(filter(None, [os.environ.get("RUSTFLAGS", ""), rustflags]))
    cmd = [str(venv / "bin" / "maturin"), command, "--profile", PROFILE, "--quiet", *extra]
    if command == "build":
        cmd += ["--interpreter", str(python)]
    run.log(f"{' '.join(cmd[1:])} ({rustflags})")
    if subprocess.run(cmd, cwd=run.ROOT, env=env).returncode != 0:
        raise SystemExit(f"maturin {command} failed")


def load_command(sc: run.Scenario, port: int, seconds: int) -> list[str] | None:
    """The scenario's load generator for `seconds`, or None when it is not installed."""
    kind = run.load_kind(sc)
    if kind == "wrk":
        return run.wrk_command(sc, port, seconds, 16, 1, False)
    if kind == "h2load":
        return run.h2load_command(sc, port, seconds, 0, 4, 10)
    if kind == "oha":
        return run.oha_command(sc, port, seconds, 4, 10) if os.path.exists(run.OHA) else None
    if kind == "ws":
        return run.ws_load_command(port, seconds, 0, 8)
    raise ValueError(f"no training load for {sc.name} ({kind})")


def train(venv: Path, seconds: int) -> None:
    """Each TRAINING load for `seconds` against its own tricorn, stopped with SIGINT so that its
    workers exit normally and write their profiles."""
    run.MAIN_VENV = venv
    problem = run.install_into_main_venv(["fastapi", "uvloop"]) or run.ensure_certs()
    if problem:
        raise SystemExit(problem)
    run.FILES_DIR = run.make_files()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in TRAINING:
                sc = run.SCENARIO_BY_NAME[name]
                port = run.free_port()
                cmd = load_command(sc, port, seconds)
                if cmd is None:
                    run.log(f"training: {name} skipped ({run.load_kind(sc)} not installed)")
                    continue
                proc = run.start_server("tricorn", sc, port, Path(tmp) / f"{name}.log", 60)
                try:
                    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 150)
                finally:
                    run.stop_process(proc)
                if result.returncode != 0:
                    raise SystemExit(f"training load {name} failed: {(result.stderr or result.stdout)[-500:]}")
                run.log(f"training: {name} done")
    finally:
        shutil.rmtree(run.FILES_DIR, ignore_errors=True)
        run.FILES_DIR = None


def build(venv: Path, wheel: bool = False, seconds: int = 2) -> None:
    """The four steps of the module's docstring, for the Python of `venv`."""
    profdata = llvm_profdata()  # before the builds: a missing tool should not cost them
    raw = PGO_DIR / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    maturin(venv, f"-Cprofile-generate={raw}", "wheel profile, PGO instrumented")
    train(venv, seconds)
    merged = PGO_DIR / "tricorn.profdata"
    subprocess.run([profdata, "merge", "-o", str(merged), str(raw)], check=True)
    use = f"-Cprofile-use={merged}"
    maturin(venv, use, "wheel profile, PGO")
    if wheel:
        maturin(venv, use, "wheel profile, PGO", "build", "--out", str(WHEEL_DIR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=run.MAIN_VENV, help="venv to install into (default .venv)")
    parser.add_argument("--wheel", action="store_true", help="also build the wheel into target/wheels-pgo")
    parser.add_argument("--seconds", type=int, default=2, help="seconds of each training load (default 2)")
    args = parser.parse_args()
    build(args.venv.resolve(), args.wheel, args.seconds)


if __name__ == "__main__":
    main()
