"""The command lines of uvicorn's deployment guide, with `tricorn` typed where it says `uvicorn`.

Each starts the server the way the guide does (reload for development, workers, HTTPS with `--opt=value`
spelling, a unix socket behind a proxy with proxy headers trusted from everywhere, `--fd 0` as process
managers pass a socket, gunicorn with the worker class) and serves a request through it.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import HOST, IS_UVICORN, REPO, SERVER, ServerProcess, clean_env, free_port, wait_until

APP = "tests.apps.basic:app"


def scope_over_uds(path: str, headers: dict[str, str] | None = None) -> dict:
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.get("http://proxied/scope", headers=headers or {})
    assert response.status_code == 200
    return response.json()


def test_development_with_reload(start_server):
    """`uvicorn main:app --reload --port 5000`"""
    srv = start_server(APP, "--reload")
    assert httpx.get(srv.url + "/scope", timeout=10).json()["type"] == "http"


def test_several_workers(start_server):
    """`uvicorn main:app --host 0.0.0.0 --port 8000 --workers 4` (two here, on a 2-core machine)"""
    srv = start_server(APP, "--host", "0.0.0.0", "--workers", "2")
    pids = set()
    wait_until(
        lambda: pids.add(httpx.get(srv.url + "/pid", timeout=10).json()["pid"]) or len(pids) == 2,
        20,
        message="both workers answering",
    )


def test_https_with_equals_spelling(start_server, tls_certs):
    """`uvicorn main:app --port 5000 --ssl-keyfile=./key.pem --ssl-certfile=./cert.pem`"""
    srv = start_server(APP, f"--ssl-keyfile={tls_certs / 'server.key'}", f"--ssl-certfile={tls_certs / 'server.pem'}")
    context = ssl.create_default_context(cafile=str(tls_certs / "ca.pem"))
    response = httpx.get(f"https://{HOST}:{srv.port}/scope", verify=context, timeout=10)
    assert response.json()["scheme"] == "https"


def test_unix_socket_behind_a_proxy(start_server, tmp_path):
    """`uvicorn main:app --uds /tmp/uvicorn.sock --proxy-headers --forwarded-allow-ips='*'`"""
    path = str(tmp_path / "uvicorn.sock")
    start_server(APP, "--uds", path, "--proxy-headers", "--forwarded-allow-ips=*", uds=path, use_port=False)
    scope = scope_over_uds(path, {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
    assert scope["client"][0] == "203.0.113.7"
    assert scope["scheme"] == "https"


def test_socket_from_a_process_manager_on_fd_0():
    """`uvicorn --fd 0 main:app` (Supervisor and Circus hand the listening socket over as fd 0)"""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen()
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", SERVER, "--fd", "0", APP],
        stdin=listener.fileno(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(REPO),
        env=clean_env(),
    )
    listener.close()
    try:
        response = wait_until(lambda: _get_or_none(f"http://{HOST}:{port}/scope"), 20, message="the server on fd 0")
        assert response.json()["server"][1] == port
    finally:
        proc.terminate()
        proc.wait(15)


def _get_or_none(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


@pytest.mark.skipif(IS_UVICORN, reason="the tricorn worker class (uvicorn's is uvicorn.workers.UvicornWorker)")
@pytest.mark.skipif(shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None, reason="no gunicorn")
def test_gunicorn_with_the_worker_class():
    """`gunicorn example:app -w 4 -k uvicorn.workers.UvicornWorker` (two workers here)"""
    port = free_port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    cmd = [gunicorn, APP, "-w", "2", "-k", "tricorn.workers.TricornWorker", "--bind", f"{HOST}:{port}"]
    with ServerProcess(None, cmd=[*cmd, "--no-control-socket"], port=port) as srv:
        srv.wait_ready()
        body = json.loads(httpx.get(srv.url + "/pid", timeout=10).text)
        assert body["pid"] > 0
