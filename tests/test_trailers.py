"""The ASGI `http.response.trailers` extension: HTTP/2, and HTTP/1.1 chunked with `TE: trailers`."""

import socket

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.helpers import SERVER, RawClient

pytestmark = pytest.mark.skipif(SERVER == "uvicorn", reason="uvicorn has no trailers extension in its release")


@pytest.fixture(scope="module")
def srv():
    from tests.helpers import ServerProcess

    with ServerProcess("tests.apps.trailers:app") as s:
        s.wait_ready()
        yield s


def test_not_advertised_without_te_trailers_on_http11(srv):
    assert httpx.get(srv.url, timeout=10).json() == {"trailers": False}


def test_http11_chunked_trailers_with_te(srv):
    with RawClient(port=srv.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        raw = c.read_eof()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"part one, " in body and b"part two" in body
    tail = body.lower()
    assert b"grpc-status: 0" in tail and b"grpc-message: ok" in tail


def test_http2_trailers(srv):
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")], end_stream=True
    )
    sock.sendall(conn.data_to_send())
    body, trailers, ended = b"", None, False
    while not ended:
        data = sock.recv(65536)
        assert data, "connection closed before the stream ended"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                trailers = dict(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
        sock.sendall(conn.data_to_send())
    sock.close()
    assert body == b"part one, part two"
    assert trailers == {b"grpc-status": b"0", b"grpc-message": b"ok"}
