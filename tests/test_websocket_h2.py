"""WebSockets over HTTP/2 (RFC 8441 extended CONNECT), black-box: h2c by prior knowledge and h2 over TLS/ALPN.

Client: the ``h2`` library (``H2Connection(client_side=True)``) over a raw socket. It checks that the server
advertises SETTINGS_ENABLE_CONNECT_PROTOCOL=1, opens a stream with ``:method CONNECT`` + ``:protocol websocket``
and then carries RFC 6455 frames (client-masked, built by ``ws_frame`` below) in DATA frames of that stream.
Server-side observations come back through ``/results?key=K`` of ``tests.apps.ws:app``, asked on the same
HTTP/2 connection as a plain GET.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import time
import uuid
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from tests.helpers import HOST, IS_UVICORN, ServerProcess, SocketClient

pytestmark = pytest.mark.skipif(IS_UVICORN, reason="uvicorn does not speak HTTP/2")

APP = "tests.apps.ws:app"
ENABLE_CONNECT_PROTOCOL = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL  # 0x8
assert ENABLE_CONNECT_PROTOCOL == 0x8

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


# ---------------------------------------------------------------------------------------------
# RFC 6455 framing
# ---------------------------------------------------------------------------------------------
def ws_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One client frame (always masked, as RFC 6455 requires of a client)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def parse_ws_frame(buf: bytearray):
    """(fin, opcode, payload) of the first complete server frame in ``buf`` (consumed), or None."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    assert not b1 & 0x80, "server frames must not be masked"
    assert not b0 & 0x70, f"unexpected RSV bits: {b0:#x}"
    n, pos = b1 & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        (n,) = struct.unpack("!H", buf[2:4])
        pos = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        (n,) = struct.unpack("!Q", buf[2:10])
        pos = 10
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos : pos + n])
    del buf[: pos + n]
    return bool(b0 & 0x80), b0 & 0x0F, payload


# ---------------------------------------------------------------------------------------------
# An HTTP/2 client (h2) carrying several WebSockets and plain requests
# ---------------------------------------------------------------------------------------------
@dataclass
class H2Stream:
    headers: list | None = None  # [(str, str)]
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None
    messages: list = field(default_factory=list)  # complete WebSocket messages: (opcode, payload)
    _fragments: list = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return int(dict(self.headers)[":status"]) if self.headers else None

    def header(self, name: str) -> str | None:
        return dict(self.headers or []).get(name)


class H2Client(SocketClient):
    def __init__(self, port: int, tls_certs=None, timeout: float = 10.0):
        self.port = port
        raw = socket.create_connection((HOST, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.scheme = "http"
        if tls_certs is not None:
            ctx = ssl.create_default_context(cafile=str(tls_certs / "ca.pem"))
            ctx.set_alpn_protocols(["h2"])
            raw = ctx.wrap_socket(raw, server_hostname=HOST)
            assert raw.selected_alpn_protocol() == "h2"
            self.scheme = "https"
        self.sock = raw
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.streams: dict[int, H2Stream] = {}
        self.settings_received = False
        self.closed = False
        self.goaway = None
        self.flush()

    # -- I/O ------------------------------------------------------------------------------------
    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _read(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            self._handle(event)
        self.flush()

    def _handle(self, event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received = True
        elif isinstance(event, (h2.events.ResponseReceived, h2.events.InformationalResponseReceived)):
            self.streams[event.stream_id].headers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams[event.stream_id]
            stream.data.extend(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self._ws_parse(stream)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    @staticmethod
    def _ws_parse(stream: H2Stream) -> None:
        if stream.status != 200 or stream.header("content-type") == "application/json":
            return  # a plain response (or a refused WebSocket): the body is not WebSocket frames
        while (frame := parse_ws_frame(stream.data)) is not None:
            fin, opcode, payload = frame
            if opcode >= 0x8:  # control frames are never fragmented
                stream.messages.append((opcode, payload))
                continue
            stream._fragments.append((opcode, payload))
            if fin:
                first = stream._fragments[0][0]
                stream.messages.append((first, b"".join(p for _, p in stream._fragments)))
                stream._fragments.clear()

    def until(self, predicate, timeout: float = 10.0, message: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise AssertionError(f"{message}: not met (closed={self.closed}, goaway={self.goaway})")
            self._read(min(remaining, 0.5))

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        """Send ``data`` on ``sid`` within the flow-control windows and the peer's max frame size."""
        view = memoryview(data)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self._read(0.5)
                continue
            piece, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(piece), end_stream=end_stream and not view)
            self.flush()
        if not data and end_stream and self.streams[sid].reset is None:
            # (after RST_STREAM, e.g. NO_ERROR following a complete response, RFC 9113 8.1, there is nothing to end)
            self.conn.end_stream(sid)
            self.flush()

    # -- requests -------------------------------------------------------------------------------
    def _start(self, headers: list, end_stream: bool) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = H2Stream()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        return sid

    def start_get(self, path: str) -> int:
        """Send a GET without waiting for the answer; returns the stream id."""
        return self._start(
            [(":method", "GET"), (":scheme", self.scheme), (":path", path), (":authority", f"{HOST}:{self.port}")],
            end_stream=True,
        )

    def get(self, path: str, timeout: float = 10.0) -> H2Stream:
        stream = self.streams[self.start_get(path)]
        self.until(lambda: stream.ended or stream.reset is not None, timeout, f"GET {path}")
        return stream

    def ws_open(self, path: str, extra=(), wait: bool = True) -> int:
        """RFC 8441 section 4: extended CONNECT with :protocol websocket; returns the stream id."""
        self.until(lambda: self.settings_received, message="server SETTINGS")
        sid = self._start(
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", self.scheme),
                (":path", path),
                (":authority", f"{HOST}:{self.port}"),
                ("sec-websocket-version", "13"),
                *extra,
            ],
            end_stream=False,
        )
        if wait:
            stream = self.streams[sid]
            self.until(lambda: stream.headers or stream.reset is not None or stream.ended, message="CONNECT answer")
        return sid

    def ws_send(self, sid: int, message, opcode: int | None = None) -> None:
        if opcode is None:
            opcode = TEXT if isinstance(message, str) else BINARY
        payload = message.encode() if isinstance(message, str) else message
        self.send_data(sid, ws_frame(opcode, payload))

    def ws_recv(self, sid: int, timeout: float = 10.0):
        """The next WebSocket message on ``sid``: str for text, bytes for binary, ("close", code, reason)."""
        stream = self.streams[sid]
        self.until(
            lambda: stream.messages or stream.ended or stream.reset is not None,
            timeout,
            f"a WebSocket message on stream {sid}",
        )
        assert stream.messages, f"stream {sid} ended (reset={stream.reset}) without a message"
        opcode, payload = stream.messages.pop(0)
        if opcode == TEXT:
            return payload.decode()
        if opcode == BINARY:
            return payload
        if opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            return ("close", code, payload[2:].decode())
        return (opcode, payload)

    def ws_wait_end(self, sid: int, timeout: float = 10.0) -> H2Stream:
        stream = self.streams[sid]
        self.until(lambda: stream.ended or stream.reset is not None, timeout, f"end of stream {sid}")
        return stream


def results(client: H2Client, key: str):
    """RESULTS[key] of the app, asked with a plain GET on the same HTTP/2 connection."""
    resp = client.get(f"/results?key={key}")
    assert resp.status == 200, resp
    return json.loads(bytes(resp.data))


def wait_result(client: H2Client, key: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while (value := results(client, key)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert value is not None, f"no result {key!r}"
    return value


def new_key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# Fixtures: one h2c server and one TLS server for the module, both running the WebSocket app
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def h2c_ws_server():
    with ServerProcess(APP) as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture(scope="module")
def tls_ws_server(tls_certs):
    args = ["--ssl-certfile", str(tls_certs / "server.pem"), "--ssl-keyfile", str(tls_certs / "server.key")]
    with ServerProcess(APP, *args) as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture(params=["h2c", "tls"])
def transport(request, tls_certs):
    """(H2Client factory, expected WebSocket scheme, server) for h2c prior knowledge and for h2 over TLS."""
    if request.param == "h2c":
        srv = request.getfixturevalue("h2c_ws_server")
        return (lambda: H2Client(srv.port)), "ws", srv
    srv = request.getfixturevalue("tls_ws_server")
    return (lambda: H2Client(srv.port, tls_certs=tls_certs)), "wss", srv


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def test_settings_enable_connect_protocol(transport):
    factory, _, _ = transport
    with factory() as client:
        client.until(lambda: client.settings_received, message="server SETTINGS")
        assert client.conn.remote_settings[ENABLE_CONNECT_PROTOCOL] == 1


def test_connect_accepted(transport):
    factory, _, _ = transport
    with factory() as client:
        sid = client.ws_open("/echo")
        stream = client.streams[sid]
        assert stream.status == 200, (stream.headers, stream.reset)
        assert not stream.ended and stream.reset is None, "the tunnel stays open"
        # RFC 8441 section 5: no key/accept exchange, no 101, no Upgrade/Connection over HTTP/2.
        names = {name for name, _ in stream.headers}
        assert not names & {"sec-websocket-accept", "upgrade", "connection"}, stream.headers


def test_echo_text_and_bytes(transport):
    factory, _, _ = transport
    with factory() as client:
        sid = client.ws_open("/echo")
        assert client.streams[sid].status == 200
        messages = ["hello over h2", "", "héllo wörld ✓ 🎉", b"\x00\x01\xff", b"", "x" * 70000, os.urandom(1 << 20)]
        for message in messages:
            client.ws_send(sid, message)
            got = client.ws_recv(sid)
            assert type(got) is type(message)
            assert got == message


def test_fragmented_and_ping(transport):
    factory, _, _ = transport
    with factory() as client:
        sid = client.ws_open("/echo")
        client.send_data(sid, ws_frame(TEXT, b"frag", fin=False) + ws_frame(0x0, b"mented", fin=True))
        assert client.ws_recv(sid) == "fragmented"
        client.send_data(sid, ws_frame(PING, b"are you there"))
        assert client.ws_recv(sid) == (PONG, b"are you there")


def test_scope(transport):
    factory, scheme, srv = transport
    with factory() as client:
        sid = client.ws_open(
            "/scope/a%20b?x=1", extra=[("x-custom", "Value-1"), ("sec-websocket-protocol", "chat, superchat")]
        )
        assert client.streams[sid].status == 200
        scope = json.loads(client.ws_recv(sid))
    assert scope["type"] == "websocket"
    assert scope["http_version"] == "2"
    assert scope["scheme"] == scheme
    assert scope["path"] == "/scope/a b"
    assert scope["raw_path"] == "/scope/a%20b"
    assert scope["query_string"] == "x=1"
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert scope["first_message"] == {"type": "websocket.connect"}
    assert scope["server"] == [HOST, srv.port]
    assert scope["client"][0] == HOST
    headers = scope["headers"]
    assert ["x-custom", "Value-1"] in headers
    assert ["sec-websocket-version", "13"] in headers
    assert not any(name.startswith(":") for name, _ in headers), headers
    assert scope["header_types"] == ["bytes"]


def test_subprotocol_and_extra_headers(transport):
    factory, _, _ = transport
    with factory() as client:
        sid = client.ws_open("/subprotocol", extra=[("sec-websocket-protocol", "one, two")])
        stream = client.streams[sid]
        assert stream.status == 200
        assert stream.header("sec-websocket-protocol") == "two"
        assert stream.header("x-ws-extra") == "yes"
        assert json.loads(client.ws_recv(sid)) == ["one", "two"]


def test_client_close_handshake(transport):
    """The client closes with 4003: the server echoes the code, ends the stream, and the app sees the code."""
    factory, _, _ = transport
    key = new_key("h2-client-close")
    with factory() as client:
        sid = client.ws_open(f"/echo?key={key}")
        client.ws_send(sid, "before close")
        assert client.ws_recv(sid) == "before close"
        client.send_data(sid, ws_frame(CLOSE, close_payload(4003, "client bye")))
        kind, code, _reason = client.ws_recv(sid)
        assert (kind, code) == ("close", 4003)
        client.send_data(sid, b"", end_stream=True)
        stream = client.ws_wait_end(sid)
        assert stream.reset in (None, 0), f"stream reset with {stream.reset} instead of a clean end"
        assert wait_result(client, key) == {"type": "websocket.disconnect", "code": 4003, "reason": "client bye"}
        # The HTTP/2 connection outlives the WebSocket.
        sid2 = client.ws_open("/echo")
        client.ws_send(sid2, "again")
        assert client.ws_recv(sid2) == "again"


def test_server_close_code(transport):
    """The app closes with 4001 and a reason: the client gets that close frame, answers, the stream ends."""
    factory, _, _ = transport
    with factory() as client:
        sid = client.ws_open("/close?code=4001&reason=go+away")
        assert client.streams[sid].status == 200
        assert client.ws_recv(sid) == ("close", 4001, "go away")
        client.send_data(sid, ws_frame(CLOSE, close_payload(4001)), end_stream=True)
        stream = client.ws_wait_end(sid)
        assert stream.reset in (None, 0), f"stream reset with {stream.reset} instead of a clean end"
        assert client.get("/plain").status == 200


def test_denied_before_accept(transport):
    """websocket.close before accept: an HTTP 403 on the CONNECT stream (as for HTTP/1.1)."""
    factory, _, _ = transport
    with factory() as client:
        sid = client.ws_open("/deny")
        stream = client.ws_wait_end(sid)
        assert stream.status == 403, (stream.headers, stream.reset)
        assert client.get("/plain").status == 200


def test_two_websockets_and_a_get_on_one_connection(transport):
    factory, _, _ = transport
    key_a, key_b = new_key("h2-mux-a"), new_key("h2-mux-b")
    with factory() as client:
        a = client.ws_open(f"/echo?key={key_a}")
        b = client.ws_open(f"/echo?key={key_b}")
        assert a != b and client.streams[a].status == 200 and client.streams[b].status == 200
        # Interleaved on the wire: both WebSockets and a plain GET in flight at the same time.
        client.ws_send(a, "to a #1")
        client.ws_send(b, b"to b #1")
        get_sid = client.start_get("/plain")
        client.ws_send(b, "to b #2")
        client.ws_send(a, os.urandom(200_000))
        big_b = os.urandom(300_000)
        client.ws_send(b, big_b)
        plain = client.ws_wait_end(get_sid)
        assert plain.status == 200 and json.loads(bytes(plain.data))["type"] == "http"
        assert client.ws_recv(a) == "to a #1"
        assert client.ws_recv(b) == b"to b #1"
        assert client.ws_recv(b) == "to b #2"
        assert len(client.ws_recv(a)) == 200_000
        assert client.ws_recv(b) == big_b
        # Closing one leaves the other open.
        client.send_data(a, ws_frame(CLOSE, close_payload(1000)))
        assert client.ws_recv(a)[:2] == ("close", 1000)
        client.send_data(a, b"", end_stream=True)
        client.ws_wait_end(a)
        client.ws_send(b, "b still here")
        assert client.ws_recv(b) == "b still here"
        assert wait_result(client, key_a)["code"] == 1000
        assert results(client, key_b) is None, "b has not disconnected"
        client.send_data(b, ws_frame(CLOSE, close_payload(4005)))
        assert client.ws_recv(b)[:2] == ("close", 4005)
        client.send_data(b, b"", end_stream=True)
        client.ws_wait_end(b)
        assert wait_result(client, key_b)["code"] == 4005
