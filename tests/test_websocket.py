"""WebSockets over HTTP/1.1 Upgrade (ASGI websocket spec 2.4), black-box.

Clients: the ``websockets`` library (sync client) and, for bad input and clients that misbehave, a raw socket
speaking RFC 6455 frames by hand. Server-side observations come back through ``/results?key=K`` of
``tests.apps.ws:app``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import struct
import time
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.helpers import (
    HOST,
    IS_UVICORN,
    Closed,
    RawClient,
    ServerProcess,
    build_request,
    graceful_exit_codes,
    wait_until,
)

APP = "tests.apps.ws:app"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- helpers ---------------------------------------------------------------------------------------
def ws_url(srv, path: str) -> str:
    return f"ws://{HOST}:{srv.port}{path}"


def ws_connect(srv, path: str, **kwargs):
    kwargs.setdefault("open_timeout", 5)
    kwargs.setdefault("close_timeout", 3)
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("legacy", True)  # return the connection directly (also usable as a context manager)
    return connect(ws_url(srv, path), **kwargs)


def results(srv, key: str):
    return httpx.get(f"{srv.url}/results", params={"key": key}, timeout=5).json()


def wait_result(srv, key: str, timeout: float = 5.0):
    return wait_until(lambda: results(srv, key), timeout, 0.05, f"result {key!r}")


def new_key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def closed_code(ws, timeout: float = 5.0):
    """Read until the server closes; return the close frame (code, reason) the client received."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=timeout)
    rcvd = info.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)


def assert_healthy(srv) -> None:
    """The worker still serves: a fresh WebSocket echo and a plain HTTP request both work."""
    with ws_connect(srv, "/echo") as ws:
        ws.send("still alive?")
        assert ws.recv(timeout=5) == "still alive?"
    assert httpx.get(f"{srv.url}/plain", timeout=5).json()["type"] == "http"


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawWS:
    """A hand-rolled RFC 6455 client on a raw socket: a valid handshake, then any frames we like."""

    def __init__(self, srv, path: str = "/wait", rcvbuf: int | None = None, headers: dict | None = None):
        self.client = RawClient(port=srv.port, rcvbuf=rcvbuf, timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.client.send(
            build_request(
                "GET",
                path,
                {
                    "Host": f"{HOST}:{srv.port}",
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Key": key,
                    "Sec-WebSocket-Version": "13",
                    **(headers or {}),
                },
            )
        )
        self.response = self.client.read_head()
        assert self.response.status == 101, self.response.raw_head
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert self.response.header("sec-websocket-accept") == expected

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bool = True):
        head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
        n = len(payload)
        mask_bit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mask_bit | n])
        elif n < 65536:
            head += bytes([mask_bit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        self.client.send(head + payload)

    def recv_frame(self):
        """(fin, rsv, opcode, payload) of the next server frame; raises Closed on EOF."""
        b0, b1 = self.client.read_exact(2)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.client.read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.client.read_exact(8))
        return bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0x0F, self.client.read_exact(n)

    def read_close(self, timeout: float = 5.0):
        """Read frames until a close frame: its (code, reason), or (None, None) if the TCP connection ended first.

        Returns also the list of opcodes seen before it.
        """
        self.client.sock.settimeout(timeout)
        seen = []
        try:
            while True:
                _, _, opcode, payload = self.recv_frame()
                if opcode == 0x8:
                    if len(payload) >= 2:
                        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace"), seen
                    return 1005, "", seen
                seen.append(opcode)
        except (Closed, ConnectionResetError):
            return None, None, seen

    def close(self):
        self.client.close()


@pytest.fixture(scope="module")
def ws_server():
    with ServerProcess(APP) as srv:
        srv.wait_ready()
        yield srv


# -- basics ----------------------------------------------------------------------------------------
def test_echo_text_and_bytes(ws_server):
    with ws_connect(ws_server, "/echo", compression=None, max_size=None) as ws:
        for message in ["hello", "", "héllo wörld ✓ 🎉", b"\x00\x01\xff", b"", "x" * 70000, os.urandom(1 << 20)]:
            ws.send(message)
            got = ws.recv(timeout=5)
            assert type(got) is type(message)
            assert got == message


def test_many_concurrent_connections(ws_server):
    conns = [ws_connect(ws_server, "/echo") for _ in range(20)]
    try:
        for i, ws in enumerate(conns):
            ws.send(f"conn {i}")
        for i, ws in enumerate(conns):
            assert ws.recv(timeout=5) == f"conn {i}"
    finally:
        for ws in conns:
            ws.close()


def test_scope(ws_server):
    with ws_connect(
        ws_server,
        "/scope/a%20b?x=1&y=%20",
        additional_headers={"X-Custom": "Value-1"},
        subprotocols=["chat", "superchat"],
    ) as ws:
        local = ws.socket.getsockname()
        scope = json.loads(ws.recv(timeout=5))
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope/a b"
    assert scope["raw_path"] == "/scope/a%20b"
    assert scope["types"]["raw_path"] == "bytes"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["types"]["query_string"] == "bytes"
    assert scope["root_path"] == ""
    assert scope["client"] == [local[0], local[1]]
    assert scope["server"] == [HOST, ws_server.port]
    assert scope["subprotocols"] == ["chat", "superchat"]
    headers = {k.lower(): v for k, v in scope["headers"]}
    assert all(k == k.lower() for k, _ in scope["headers"])
    assert scope["header_types"] == ["bytes"]
    assert headers["x-custom"] == "Value-1"
    assert headers["upgrade"].lower() == "websocket"
    assert headers["host"] == f"{HOST}:{ws_server.port}"
    assert "sec-websocket-key" in headers
    assert scope["state_type"] == "dict"
    assert scope["state"] == {"greeting": "hello"}
    assert "websocket.http.response" in scope["extensions"]
    assert scope["first_message"] == {"type": "websocket.connect"}
    assert "method" not in scope


def test_scope_without_subprotocols(ws_server):
    with ws_connect(ws_server, "/scope") as ws:
        scope = json.loads(ws.recv(timeout=5))
    assert scope["subprotocols"] == []
    assert scope["query_string"] == ""


def test_root_path_option(start_server):
    srv = start_server(APP, "--root-path", "/api")
    with ws_connect(srv, "/scope/x%20y?z=1") as ws:
        scope = json.loads(ws.recv(timeout=5))
    # As for HTTP: the root path is prepended to the request path (uvicorn's behaviour).
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope/x y"
    assert scope["raw_path"] == "/api/scope/x%20y"
    assert scope["query_string"] == "z=1"


def test_subprotocol_and_extra_headers(ws_server):
    with ws_connect(ws_server, "/subprotocol", subprotocols=["chat", "superchat"]) as ws:
        assert ws.subprotocol == "superchat"
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "superchat"
        assert ws.response.headers["x-ws-extra"] == "yes"
        assert ws.response.headers["set-cookie"] == "ws=1"
        assert json.loads(ws.recv(timeout=5)) == ["chat", "superchat"]


def test_no_subprotocol_offered(ws_server):
    with ws_connect(ws_server, "/subprotocol") as ws:
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        assert json.loads(ws.recv(timeout=5)) == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [("code=4001&reason=bye%20now", (4001, "bye now")), ("", (1000, "")), ("code=1001", (1001, ""))],
)
def test_server_close_code_and_reason(ws_server, query, expected):
    with ws_connect(ws_server, f"/close?{query}") as ws:
        assert closed_code(ws) == expected


def test_client_close_gives_disconnect_code(ws_server):
    key = new_key("client-close")
    with ws_connect(ws_server, f"/echo?key={key}") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.close(code=4002, reason="ciao")
    message = wait_result(ws_server, key)
    assert message["type"] == "websocket.disconnect"
    assert message["code"] == 4002
    assert message.get("reason", "ciao") == "ciao"


def test_client_normal_close_gives_1000(ws_server):
    key = new_key("client-close-1000")
    with ws_connect(ws_server, f"/echo?key={key}") as ws:
        ws.send("hi")
        ws.recv(timeout=5)
    assert wait_result(ws_server, key)["code"] == 1000


def test_close_before_accept_is_403(ws_server):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_server, "/deny")
    assert info.value.response.status_code == 403


def test_http_response_extension_denial(ws_server):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_server, "/http-deny")
    response = info.value.response
    assert response.status_code == 418
    assert response.headers["x-denied"] == "yes"
    assert response.headers["content-type"] == "text/plain"
    assert response.body == b"teapot says no"


def test_return_without_accept_is_500(ws_server):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_server, "/noaccept")
    assert info.value.response.status_code == 500
    # uvicorn's legacy websockets impl says "sending handshake", its sansio and wsproto impls "completing".
    wait_until(
        lambda: re.search(r"ASGI callable returned without (sending|completing) handshake\.", ws_server.output),
        10,
        message=f"the no-handshake error in the server output:\n{ws_server.output}",
    )


def test_raise_before_accept_is_500(ws_server):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_server, "/raise-before-accept")
    assert info.value.response.status_code == 500
    ws_server.wait_output("boom before accept")
    assert_healthy(ws_server)


def test_raise_after_accept_closes_the_connection(ws_server):
    with ws_connect(ws_server, "/raise-after-accept") as ws:
        assert ws.recv(timeout=5) == "accepted"
        closed_code(ws)  # closed one way or another (close frame or dropped TCP connection)
    ws_server.wait_output("boom after accept")
    assert_healthy(ws_server)


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn drops the TCP connection without a close frame (client sees 1006)")
def test_raise_after_accept_closes_with_1011(ws_server):
    with ws_connect(ws_server, "/raise-after-accept") as ws:
        assert ws.recv(timeout=5) == "accepted"
        assert closed_code(ws)[0] == 1011
    assert_healthy(ws_server)


def test_send_after_client_gone(ws_server):
    """ASGI 2.4: send() on a closed connection raises (an OSError subclass) or is a no-op; never wedges."""
    key = new_key("send-after-close")
    with ws_connect(ws_server, f"/send-after-close?key={key}") as ws:
        assert ws.recv(timeout=5) == "ready"
    outcomes = wait_result(ws_server, key)
    assert len(outcomes) == 3
    # Each send() returned ("ok") or raised ("ExceptionName:is_oserror"); uvicorn raises ClientDisconnected (an
    # OSError) with its default impl, RuntimeError with its legacy one: no specific type is required.
    assert all(o == "ok" or re.fullmatch(r"\w+:(True|False)", o) for o in outcomes), outcomes
    assert results(ws_server, key + ":disconnect")["code"] == 1000
    assert_healthy(ws_server)


def test_abrupt_client_loss_gives_1006(start_server):
    # uvicorn's default (websockets-sansio) and wsproto impls report 1005 here; its legacy websockets impl
    # reports 1006 (abnormal closure, RFC 6455 7.1.5), as tricorn does.
    ws_server = start_server(APP, *(["--ws", "websockets"] if IS_UVICORN else []))
    key = new_key("abrupt")
    raw = RawWS(ws_server, f"/wait?key={key}")
    _, _, opcode, payload = raw.recv_frame()
    assert (opcode, payload) == (0x1, b"ready")
    raw.close()  # no close frame: the TCP connection just goes away
    message = wait_result(ws_server, key)
    assert message["type"] == "websocket.disconnect"
    assert message["code"] == 1006
    assert_healthy(ws_server)


def test_plain_http_on_the_same_server(ws_server):
    r = httpx.get(f"{ws_server.url}/some/path", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"type": "http", "path": "/some/path", "upgrade": None}


# -- frameworks ------------------------------------------------------------------------------------
def test_starlette_websocket_route(ws_server):
    with ws_connect(ws_server, "/starlette/echo") as ws:
        ws.send("one")
        assert ws.recv(timeout=5) == "starlette:one"
        ws.send("two")
        assert ws.recv(timeout=5) == "starlette:two"
    assert wait_until(lambda: results(ws_server, "starlette:disconnect") == 1000, 5, message="starlette disconnect")


def test_fastapi_websocket_route(ws_server):
    with ws_connect(ws_server, "/fastapi/echo/alice") as ws:
        ws.send(json.dumps({"n": 1}))
        assert json.loads(ws.recv(timeout=5)) == {"name": "alice", "echo": {"n": 1}, "framework": "fastapi"}
    assert wait_until(lambda: results(ws_server, "fastapi:disconnect") == 1000, 5, message="fastapi disconnect")


def test_unknown_route_closes_before_accept(ws_server):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(ws_server, "/nope")
    assert info.value.response.status_code == 403


# -- bad input (raw frames after a valid handshake) ------------------------------------------------
def frame(opcode, payload=b"", fin=True, rsv=0, mask=True):
    return {"opcode": opcode, "payload": payload, "fin": fin, "rsv": rsv, "mask": mask}


BAD_FRAMES = {
    # name: (frames sent after the handshake, expected close code)
    "unmasked-client-frame": ([frame(0x1, b"hello", mask=False)], 1002),
    "invalid-utf8-text": ([frame(0x1, b"ok \xff\xfe\xc3(")], 1007),
    "invalid-utf8-across-fragments": ([frame(0x1, b"ok \xc3", fin=False), frame(0x0, b"(")], 1007),
    "control-frame-over-125": ([frame(0x9, b"p" * 126)], 1002),
    "rsv1-without-extension": ([frame(0x1, b"hello", rsv=0b100)], 1002),
    "rsv3-without-extension": ([frame(0x1, b"hello", rsv=0b001)], 1002),
    "fragmented-control-frame": ([frame(0x9, b"ping", fin=False)], 1002),
    "reserved-opcode": ([frame(0x3, b"what")], 1002),
    "continuation-without-start": ([frame(0x0, b"orphan")], 1002),
    "new-message-inside-fragmented-one": ([frame(0x2, b"part", fin=False), frame(0x1, b"new")], 1002),
    "close-with-1-byte-payload": ([frame(0x8, b"\x03")], 1002),
    "close-with-reserved-code-1005": ([frame(0x8, struct.pack("!H", 1005))], 1002),
    "close-with-invalid-utf8-reason": ([frame(0x8, struct.pack("!H", 1000) + b"\xff")], 1007),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frames_are_closed_with_rfc6455_code(ws_server, case):
    frames, expected = BAD_FRAMES[case]
    raw = RawWS(ws_server, "/wait")
    try:
        assert raw.recv_frame()[2:] == (0x1, b"ready")
        for f in frames:
            raw.send_frame(**f)
        code, _, _ = raw.read_close()
        assert code == expected
        # The server then ends the TCP connection.
        assert raw.client.is_closed(5)
    finally:
        raw.close()
    assert_healthy(ws_server)


def test_fragmented_message_and_interleaved_ping(ws_server):
    """A valid fragmented text message with a ping in the middle: pong first, then the reassembled echo."""
    raw = RawWS(ws_server, "/wait")
    try:
        raw.recv_frame()
        raw.send_frame(0x1, "hé".encode()[:2], fin=False)  # splits the UTF-8 sequence across fragments
        raw.send_frame(0x9, b"are you there", fin=True)
        raw.send_frame(0x0, "hé".encode()[2:] + b"llo", fin=True)
        frames = [raw.recv_frame() for _ in range(2)]
        assert frames[0][2:] == (0xA, b"are you there")
        assert frames[1][2:] == (0x1, "héllo".encode())
        raw.send_frame(0x8, struct.pack("!H", 1000))
        assert raw.read_close()[0] == 1000
    finally:
        raw.close()


# -- backpressure ----------------------------------------------------------------------------------
def test_backpressure_on_a_client_that_never_reads(ws_server):
    key = new_key("flood")
    size, count = 1 << 20, 100
    rss_before = vm_rss_kib(ws_server.proc.pid)
    raw = RawWS(ws_server, f"/flood?key={key}&size={size}&count={count}", rcvbuf=16384)
    try:
        # Wait until the app's progress stops moving: its send() is waiting on the slow client.
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            sent = results(ws_server, key) or 0
            if sent != last:
                last, stable_since = sent, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                break
            time.sleep(0.1)
        growth_mib = (vm_rss_kib(ws_server.proc.pid) - rss_before) / 1024
        progress = f"the app could send {last} of {count} 1 MiB messages, server RSS grew by {growth_mib:.0f} MiB"
        assert results(ws_server, key + ":done") is None, "send() never waited: " + progress
        assert 0 < last < count // 4, progress
        assert growth_mib < 48, progress
        # Reading resumes the flow.
        got = 0
        while got < 3 * size:
            got += len(raw.recv_frame()[3])
        wait_until(lambda: (results(ws_server, key) or 0) > last, 10, message="progress after reading")
    finally:
        raw.close()
    wait_until(lambda: results(ws_server, key + ":done"), 10, message="flood app finished after the client left")
    assert_healthy(ws_server)


# -- options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["auto", "websockets", "websockets-sansio", "wsproto"])
def test_ws_implementation_choices_serve_websockets(start_server, impl):
    srv = start_server(APP, "--ws", impl)
    with ws_connect(srv, "/subprotocol", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        assert json.loads(ws.recv(timeout=5)) == ["chat"]
    with ws_connect(srv, "/echo") as ws:
        ws.send(b"bin")
        assert ws.recv(timeout=5) == b"bin"
        ws.send("txt")
        assert ws.recv(timeout=5) == "txt"
    with ws_connect(srv, "/close?code=4000&reason=r") as ws:
        assert closed_code(ws) == (4000, "r")


def test_ws_none_handles_upgrade_as_plain_http(start_server):
    srv = start_server(APP, "--ws", "none")
    with RawClient(port=srv.port) as c:
        r = c.request(
            "GET",
            "/echo",
            {
                "Host": f"{HOST}:{srv.port}",
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13",
            },
        )
    assert r.status == 200
    assert json.loads(r.body) == {"type": "http", "path": "/echo", "upgrade": "websocket"}
    with pytest.raises(InvalidStatus) as info:
        ws_connect(srv, "/echo")
    assert info.value.response.status_code == 200


def test_ws_max_size(start_server):
    srv = start_server(APP, "--ws-max-size", "1024")
    with ws_connect(srv, "/echo", compression=None) as ws:
        ws.send(b"a" * 1024)
        assert ws.recv(timeout=5) == b"a" * 1024
        ws.send("b" * 1024)
        assert ws.recv(timeout=5) == "b" * 1024
        ws.send(b"c" * 1025)
        assert closed_code(ws)[0] == 1009
    # Fragmented: the limit is on the message, not the frame.
    raw = RawWS(srv, "/wait")
    try:
        raw.recv_frame()
        for _ in range(3):
            raw.send_frame(0x2 if _ == 0 else 0x0, b"d" * 500, fin=False)
        raw.send_frame(0x0, b"", fin=True)
        assert raw.read_close()[0] == 1009
    finally:
        raw.close()
    assert_healthy(srv)


def test_ws_max_queue_loses_nothing(start_server):
    srv = start_server(APP, "--ws-max-queue", "1")
    with ws_connect(srv, "/slow-receiver?n=20&delay=1") as ws:
        for i in range(20):
            ws.send(f"m{i}")
        assert json.loads(ws.recv(timeout=10)) == [f"m{i}" for i in range(20)]


def test_ws_ping_timeout_closes_a_client_that_never_pongs(start_server):
    srv = start_server(APP, "--ws-ping-interval", "0.5", "--ws-ping-timeout", "0.5")
    key = new_key("ping-timeout")
    raw = RawWS(srv, f"/wait?key={key}")
    try:
        assert raw.recv_frame()[2:] == (0x1, b"ready")
        start = time.monotonic()
        code, _, seen = raw.read_close(timeout=8)  # never answers the pings
        elapsed = time.monotonic() - start
    finally:
        raw.close()
    assert 0x9 in seen, "the server sent no ping"
    assert 0.7 < elapsed < 4.0, f"closed after {elapsed:.1f}s (interval 0.5 + timeout 0.5)"
    assert code == 1011, code  # uvicorn: 1011 "keepalive ping timeout"
    message = wait_result(srv, key)
    assert message["type"] == "websocket.disconnect"
    # A client that answers pings (the websockets client does so automatically) stays connected.
    with ws_connect(srv, "/echo", ping_interval=None) as ws:
        time.sleep(2.5)
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


def test_ws_ping_timeout_raw_client_that_pongs_stays(start_server):
    srv = start_server(APP, "--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.3")
    raw = RawWS(srv, "/wait")
    try:
        raw.recv_frame()
        pings = 0
        raw.client.sock.settimeout(3)
        deadline = time.monotonic() + 1.8
        while time.monotonic() < deadline:
            _, _, opcode, payload = raw.recv_frame()
            assert opcode == 0x9, opcode
            pings += 1
            raw.send_frame(0xA, payload)
        assert pings >= 2
        raw.send_frame(0x1, b"after pings")
        while True:
            _, _, opcode, payload = raw.recv_frame()
            if opcode == 0x9:
                raw.send_frame(0xA, payload)
                continue
            assert (opcode, payload) == (0x1, b"after pings")
            break
    finally:
        raw.close()


def test_per_message_deflate_offered_by_client(ws_server):
    message = "compress me " * 10000
    with ws_connect(ws_server, "/echo", compression="deflate") as ws:
        assert (ws.response.headers.get("Sec-WebSocket-Extensions") or "").startswith("permessage-deflate")
        for _ in range(3):
            ws.send(message)
            assert ws.recv(timeout=5) == message
            ws.send(message.encode())
            assert ws.recv(timeout=5) == message.encode()


def test_per_message_deflate_disabled(start_server):
    srv = start_server(APP, "--ws-per-message-deflate", "false")
    with ws_connect(srv, "/echo", compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain " * 1000)
        assert ws.recv(timeout=5) == "plain " * 1000


# -- shutdown --------------------------------------------------------------------------------------
def test_sigterm_closes_open_websockets_with_1012(start_server):
    srv = start_server(APP)
    conns = [ws_connect(srv, "/wait") for _ in range(3)]
    try:
        for ws in conns:
            assert ws.recv(timeout=5) == "ready"
        srv.send_signal(signal.SIGTERM)
        for ws in conns:
            assert closed_code(ws, timeout=8)[0] == 1012
    finally:
        for ws in conns:
            ws.close()
    assert srv.wait_exit(15) in graceful_exit_codes()


def test_sigterm_closes_idle_raw_websocket_with_1012(start_server):
    srv = start_server(APP)
    raw = RawWS(srv, "/wait")
    try:
        raw.recv_frame()
        srv.send_signal(signal.SIGTERM)
        code, _, _ = raw.read_close(timeout=8)
        assert code == 1012
        # Complete the closing handshake like a well-behaved client.
        try:
            raw.send_frame(0x8, struct.pack("!H", 1012))
        except OSError:
            pass
    finally:
        raw.close()
    assert srv.wait_exit(15) in graceful_exit_codes()
