"""Fixtures: real servers in subprocesses (and in-process for the Python API tests)."""

from __future__ import annotations

import pytest

from tests.helpers import IS_UVICORN, ServerProcess

DEFAULT_TIMEOUT = 60
# uvicorn has no HTTP/3, and its reference venv lacks the HTTP/3 clients (aioquic, niquests) the file imports.
collect_ignore = ["test_http3.py"] if IS_UVICORN else []


def pytest_collection_modifyitems(items):
    # Every test is bounded in time, even without an explicit marker.
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


@pytest.fixture
def start_server():
    """Factory: start_server("tests.apps.basic:app", "--opt", ..., env={...}, ready=True) -> ServerProcess.

    Every server started is stopped (SIGTERM, SIGKILL after 10 s) at the end of the test.
    """
    started = []

    def _start(app="tests.apps.basic:app", *args, env=None, ready=True, uds=None, **kwargs):
        srv = ServerProcess(app, *args, env=env, **kwargs)
        started.append(srv)
        if ready:
            srv.wait_ready(uds=uds)
        return srv

    yield _start
    for srv in started:
        srv.cleanup()


@pytest.fixture(scope="module")
def basic_server():
    """One server for the basic app, shared by a whole module."""
    with ServerProcess("tests.apps.basic:app") as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    """Development CA, server and client certificates from certs/make-dev-certs.sh (EC P-256, PKCS#8 keys).

    Returns the directory holding ca.pem/ca.key, server.pem/server.key (localhost, 127.0.0.1, ::1) and
    client.pem/client.key (CN=tricorn-client).
    """
    import subprocess

    from tests.helpers import REPO

    directory = tmp_path_factory.mktemp("tls-certs")
    subprocess.run(
        ["bash", str(REPO / "certs" / "make-dev-certs.sh"), str(directory)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return directory
