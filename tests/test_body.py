"""Request/response bodies: streaming both ways, disconnects, backpressure."""

import os
import select
import time
import uuid

import httpx
import pytest

from tests.helpers import RawClient, build_request, chunk, wait_until


@pytest.fixture(scope="module")
def srv(basic_server):
    return basic_server


def result(srv, key):
    return httpx.get(srv.url + "/results", params={"key": key}, timeout=10).json()["value"]


def test_streamed_upload_and_download_interleaved(srv):
    """Each uploaded chunk is echoed back by the app before the client sends the next one."""
    with RawClient(port=srv.port) as c:
        c.send(build_request("POST", "/echo-stream", {"Transfer-Encoding": "chunked"}))
        c.send(chunk(b"first-chunk"))
        head = c.read_head()
        assert head.status == 200
        assert "chunked" in head.header("transfer-encoding", "")
        received = c.read_chunk()
        for part in (b"second", b"third"):
            c.send(chunk(part))
            # The echo may be split in several chunks: read until we have the whole part.
            got = b""
            while len(got) < len(part):
                got += c.read_chunk()
            assert got == part
        c.send(b"0\r\n\r\n")
        tail = b""
        while True:
            piece = c.read_chunk()
            if not piece:
                break
            tail += piece
    assert received == b"first-chunk" and tail == b""


def test_upload_1mib_content_length(srv):
    body = os.urandom(1024 * 1024)
    r = httpx.post(srv.url + "/echo", content=body, timeout=30)
    assert r.status_code == 200
    assert r.content == body
    # A 1 MiB body arrives as several http.request messages (more_body=True on all but the last).
    assert int(r.headers["x-messages"]) >= 2


def test_upload_1mib_chunked(srv):
    body = os.urandom(1024 * 1024)

    def gen():
        for i in range(0, len(body), 100_000):
            yield body[i : i + 100_000]

    r = httpx.post(srv.url + "/echo", content=gen(), timeout=30)
    assert r.status_code == 200 and r.content == body


def test_empty_body_single_message(srv):
    r = httpx.post(srv.url + "/echo", content=b"", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["x-messages"] == "1"


@pytest.mark.parametrize("size", [1000, 65536, 100_000, 200_000])
def test_streamed_download_arrives_before_app_finishes(srv, size):
    """The whole first chunk reaches the client while the app is still blocked before sending
    the second: a large chunk's tail, which may wait for the next write (`HOLD_TAIL`), must not
    wait for it."""
    gate = "gate-" + uuid.uuid4().hex
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", srv.url + "/stream", params={"n": 3, "size": size, "gate": gate}) as r:
            it = r.iter_raw()
            first = b""
            while len(first) < size:
                first += next(it)
            assert first == b"A" * size
            httpx.get(srv.url + "/set", params={"key": gate}, timeout=10)
            rest = first + b"".join(it)
    assert rest == b"A" * size + b"B" * size + b"C" * size


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "h2c"])
def test_large_streamed_download(srv, http2):
    """64 KiB chunks, each written on its own (`WRITE_ALONE`), arrive whole and in order."""
    with httpx.Client(http1=not http2, http2=http2, timeout=30) as client:
        r = client.get(srv.url + "/stream", params={"n": 64, "size": 65536})
    assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert r.content == b"".join(bytes([65 + i % 26]) * 65536 for i in range(64))


def test_disconnect_reaches_waiting_receive(srv):
    key = "disc-" + uuid.uuid4().hex
    c = RawClient(port=srv.port)
    c.send(build_request("GET", f"/wait-disconnect?key={key}"))
    wait_until(lambda: result(srv, key) == "waiting:http.request", 10, message="app waiting in receive()")
    c.close()
    wait_until(lambda: result(srv, key) == "got:http.disconnect", 10, message="http.disconnect delivered")


def test_disconnect_during_body_upload(srv):
    key = "bpd-" + uuid.uuid4().hex
    c = RawClient(port=srv.port)
    c.send(build_request("POST", f"/bp-recv?key={key}", {"Content-Length": "100000"}) + b"x" * 1000)
    wait_until(lambda: result(srv, key) == "waiting", 10, message="app started")
    c.close()
    httpx.get(srv.url + "/set", params={"key": key + ":go"}, timeout=10)
    wait_until(lambda: result(srv, key) == "disconnected", 10, message="http.disconnect after partial body")


def test_backpressure_send_waits_for_slow_client(srv):
    """A client that does not read: send() must block instead of buffering the whole response."""
    total = 64 * 1024 * 1024
    key = "bps-" + uuid.uuid4().hex
    c = RawClient(port=srv.port, rcvbuf=32 * 1024, timeout=30)
    try:
        c.send(build_request("GET", f"/bp-send?key={key}&total={total}&chunk=65536"))
        wait_until(lambda: (result(srv, key) or 0) > 0, 10, message="app started sending")
        # Wait until the amount accepted by send() stops growing for a while.
        last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 15
        while time.monotonic() < deadline:
            value = result(srv, key)
            if value != last:
                last, stable_since = value, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                break
            time.sleep(0.1)
        print("bp-send accepted", last)
        assert last < total // 4, f"app could send {last} of {total} bytes to a client that reads nothing"
        assert result(srv, key + ":done") is None
        # Now read everything: the response must be complete and intact.
        head = c.read_head()
        assert head.status == 200
        received = len(c.buf)
        c.buf = b""
        while received < total:
            data = c.sock.recv(1 << 20)
            assert data, f"connection closed after {received} bytes"
            received += len(data)
        assert received == total
        wait_until(lambda: result(srv, key + ":done") == total, 10, message="app finished sending")
    finally:
        c.close()


def test_backpressure_upload_not_buffered_when_app_does_not_read(srv):
    """A large upload to an app that does not call receive() must stall instead of being buffered."""
    total = 128 * 1024 * 1024
    key = "bpr-" + uuid.uuid4().hex
    c = RawClient(port=srv.port, sndbuf=64 * 1024, timeout=30)
    try:
        c.send(build_request("POST", f"/bp-recv?key={key}", {"Content-Length": str(total)}))
        wait_until(lambda: result(srv, key) == "waiting", 10, message="app started")
        piece = b"y" * 65536
        sent = 0
        c.sock.setblocking(False)
        deadline = time.monotonic() + 20
        while sent < total and time.monotonic() < deadline:
            try:
                sent += c.sock.send(piece[: min(len(piece), total - sent)])
            except BlockingIOError:
                if not select.select([], [c.sock], [], 1.0)[1]:
                    break  # no progress for 1 s: the server stopped reading
        print("bp-recv accepted", sent)
        assert sent < total // 2, f"server accepted {sent} of {total} bytes while the app was not reading"
        # Let the app read: the rest of the body must flow and arrive intact.
        httpx.get(srv.url + "/set", params={"key": key + ":go"}, timeout=10)
        c.sock.setblocking(True)
        c.sock.settimeout(30)
        while sent < total:
            sent += c.sock.send(piece[: min(len(piece), total - sent)])
        r = c.read_response()
        assert r.status == 200
        assert r.body == str(total).encode()
    finally:
        c.close()


def test_server_still_serves_after_body_tests(srv):
    assert httpx.get(srv.url + "/head", timeout=10).text == "hello"
