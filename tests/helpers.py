"""Shared helpers for the black-box suite: server subprocess management and a raw HTTP/1.1 client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Which server is under test: "tricorn" (default), or a reference to validate the suite: "uvicorn" for most
# files, "hypercorn" for the HTTP/3 tests (its command line is translated by `hypercorn_command`).
SERVER = os.environ.get("TRICORN_TEST_SERVER", "tricorn")
SERVER_NAME = SERVER.rsplit(".", 1)[-1]
ENV_PREFIX = SERVER_NAME.upper() + "_"
IS_UVICORN = SERVER_NAME == "uvicorn"
IS_HYPERCORN = SERVER_NAME == "hypercorn"
REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def graceful_exit_codes(sig=signal.SIGTERM) -> tuple:
    """Exit statuses accepted after a graceful shutdown on ``sig``.

    0, or "killed by sig": uvicorn (>= 0.29) restores the default handler and re-raises the captured signal
    after its graceful shutdown, so under SIGTERM it dies with -15; tricorn's server.py mirrors that.
    What matters (and is asserted by the tests) is that in-flight work and lifespan shutdown completed.
    """
    return (0, -int(sig))


# tricorn's HTTP/3 options, in one place for the tests (hypercorn_command translates them).
HTTP3 = "--http3"
HTTP3_ALT_SVC = "--http3-alt-svc"
NO_HTTP3_ALT_SVC = "--no-http3-alt-svc"


def hypercorn_command(app: str | None, port: int, args: tuple[str, ...] | list[str], workdir: Path) -> list[str]:
    """``python -m hypercorn`` serving ``app`` as tricorn would with ``--port PORT`` and ``args``.

    Translated: ``--ssl-certfile/--ssl-keyfile`` (``--certfile/--keyfile``), ``--http3`` (``--quic-bind`` on
    the TCP port), ``--http3-alt-svc V`` (``alt_svc_headers`` in a TOML config, hypercorn has no option for it),
    ``--timeout-graceful-shutdown`` (``--graceful-timeout``), ``--workers``. Anything else raises: a test that
    needs it must be skipped for hypercorn.
    """
    address = f"{HOST}:{port}"
    cmd = [sys.executable, "-m", "hypercorn", "--bind", address]
    alt_svc = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--ssl-certfile":
            cmd += ["--certfile", rest.pop(0)]
        elif arg == "--ssl-keyfile":
            cmd += ["--keyfile", rest.pop(0)]
        elif arg == HTTP3:
            cmd += ["--quic-bind", address]
        elif arg == HTTP3_ALT_SVC:
            alt_svc.append(rest.pop(0))
        elif arg == "--timeout-graceful-shutdown":
            cmd += ["--graceful-timeout", rest.pop(0)]
        elif arg == "--workers":
            cmd += ["--workers", rest.pop(0)]
        else:
            raise ValueError(f"no hypercorn equivalent for {arg!r}")
    if alt_svc:
        config = workdir / "hypercorn.toml"
        config.write_text(f"alt_svc_headers = {json.dumps(alt_svc)}\n")
        cmd += ["--config", str(config)]
    if app is not None:
        cmd.append(app)
    return cmd


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRICORN_", "UVICORN_"))}
    env.pop("WEB_CONCURRENCY", None)
    env.pop("FORWARDED_ALLOW_IPS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update(extra)
    return env


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class ServerProcess:
    """A server started as a subprocess: ``python -m SERVER APP --port N ...``."""

    def __init__(
        self,
        app: str | None,
        *args: str,
        env: dict | None = None,
        port: int | None = None,
        use_port: bool = True,
        pass_fds=(),
        cmd: list[str] | None = None,
        cwd: str | None = None,
    ):
        self.port = port if port is not None else free_port()
        self.host = HOST
        self.url = f"http://{HOST}:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="tricorn-test-")
        self.stdout_path = Path(self._tmp.name) / "stdout.txt"
        self.stderr_path = Path(self._tmp.name) / "stderr.txt"
        if cmd is None and IS_HYPERCORN:
            cmd = hypercorn_command(app, self.port, args, Path(self._tmp.name))
        if cmd is None:
            cmd = [sys.executable, "-m", SERVER]
            if app is not None:
                cmd.append(app)
            if use_port:
                cmd += ["--port", str(self.port)]
            cmd += list(args)
        self.cmd = cmd
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd or str(REPO),
            env=clean_env(env),
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            pass_fds=pass_fds,
        )

    # -- output -------------------------------------------------------------------------------
    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def wait_output(self, text: str, timeout: float = 10.0, stream: str = "output") -> str:
        return wait_until(
            lambda: text in getattr(self, stream) and getattr(self, stream),
            timeout,
            message=f"{text!r} in server {stream}:\n{self.output}",
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 30.0, uds: str | None = None) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode} before accepting connections\n"
                    f"cmd: {self.cmd}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
                )
            try:
                if uds:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.settimeout(1)
                        s.connect(uds)
                else:
                    with socket.create_connection((self.host, self.port), timeout=1):
                        pass
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not ready after {timeout}s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}")
            time.sleep(0.03)

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"server did not exit within {timeout}s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            ) from exc

    def send_signal(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        self._err.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def cleanup(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def run_cli(*args: str, env: dict | None = None, timeout: float = 30.0, cwd: str | None = None):
    """Run the CLI to completion (for exit-status tests)."""
    return subprocess.run(
        [sys.executable, "-m", SERVER, *args],
        cwd=cwd or str(REPO),
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1 client over a real socket
# ---------------------------------------------------------------------------------------------
@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list = field(default_factory=list)  # [(lowercased name, value)] as str
    body: bytes = b""
    chunked: bool = False
    raw_head: bytes = b""

    def header(self, name: str, default=None):
        for k, v in self.headers:
            if k == name.lower():
                return v
        return default

    def header_all(self, name: str) -> list:
        return [v for k, v in self.headers if k == name.lower()]


class Closed(Exception):
    pass


class SocketClient:
    """Closes `self.sock` on `close()` and at the end of a `with` block."""

    sock: socket.socket

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RawClient(SocketClient):
    def __init__(
        self,
        host: str = HOST,
        port: int | None = None,
        timeout: float = 10.0,
        uds: str | None = None,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
    ):
        if uds:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = uds
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (host, port)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(target)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Closed("connection closed by server")
        self.buf += data

    def read_until(self, delim: bytes) -> bytes:
        while delim not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(delim)
        return head + delim

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_eof(self) -> bytes:
        while True:
            try:
                self._fill()
            except Closed:
                break
        data, self.buf = self.buf, b""
        return data

    def read_head(self) -> RawResponse:
        head = self.read_until(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status, _, reason = rest.partition(" ")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return RawResponse(version=version, status=int(status), reason=reason, headers=headers, raw_head=head)

    def read_chunk(self) -> bytes:
        """Read one chunk of a chunked body; b"" for the last chunk (trailers consumed)."""
        size_line = self.read_until(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while self.read_until(b"\r\n") != b"\r\n":
                pass
            return b""
        data = self.read_exact(size)
        assert self.read_exact(2) == b"\r\n"
        return data

    def read_body(self, resp: RawResponse, method: str = "GET") -> RawResponse:
        if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            resp.chunked = True
            parts = []
            while True:
                chunk = self.read_chunk()
                if not chunk:
                    break
                parts.append(chunk)
            resp.body = b"".join(parts)
        elif resp.header("content-length") is not None:
            resp.body = self.read_exact(int(resp.header("content-length")))
        else:
            resp.body = self.read_eof()
        return resp

    def read_response(self, method: str = "GET", skip_informational: bool = True) -> RawResponse:
        while True:
            resp = self.read_head()
            if skip_informational and 100 <= resp.status < 200:
                continue
            return self.read_body(resp, method)

    def request(
        self, method: str, path: str, headers: dict | None = None, body: bytes = b"", version: str = "HTTP/1.1"
    ) -> RawResponse:
        self.send(build_request(method, path, headers, body, version))
        return self.read_response(method)

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within ``timeout`` (any pending data is discarded)."""
        deadline = time.monotonic() + timeout
        self.buf = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
        return False


def build_request(
    method: str, path: str, headers: dict | None = None, body: bytes = b"", version: str = "HTTP/1.1"
) -> bytes:
    headers = dict(headers or {})
    lower = {k.lower() for k in headers}
    if "host" not in lower:
        headers["Host"] = "testserver"
    if body and "content-length" not in lower and "transfer-encoding" not in lower:
        headers["Content-Length"] = str(len(body))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
