"""Overload and size limits: --limit-request-body over HTTP/1.1 and HTTP/2, --limit-concurrency (503, as
uvicorn) and --limit-connections (beyond it, new connections wait in the listen backlog).

The malformed-request catalogue (test_malformed.py) covers the HTTP/1.1 413 rows; uvicorn has neither
--limit-request-body nor --limit-connections, so those tests run against tricorn only.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from hyperframe.frame import DataFrame

from tests.helpers import HOST, IS_UVICORN, RawClient, wait_until
from tests.test_http2 import H2Raw

tricorn_only = pytest.mark.skipif(IS_UVICORN, reason="an option uvicorn does not have")

RECORDER = "tests.apps.recorder:app"


# --- --limit-request-body -------------------------------------------------------------------------
@tricorn_only
def test_request_body_limit_over_http2(start_server):
    s = start_server(RECORDER, "--limit-request-body", "64")
    with H2Raw(s.port) as conn:
        # Announced too large: answered at once, before the app.
        sid = conn.request("/h2-cl", "POST", body=b"a" * 100, extra=[("content-length", "100")])
        assert conn.response(sid).status == 413
        # Not announced: cut off while it streams.
        frame = conn.headers_frame("/h2-stream", "POST", end_stream=False)
        conn.send(frame, DataFrame(frame.stream_id, data=b"a" * 40), DataFrame(frame.stream_id, data=b"a" * 40))
        assert conn.response(frame.stream_id).status == 413
        # Within the limit, on the same connection.
        sid = conn.request("/h2-small", "POST", body=b"a" * 64)
        resp = conn.response(sid)
        assert (resp.status, bytes(resp.data)) == (200, b"ok 64")


@tricorn_only
def test_request_body_limit_allows_exactly_the_limit_over_http11(start_server):
    s = start_server(RECORDER, "--limit-request-body", "64")
    with RawClient(port=s.port) as client:
        assert client.request("POST", "/exact", body=b"a" * 64).body == b"ok 64"
        assert client.request("POST", "/empty").body == b"ok 0"


# --- --limit-concurrency --------------------------------------------------------------------------
def test_limit_concurrency_counts_running_tasks(start_server):
    # uvicorn's rule: 503 once open connections or running tasks reach the limit.
    s = start_server("tests.apps.basic:app", "--limit-concurrency", "3")
    results = {}

    def slow(name):
        results[name] = httpx.get(s.url + "/sleep?seconds=1.5", timeout=10).status_code

    threads = [threading.Thread(target=slow, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    wait_until(lambda: s.output.count("SLEEP-STARTED") == 2, 10, message="two requests running")
    with RawClient(port=s.port) as client:
        resp = client.request("GET", "/head")
        assert resp.status == 503
        assert client.is_closed(3)
    for thread in threads:
        thread.join()
    assert results == {"a": 200, "b": 200}
    assert httpx.get(s.url + "/head", timeout=10).status_code == 200


def test_limit_concurrency_frees_the_slot_of_every_finished_request(start_server):
    # Answers from memory finish within their task's first step (on Python 3.12+ before the task
    # is even scheduled), failing ones too: none may stay counted as running, or the limit would
    # turn into 503s after a few requests.
    s = start_server("tests.apps.basic:app", "--limit-concurrency", "2")
    with httpx.Client(base_url=s.url, timeout=10) as client:
        for _ in range(5):
            assert client.get("/head").status_code == 200
            assert client.get("/raise-before").status_code == 500
            assert client.get("/no-response").status_code == 500
        assert client.get("/head").status_code == 200


# --- --limit-connections --------------------------------------------------------------------------
def _answered(client: RawClient, timeout: float) -> bool:
    client.sock.settimeout(timeout)
    try:
        return client.read_response().status == 200
    except TimeoutError:
        return False


@tricorn_only
def test_limit_connections_holds_new_connections_in_the_backlog(start_server):
    s = start_server(RECORDER, "--limit-connections", "2", "--timeout-keep-alive", "30")
    first, second = RawClient(port=s.port), RawClient(port=s.port)
    try:
        assert first.request("GET", "/one").status == 200
        assert second.request("GET", "/two").status == 200
        # The kernel completes the handshake (backlog), but the server does not accept it yet.
        with RawClient(port=s.port) as third:
            third.send(b"GET /three HTTP/1.1\r\nHost: t\r\n\r\n")
            assert not _answered(third, 1.0), "a third connection must wait while two are open"
            first.close()
            start = time.monotonic()
            assert _answered(third, 5.0), "accepted once a connection closed"
            assert time.monotonic() - start < 2
    finally:
        first.close()
        second.close()


@tricorn_only
def test_limit_connections_recovers_after_a_burst(start_server):
    s = start_server(RECORDER, "--limit-connections", "4")
    statuses = []

    def one():
        statuses.append(httpx.get(s.url + "/burst", headers={"connection": "close"}, timeout=20).status_code)

    threads = [threading.Thread(target=one) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 40


def test_connections_beyond_no_limit_are_accepted(start_server):
    s = start_server(RECORDER)
    clients = [socket.create_connection((HOST, s.port), timeout=5) for _ in range(50)]
    try:
        assert httpx.get(s.url + "/many", timeout=10).status_code == 200
    finally:
        for client in clients:
            client.close()


# --- request head size ----------------------------------------------------------------------------
@tricorn_only
def test_head_size_limit_option_gives_431(start_server):
    s = start_server(RECORDER, "--h11-max-incomplete-event-size", "16384")
    with RawClient(port=s.port) as client:
        assert client.request("GET", "/fits", headers={"X-A": "a" * 10_000}).status == 200
    with RawClient(port=s.port) as client:
        assert client.request("GET", "/too-big", headers={"X-A": "a" * 50_000}).status == 431
        assert client.is_closed(3)


@tricorn_only
def test_limits_and_timeouts_read_from_the_environment(start_server):
    s = start_server(RECORDER, env={"TRICORN_LIMIT_REQUEST_BODY": "8", "TRICORN_TIMEOUT_HEADER_READ": "0.5"})
    with RawClient(port=s.port) as client:
        assert client.request("POST", "/env", body=b"a" * 9).status == 413
    with RawClient(port=s.port) as client:
        client.send(b"GET /env-slow HTTP/1.1\r\n")
        assert client.is_closed(3)
