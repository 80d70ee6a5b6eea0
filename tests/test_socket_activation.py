"""Socket activation, the way systemd does it: the launcher owns a listening socket and execs the server with it at
fd 3, ``LISTEN_FDS=1`` and ``LISTEN_PID`` set to the server's pid; the server is told ``--fd 3``.

The launcher here is a tiny Python program run in the child: it moves the inherited socket to fd 3, sets the
environment and execs ``python -m SERVER ... --fd 3`` (exec keeps the pid, so LISTEN_PID is right).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile

import httpx
import pytest

from tests.helpers import HOST, IS_UVICORN, SERVER, RawClient, ServerProcess, build_request, graceful_exit_codes

LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)  # inheritable
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def activate(sock: socket.socket, *args: str, port: int | None = None) -> ServerProcess:
    """Start the server on ``sock`` (left open in the test process, as systemd keeps it)."""
    fd = sock.fileno()
    cmd = [sys.executable, "-c", LAUNCHER, str(fd), "-m", SERVER, "tests.apps.basic:app", "--fd", "3", *args]
    return ServerProcess(None, cmd=cmd, pass_fds=(fd,), port=port)


@pytest.fixture
def tcp_listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(64)
    yield sock
    sock.close()


@pytest.fixture
def unix_listener():
    directory = tempfile.mkdtemp(prefix="tcsa-")
    path = f"{directory}/activated.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    yield sock, path
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_tcp_socket_activation(tcp_listener):
    port = tcp_listener.getsockname()[1]
    # A connection made before the server even started waits in the socket's backlog and is served.
    early = RawClient(port=port, timeout=30)
    early.send(build_request("GET", "/early"))
    with activate(tcp_listener, port=port) as srv:
        try:
            resp = early.read_response()
        finally:
            early.close()
        assert resp.status == 200
        assert json.loads(resp.body)["path"] == "/early"

        scope = httpx.get(f"http://{HOST}:{port}/scope", timeout=10).json()
        assert scope["server"] == [HOST, port]
        assert scope["client"][0] == HOST
        out = srv.wait_output("running on")
        line = next(line for line in out.splitlines() if "running on" in line)
        assert re.search(rf"running on socket .*{HOST}.*\b{port}\b", line), line


def test_tcp_socket_survives_server_restart(tcp_listener):
    """The socket belongs to the launcher: after the server exits, connections queue up and the next server
    instance on the same socket answers them (nothing shut the listening socket down)."""
    port = tcp_listener.getsockname()[1]
    first = activate(tcp_listener, port=port)
    try:
        first.wait_ready()
        assert httpx.get(f"http://{HOST}:{port}/first", timeout=10).status_code == 200
        assert first.stop() in graceful_exit_codes()
    finally:
        first.cleanup()

    waiting = RawClient(port=port, timeout=30)  # accepted by the kernel, nobody serving yet
    waiting.send(build_request("GET", "/between"))
    with activate(tcp_listener, port=port):
        try:
            resp = waiting.read_response()
        finally:
            waiting.close()
        assert resp.status == 200
        assert b'"/between"' in resp.body


def test_unix_socket_activation(unix_listener):
    sock, path = unix_listener
    with activate(sock) as srv:
        srv.wait_ready(uds=path)
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10) as client:
            r = client.get("http://localhost/scope")
            assert r.status_code == 200
            scope = r.json()
            assert client.post("http://localhost/echo", content=b"over fd 3").content == b"over fd 3"
        if not IS_UVICORN:  # uvicorn reports no server address for a unix socket passed by fd
            assert scope["server"][0] == path
        assert scope["client"] is None or scope["client"][0] in ("", path)
        out = srv.wait_output("running on")
        line = next(line for line in out.splitlines() if "running on" in line)
        assert path in line, line
        assert srv.stop(signal.SIGTERM) in graceful_exit_codes()
    assert os.path.exists(path), "the server did not create the socket file, so it must not remove it"
