"""Slow and stalled clients: --timeout-header-read (slowloris), --timeout-body-read, --timeout-send, and
--timeout-keep-alive next to them, over real sockets with short timeouts.

uvicorn has none of the first three options, so the module runs against tricorn only.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest
from hyperframe.frame import DataFrame, WindowUpdateFrame

from tests.helpers import IS_UVICORN, RawClient, wait_until
from tests.test_http2 import H2Raw

pytestmark = pytest.mark.skipif(IS_UVICORN, reason="tricorn's timeouts: uvicorn has no such options")

RECORDER = "tests.apps.recorder:app"


def events(port: int) -> list[str]:
    with RawClient(port=port) as client:
        return json.loads(client.request("GET", "/__seen").body)["events"]


def closed_within(client: RawClient, seconds: float) -> float | None:
    """Seconds until the server closed the connection, or None if it stayed open that long."""
    start = time.monotonic()
    return time.monotonic() - start if client.is_closed(seconds) else None


# --- request head (slowloris) ---------------------------------------------------------------------
def test_head_trickled_byte_by_byte_is_cut_off(start_server):
    s = start_server(RECORDER, "--timeout-header-read", "1", "--timeout-keep-alive", "30")
    with RawClient(port=s.port) as client:
        start = time.monotonic()
        client.send(b"GET /slow HTTP/1.1\r\n")
        closed = False
        # A header line every 0.2 s: data keeps coming, but the head never completes.
        for i in range(40):
            try:
                client.send(b"X-%d: a\r\n" % i)
            except OSError:
                closed = True
                break
            if client.is_closed(0.2):
                closed = True
                break
        elapsed = time.monotonic() - start
    assert closed, "a head that never completes must be cut off"
    assert 0.8 <= elapsed <= 3.5, elapsed
    assert "/slow" not in json.dumps(events(s.port))


def test_head_completed_in_time_is_served(start_server):
    s = start_server(RECORDER, "--timeout-header-read", "2")
    with RawClient(port=s.port) as client:
        client.send(b"GET /in-time HTTP/1.1\r\n")
        time.sleep(0.5)
        client.send(b"Host: t\r\n")
        time.sleep(0.5)
        client.send(b"\r\n")
        assert client.read_response().status == 200


def test_header_timer_starts_with_the_first_byte_not_with_idleness(start_server):
    # keep-alive 1 s < header-read 3 s: a head begun 0.5 s into idleness may take until 3.5 s.
    s = start_server(RECORDER, "--timeout-header-read", "3", "--timeout-keep-alive", "1")
    with RawClient(port=s.port) as client:
        assert client.request("GET", "/first").status == 200
        time.sleep(0.5)
        client.send(b"GET /second HTTP/1.1\r\n")
        time.sleep(1.5)  # past the keep-alive timeout, within the header timeout
        client.send(b"Host: t\r\n\r\n")
        assert client.read_response().status == 200


def test_idle_keep_alive_is_not_cut_by_the_shorter_header_timeout(start_server):
    s = start_server(RECORDER, "--timeout-header-read", "0.5", "--timeout-keep-alive", "2")
    with RawClient(port=s.port) as client:
        assert client.request("GET", "/a").status == 200
        assert not client.is_closed(1.2), "idle, no head begun: only --timeout-keep-alive applies"
        assert client.request("GET", "/b").status == 200
        elapsed = closed_within(client, 5)
        assert elapsed is not None and 1.5 <= elapsed <= 3.5, elapsed


def test_fresh_connection_that_sends_nothing_closes_after_keep_alive(start_server):
    s = start_server(RECORDER, "--timeout-keep-alive", "1")
    with RawClient(port=s.port) as client:
        elapsed = closed_within(client, 5)
    assert elapsed is not None and 0.7 <= elapsed <= 3, elapsed


def test_header_timeout_zero_disables_it(start_server):
    s = start_server(RECORDER, "--timeout-header-read", "0", "--timeout-keep-alive", "1")
    with RawClient(port=s.port) as client:
        client.send(b"GET /no-limit HTTP/1.1\r\n")
        assert not client.is_closed(2), "no header timeout, and a head in progress is not idle"
        client.send(b"Host: t\r\n\r\n")
        assert client.read_response().status == 200


# --- request body ---------------------------------------------------------------------------------
def test_stalled_content_length_body_gets_408_and_disconnect(start_server):
    s = start_server(RECORDER, "--timeout-body-read", "1")
    with RawClient(port=s.port) as client:
        start = time.monotonic()
        client.send(b"POST /stall HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        resp = client.read_response()
        elapsed = time.monotonic() - start
        assert resp.status == 408
        assert (resp.header("connection") or "").lower() == "close"
        assert client.is_closed(3)
    assert 0.8 <= elapsed <= 3.5, elapsed
    wait_until(lambda: "/stall disconnect after 10" in events(s.port), 5, message="app got http.disconnect")


def test_stalled_chunked_body_gets_408(start_server):
    s = start_server(RECORDER, "--timeout-body-read", "1")
    with RawClient(port=s.port) as client:
        client.send(b"POST /stall-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        assert client.read_response().status == 408
        assert client.is_closed(3)


def test_slow_body_that_keeps_coming_is_not_cut_off(start_server):
    s = start_server(RECORDER, "--timeout-body-read", "1")
    with RawClient(port=s.port) as client:
        client.send(b"POST /trickle HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
        for byte in b"hello":
            time.sleep(0.6)  # each pause is under the timeout; the whole body takes longer
            client.send(bytes([byte]))
        resp = client.read_response()
        assert (resp.status, resp.body) == (200, b"ok 5")


def test_body_stall_counts_only_while_the_app_waits(start_server):
    # The app sleeps 1 s before reading; the client pauses 1.5 s mid-body: only 0.5 s of it is a wait.
    s = start_server(RECORDER, "--timeout-body-read", "1")
    with RawClient(port=s.port) as client:
        client.send(b"POST /slow-read?delay=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n" + b"x" * 10)
        time.sleep(1.5)
        client.send(b"y" * 10)
        resp = client.read_response()
        assert (resp.status, resp.body) == (200, b"ok 20")


def test_body_stall_after_the_response_started_closes_the_connection(start_server):
    s = start_server("tests.apps.basic:app", "--timeout-body-read", "1")
    with RawClient(port=s.port) as client:
        client.send(b"POST /echo-stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        head = client.read_head()
        assert head.status == 200
        assert client.read_chunk() == b"hello"
        with pytest.raises(Exception):  # noqa: B017 - the chunked body never ends: EOF or reset
            client.read_chunk()


# --- sending to a client that does not read -------------------------------------------------------
def test_client_that_stops_reading_is_dropped(start_server):
    s = start_server(RECORDER, "--timeout-send", "1")
    size = 64 * 1024 * 1024
    with RawClient(port=s.port, rcvbuf=4096) as client:
        client.send(b"GET /big?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        start = time.monotonic()
        # The app's send() waits for the client; once the server gives up it returns and the app ends.
        wait_until(lambda: any(e.startswith("/big") for e in events(s.port)), 10, message="app's send() released")
        elapsed = time.monotonic() - start
        received = len(client.read_eof())
    assert elapsed <= 6, elapsed
    assert received < size, "the response cannot have been delivered in full"


def test_slow_reader_that_keeps_reading_is_not_dropped(start_server):
    s = start_server(RECORDER, "--timeout-send", "1")
    size = 4 * 1024 * 1024
    with RawClient(port=s.port, rcvbuf=65536) as client:
        client.send(b"GET /big?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        head = client.read_head()
        assert head.status == 200
        received = len(client.buf)
        client.buf = b""
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            client.sock.settimeout(2)
            received += len(client.sock.recv(256 * 1024))
            time.sleep(0.4)  # pauses under the timeout
        client.sock.settimeout(10)
        while received < size:
            data = client.sock.recv(1 << 20)
            assert data, f"connection dropped after {received} bytes"
            received += len(data)
    assert received == size


# --- HTTP/2 ---------------------------------------------------------------------------------------
def test_http2_idle_connection_gets_goaway_after_keep_alive(start_server):
    s = start_server(RECORDER, "--timeout-keep-alive", "1")
    with H2Raw(s.port) as conn:
        assert conn.get("/h2").status == 200
        start = time.monotonic()
        assert conn.wait_closed(6)
        elapsed = time.monotonic() - start
        assert conn.goaway is not None and conn.goaway.error_code == 0
    assert 0.7 <= elapsed <= 3.5, elapsed


def test_http2_connection_with_a_long_request_is_not_idle(start_server):
    s = start_server("tests.apps.basic:app", "--timeout-keep-alive", "1")
    with H2Raw(s.port) as conn:
        resp = conn.get("/sleep?seconds=2.5")
        assert (resp.status, bytes(resp.data)) == (200, b"slept")
        assert conn.goaway is None


def test_http2_stalled_body_gets_408(start_server):
    s = start_server(RECORDER, "--timeout-body-read", "1")
    with H2Raw(s.port) as conn:
        frame = conn.headers_frame("/h2-stall", "POST", end_stream=False)
        conn.send(frame)
        conn.send(DataFrame(frame.stream_id, data=b"hello"))
        resp = conn.response(frame.stream_id, timeout=5)
        assert resp.status == 408
        assert conn.get("/after").status == 200, "only the stream ends, not the connection"


def test_http2_stream_without_flow_control_credit_is_given_up(start_server):
    """A client can starve one stream of window while the connection stays busy: the stream's send stalls."""
    s = start_server(RECORDER, "--timeout-send", "1", "--timeout-keep-alive", "30")
    with H2Raw(s.port) as conn:
        target = f"/big?size={8 << 20}&stalled=h2"
        frame = conn.headers_frame(target)
        conn.stall.add(frame.stream_id)
        conn.send(frame)
        start = time.monotonic()
        released = None
        while released is None and time.monotonic() - start < 8:
            # Other requests keep the connection active meanwhile.
            assert conn.get("/busy").status == 200
            released = next((e for e in events(s.port) if e.startswith(target)), None)
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        # The app's pending send() returned: the rest of its sends are no-ops, as on a lost connection.
        assert released is not None, "the app's send() was never released"
        assert 0.8 <= elapsed <= 4, elapsed
        # Credit granted now finds the response given up: the stream is reset, the connection lives on.
        conn.stall.discard(frame.stream_id)
        conn.send(WindowUpdateFrame(frame.stream_id, window_increment=1 << 24))
        conn.until(lambda: conn.streams[frame.stream_id].done, 5, "stream reset")
        assert conn.streams[frame.stream_id].reset is not None
        assert len(conn.streams[frame.stream_id].data) < 8 << 20
        assert conn.get("/after").status == 200


# --- TLS handshake ----------------------------------------------------------------------------------
def test_stalled_tls_handshake_is_dropped(start_server, tls_certs):
    s = start_server(
        RECORDER,
        f"--ssl-certfile={tls_certs / 'server.pem'}",
        f"--ssl-keyfile={tls_certs / 'server.key'}",
        "--timeout-tls-handshake",
        "1",
        "--timeout-keep-alive",
        "30",
    )
    with RawClient(port=s.port) as stalled:
        # The start of a TLS record header (handshake, TLS 1.0 record version): the rest never comes.
        stalled.send(b"\x16\x03\x01")
        elapsed = closed_within(stalled, 5)
    assert elapsed is not None, "a handshake that never completes must be dropped"
    assert 0.8 <= elapsed <= 3.0, elapsed
    context = ssl.create_default_context(cafile=str(tls_certs / "ca.pem"))
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as client:
            client.sendall(b"GET /after-stall HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
