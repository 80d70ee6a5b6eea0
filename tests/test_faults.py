"""Faults (issue 8, item 4) not covered elsewhere: an app that leaks a task, and clients that
disconnect in the middle of a request body or of a response, closing or resetting. After each,
the server still serves and holds no more file descriptors than before.

Covered elsewhere: the app raising, hanging or not answering (test_errors.py, test_limits.py),
a disconnect while the app does not read the body (test_body.py), SIGKILL and SIGTERM of
workers under load (test_workers.py).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
import uuid

import httpx
import pytest

from tests.helpers import RawClient, build_request, chunk, graceful_exit_codes, wait_until

APP = "tests.apps.faults:app"


def result(srv, key):
    return httpx.get(srv.url + "/results", params={"key": key}, timeout=10).json()


def open_fds(srv) -> int:
    return len(os.listdir(f"/proc/{srv.proc.pid}/fd"))


def settled_fds(srv) -> int:
    """The server's fd count once no client is connected (after one request, so lazily opened
    fds are counted)."""
    assert httpx.get(srv.url + "/", timeout=10).text == "ok"
    time.sleep(0.2)
    return open_fds(srv)


def close(client: RawClient, reset: bool) -> None:
    """Close the client's socket; with `reset`, abortively (SO_LINGER 0 sends RST, not FIN)."""
    if reset:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def assert_recovered(srv, fds: int) -> None:
    assert httpx.get(srv.url + "/", timeout=10).text == "ok"
    wait_until(lambda: open_fds(srv) <= fds, 10, message=f"server fds back to {fds} (now {open_fds(srv)})")


@pytest.fixture
def srv(start_server):
    return start_server(APP)


def test_leaked_tasks_block_neither_requests_nor_shutdown(srv):
    key = "leak-" + uuid.uuid4().hex
    for _ in range(20):
        assert httpx.get(srv.url + "/leak", params={"key": key}, timeout=10).text == "leaked"
    assert result(srv, key) == 20
    assert httpx.get(srv.url + "/", timeout=10).text == "ok"
    started = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(10) in graceful_exit_codes()
    # As uvicorn, the server re-raises SIGTERM once its shutdown is over: the process ends then,
    # without waiting for (or cancelling) the tasks left on the loop.
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_client_disconnects_mid_response(srv, reset):
    fds = settled_fds(srv)
    key = "resp-" + uuid.uuid4().hex
    client = RawClient(port=srv.port)
    client.send(build_request("GET", f"/endless?key={key}"))
    assert client.read_head().status == 200
    client.read_exact(100_000)
    close(client, reset)
    wait_until(lambda: result(srv, key) == "disconnected", 10, message="the app sees the disconnect")
    assert_recovered(srv, fds)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_client_disconnects_mid_request_body(srv, framing, reset):
    fds = settled_fds(srv)
    key = "body-" + uuid.uuid4().hex
    client = RawClient(port=srv.port)
    part = b"x" * 100_000
    if framing == "chunked":
        head = build_request("POST", f"/upload?key={key}", {"Transfer-Encoding": "chunked"})
        client.send(head + chunk(part))
    else:
        client.send(build_request("POST", f"/upload?key={key}", {"Content-Length": "1000000"}) + part)
    wait_until(lambda: result(srv, key + ":bytes") == len(part), 10, message="the app read what was sent")
    close(client, reset)
    wait_until(
        lambda: result(srv, key) == f"disconnected after {len(part)}", 10, message="the app sees http.disconnect"
    )
    assert_recovered(srv, fds)


def test_repeated_disconnects_leak_no_file_descriptors(srv):
    fds = settled_fds(srv)
    for i in range(30):
        key = f"many-{i}-" + uuid.uuid4().hex
        client = RawClient(port=srv.port)
        if i % 2:
            client.send(build_request("GET", f"/endless?key={key}"))
            client.read_head()
        else:
            client.send(build_request("POST", f"/upload?key={key}", {"Content-Length": "100000"}) + b"x" * 1000)
            wait_until(lambda key=key: result(srv, key + ":bytes") == 1000, 10, message="the app read the part")
        close(client, reset=i % 3 == 0)
        wait_until(lambda key=key: str(result(srv, key)).startswith("disconnected"), 10, message="disconnect seen")
    assert_recovered(srv, fds)


def test_sigterm_under_load_finishes_requests_and_refuses_new_connections(start_server):
    srv = start_server("tests.apps.basic:app")
    results: list[str] = []

    def slow_request(key: int) -> None:
        results.append(httpx.get(srv.url + "/sleep", params={"seconds": "1.5", "key": key}, timeout=10).text)

    threads = [threading.Thread(target=slow_request, args=(key,)) for key in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: srv.output.count("SLEEP-STARTED") == 4, 10, message="4 requests running")
    srv.send_signal(signal.SIGTERM)
    # The listening socket closes first: a new connection is refused, not accepted and dropped.
    wait_until(lambda: not port_accepts(srv.port), 5, message="new connections refused")
    for thread in threads:
        thread.join(10)
    assert results == ["slept"] * 4
    assert srv.wait_exit(10) in graceful_exit_codes()


def port_accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True
