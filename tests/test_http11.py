"""HTTP/1.1 protocol behaviour over real TCP sockets."""

import email.utils
import random
import select
import socket
import struct
import sys
import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest

from tests.helpers import IS_UVICORN, SERVER_NAME, RawClient, build_request, chunk


@pytest.fixture(scope="module")
def srv(basic_server):
    return basic_server


def raw(srv, **kw):
    return RawClient(port=srv.port, **kw)


def test_keep_alive_reuses_connection_httpx(srv):
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        ports = {tuple(client.get("/scope").json()["client"]) for _ in range(3)}
    assert len(ports) == 1


def test_keep_alive_raw_sequential_requests(srv):
    with raw(srv) as c:
        for i in range(3):
            r = c.request("GET", f"/scope?i={i}")
            assert r.status == 200
            assert r.version == "HTTP/1.1"
            assert r.header("connection", "").lower() != "close"
            assert r.body and b'"query_string": "i=%d"' % i in r.body


def test_pipelining_responses_in_order(srv):
    with raw(srv) as c:
        c.send(
            build_request("GET", "/scope?n=1")
            + build_request("POST", "/echo", body=b"pipelined-body")
            + build_request("HEAD", "/head")
            + build_request("GET", "/scope?n=4")
        )
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response("HEAD")
        r4 = c.read_response()
    assert r1.status == 200 and b'"query_string": "n=1"' in r1.body
    assert r2.status == 200 and r2.body == b"pipelined-body"
    assert r3.status == 200 and r3.body == b"" and r3.header("content-length") == "5"
    assert r4.status == 200 and b'"query_string": "n=4"' in r4.body


def test_http10_request(srv):
    with raw(srv) as c:
        c.send(b"GET /scope HTTP/1.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert b'"http_version": "1.0"' in r.body
        assert c.is_closed(5), "HTTP/1.0 without keep-alive must close the connection"


@pytest.mark.skipif(
    IS_UVICORN,
    reason="uvicorn's default httptools protocol sends chunked framing to HTTP/1.0 "
    "clients (RFC 9112 forbids it; its h11 protocol gets it right)",
)
def test_http10_streamed_response_is_not_chunked(srv):
    with raw(srv) as c:
        c.send(b"GET /stream?n=3&size=4 HTTP/1.0\r\n\r\n")
        r = c.read_head()
        assert r.status == 200
        assert "chunked" not in (r.header("transfer-encoding") or "")
        assert c.read_eof() == b"AAAABBBBCCCC"


def test_content_length_upload_and_response(srv):
    body = bytes(range(256)) * 40
    r = httpx.post(srv.url + "/echo", content=body, timeout=10)
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-length"] == str(len(body))


def test_chunked_upload(srv):
    parts = [b"hello ", b"chunked ", b"world"]
    with raw(srv) as c:
        c.send(
            build_request("POST", "/echo", {"Transfer-Encoding": "chunked"})
            + b"".join(chunk(p) for p in parts)
            + b"0\r\n\r\n"
        )
        r = c.read_response()
    assert r.status == 200
    assert r.body == b"".join(parts)


def test_chunked_upload_with_httpx_generator(srv):
    def gen():
        for i in range(5):
            yield b"%d-" % i

    r = httpx.post(srv.url + "/echo", content=gen(), timeout=10)
    assert r.status_code == 200 and r.content == b"0-1-2-3-4-"


def test_chunked_response(srv):
    """A streamed response (the app blocks between chunks) without content-length is sent chunked."""
    gate = "gate-" + uuid.uuid4().hex
    with raw(srv) as c:
        c.send(build_request("GET", f"/stream?n=3&size=5&gate={gate}"))
        head = c.read_head()
        assert head.status == 200
        assert "chunked" in (head.header("transfer-encoding") or "").lower(), head.raw_head
        assert head.header("content-length") is None
        first = c.read_chunk()
        httpx.get(srv.url + "/set", params={"key": gate}, timeout=10)
        rest = b""
        while True:
            piece = c.read_chunk()
            if not piece:
                break
            rest += piece
    assert first + rest == b"AAAAABBBBBCCCCC"


def test_streamed_response_body_intact(srv):
    """Several body messages sent back to back: framing is up to the server (chunked or coalesced)."""
    with raw(srv) as c:
        r = c.request("GET", "/stream?n=3&size=5")
        assert r.status == 200
        assert r.body == b"AAAAABBBBBCCCCC"
        assert c.request("GET", "/head").body == b"hello"


def test_head_has_headers_but_no_body(srv):
    with raw(srv) as c:
        r = c.request("HEAD", "/head")
        assert r.status == 200
        assert r.header("content-length") == "5"
        # The connection must still be usable and contain no stray body bytes.
        r2 = c.request("GET", "/head")
        assert r2.body == b"hello"


def test_head_streamed_response_has_no_body(srv):
    with raw(srv) as c:
        r = c.request("HEAD", "/stream?n=2&size=3")
        assert r.status == 200
        r2 = c.request("GET", "/head")
        assert r2.status == 200 and r2.body == b"hello"


def _readable(sock, timeout):
    return bool(select.select([sock], [], [], timeout)[0])


def test_expect_100_continue_is_lazy(srv):
    """100 Continue is sent only when the app first calls receive() (the app sleeps 0.5 s first)."""
    key = uuid.uuid4().hex
    with raw(srv) as c:
        c.send(
            build_request("POST", f"/expect?delay=0.5&key={key}", {"Expect": "100-continue", "Content-Length": "11"})
        )
        t0 = time.monotonic()
        early = _readable(c.sock, 0.3)
        if early:
            data = c.sock.recv(1024)
            elapsed = time.monotonic() - t0
            # Only acceptable if the app had in fact already reached receive() (very loaded machine).
            state = httpx.get(srv.url + f"/results?key={key}", timeout=10).json()["value"]
            assert state == "receiving", f"got {data!r} after {elapsed:.2f}s, before the app called receive()"
            c.buf += data
        head = c.read_head()
        assert head.status == 100, head.raw_head
        c.send(b"hello world")
        r = c.read_response()
    assert r.status == 200 and r.body == b"hello world"


def test_expect_100_continue_not_sent_when_app_does_not_read(srv):
    with raw(srv) as c:
        c.send(build_request("POST", "/no-read", {"Expect": "100-continue", "Content-Length": "5"}))
        head = c.read_head()
        assert head.status == 200, "no 100 Continue when the app responds without reading"
        c.read_body(head)
        assert head.body == b"no-read"


def test_connection_close_request(srv):
    with raw(srv) as c:
        r = c.request("GET", "/scope", {"Connection": "close"})
        assert r.status == 200
        assert (r.header("connection") or "").lower() == "close"
        assert c.is_closed(5)


def segments_received(srv, request: bytes) -> tuple[int, bytes]:
    """Send `request` on a new connection, read to the end; the TCP segments that came in
    (tcp_info's `tcpi_segs_in`, Linux) and the bytes."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    # struct tcp_info (linux/tcp.h): tcpi_segs_out, tcpi_segs_in follow tcpi_bytes_received.
    _segs_out, segs_in = struct.unpack_from("II", info, 136)
    return segs_in, data


@pytest.mark.skipif(IS_UVICORN or sys.platform != "linux", reason="tricorn on Linux: segment counts from tcp_info")
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /status?body=hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /status?body=hello HTTP/1.0\r\n\r\n",
        b"GET /status?body=hello&connection=close HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /status?body=hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
    ids=["request-close", "http10", "response-close", "head"],
)
def test_last_response_ends_in_the_segment_of_the_fin(srv, request_bytes):
    """The SYN-ACK, the acknowledgement of the request, then the response with the FIN: three
    segments, where a response written apart from its FIN makes four."""
    segs_in, data = segments_received(srv, request_bytes)
    assert data.split(b" ", 1)[1].startswith(b"200 OK\r\n") and data.endswith(
        b"\r\n\r\n" if b"HEAD" in request_bytes else b"hello"
    )
    assert segs_in == 3


# The last response of a connection goes out with the FIN: the checks below guard that nothing
# is held back or cut short.


def test_connection_close_streamed_chunks_are_not_held(srv):
    """A response that ends the connection still goes out as the application sends it."""
    key = f"close-gate-{uuid.uuid4().hex}"
    with raw(srv) as c:
        c.send(build_request("GET", f"/stream?n=2&size=4&gate={key}", {"Connection": "close"}))
        head = c.read_head()
        assert head.status == 200
        c.sock.settimeout(3)
        assert c.read_chunk() == b"AAAA", "the first chunk must arrive while the app waits"
        with raw(srv) as other:
            assert other.request("GET", f"/set?key={key}").status == 200
        c.sock.settimeout(10)
        assert c.read_chunk() == b"BBBB"
        assert c.read_chunk() == b""
        assert c.is_closed(5)


def test_connection_close_large_response_to_a_slow_reader(srv):
    """Writes that fill the socket and resume still deliver every byte before the FIN."""
    size = 3 * 1024 * 1024
    with raw(srv, rcvbuf=8192) as c:
        c.send(build_request("GET", f"/random?size={size}&seed=7&chunk=100000", {"Connection": "close"}))
        head = c.read_head()
        time.sleep(0.3)
        body = c.read_eof()
    assert head.status == 200 and head.header("content-length") == str(size)
    assert body == random.Random(7).randbytes(size)


def test_connection_close_ends_before_an_unread_body(srv):
    """The FIN follows the response without waiting for the rest of a body the app did not read
    (the staged close of RFC 9112 §9.6 starts with the response)."""
    with raw(srv) as c:
        c.send(b"POST /no-read HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n12345")
        r = c.read_response()
        assert r.status == 200 and r.body == b"no-read"
        assert c.is_closed(5)


def test_response_connection_close_ends_the_connection(srv):
    with raw(srv) as c:
        r = c.request("GET", "/status?code=200&connection=close&body=bye")
        assert r.status == 200 and r.body == b"bye"
        assert (r.header("connection") or "").lower() == "close"
        assert c.is_closed(5)


def test_http10_keep_alive_keeps_the_connection(srv):
    with raw(srv) as c:
        for i in range(2):
            r = c.request("GET", f"/scope?i={i}", {"Connection": "keep-alive"}, version="HTTP/1.0")
            assert r.status == 200 and b'"query_string": "i=%d"' % i in r.body
            assert (r.header("connection") or "").lower() == "keep-alive"
        assert not c.is_closed(0.3)


def test_pipelined_request_ending_the_connection(srv):
    """The responses before the closing request are whole; nothing after it is answered."""
    with raw(srv) as c:
        c.send(
            build_request("GET", "/scope?n=1")
            + build_request("GET", "/stream?n=2&size=3", {"Connection": "close"})
            + build_request("GET", "/scope?n=3")
        )
        r1 = c.read_response()
        r2 = c.read_response()
        assert r1.status == 200 and b'"query_string": "n=1"' in r1.body
        assert r2.status == 200 and r2.body == b"AAABBB"
        assert c.read_eof() == b""


def test_head_ending_the_connection(srv):
    with raw(srv) as c:
        r = c.request("HEAD", "/head", {"Connection": "close"})
        assert r.status == 200 and r.header("content-length") == "5" and r.body == b""
        assert c.read_eof() == b""


def test_server_and_date_headers(srv):
    r = httpx.get(srv.url + "/scope", timeout=10)
    assert r.headers.get_list("server") == [SERVER_NAME]
    date = email.utils.parsedate_to_datetime(r.headers["date"])
    assert r.headers["date"].endswith("GMT")
    assert abs((datetime.now(timezone.utc) - date).total_seconds()) < 10


def test_response_header_names_lowercase(srv):
    with raw(srv) as c:
        r = c.request("GET", "/head")
    names = [line.split(b":", 1)[0] for line in r.raw_head.split(b"\r\n")[1:] if b":" in line]
    assert names and all(n == n.lower() for n in names), names


def test_status_without_body(srv):
    with raw(srv) as c:
        r = c.request("GET", "/status?code=204")
        assert r.status == 204
        r = c.request("GET", "/status?code=404")
        assert r.status == 404


def test_no_server_no_date_header_options(start_server):
    s = start_server("tests.apps.basic:app", "--no-server-header", "--no-date-header")
    r = httpx.get(s.url + "/head", timeout=10)
    assert r.status_code == 200
    assert "server" not in r.headers
    assert "date" not in r.headers


def test_custom_headers_option(start_server):
    s = start_server("tests.apps.basic:app", "--header", "X-Custom:yes", "--header", "x-other: two words")
    r = httpx.get(s.url + "/head", timeout=10)
    assert r.headers["x-custom"] == "yes"
    assert r.headers["x-other"] == "two words"
    assert r.headers["server"] == SERVER_NAME
    assert "date" in r.headers


def test_server_header_overridden_by_header_option(start_server):
    s = start_server("tests.apps.basic:app", "--header", "server:custom-server")
    r = httpx.get(s.url + "/head", timeout=10)
    assert r.headers.get_list("server") == ["custom-server"]
