"""Per-message compression of WebSockets (RFC 7692 permessage-deflate), black-box.

Clients: the ``websockets`` library (compression on by default, off with ``compression=None``, parameters
offered through its ``ClientPerMessageDeflateFactory``), and a raw socket client that offers the extension
by hand and deflates / inflates frames itself with ``zlib``, for what a library client never sends: frames
split anywhere, RSV1 where it does not belong, corrupt data, a decompression bomb.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from tests.helpers import IS_UVICORN, ServerProcess
from tests.test_websocket import APP, RawWS, assert_healthy, closed_code, vm_rss_kib, ws_connect

TAIL = b"\x00\x00\xff\xff"  # RFC 7692 section 7.2.1: removed by the sender, appended by the receiver
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
RSV1 = 0b100

# Compressible but not trivially so: 1 MiB of numbered lines.
BIG_TEXT = "".join(f"line {i:07d}: the quick brown fox jumps over the lazy dog\n" for i in range(20000))[: 1 << 20]
BIG_BYTES = BIG_TEXT.encode()[::-1]


@pytest.fixture(scope="module")
def ws_server():
    with ServerProcess(APP) as srv:
        srv.wait_ready()
        yield srv


def ext_params(header: str | None) -> dict:
    """The parameters of a ``permessage-deflate`` response header: {name: value or True}."""
    assert header, "no Sec-WebSocket-Extensions in the response"
    name, *params = (p.strip() for p in header.split(";"))
    assert name == "permessage-deflate", header
    return {k.strip(): (v.strip().strip('"') if v else True) for k, _, v in (p.partition("=") for p in params)}


class Deflater:
    """The client side of the extension, with zlib: context takeover unless told otherwise."""

    def __init__(self, no_context_takeover: bool = False):
        self.no_context_takeover = no_context_takeover
        self.compressor = zlib.compressobj(wbits=-15)
        self.decompressor = zlib.decompressobj(wbits=-15)

    def deflate(self, data: bytes) -> bytes:
        out = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(TAIL)
        if self.no_context_takeover:
            self.compressor = zlib.compressobj(wbits=-15)
        return out[:-4]

    def inflate(self, payload: bytes) -> bytes:
        return self.decompressor.decompress(payload + TAIL)


def raw_with_deflate(srv, offer: str = "permessage-deflate", path: str = "/echo") -> RawWS:
    raw = RawWS(srv, path, headers={"Sec-WebSocket-Extensions": offer})
    assert ext_params(raw.response.header("sec-websocket-extensions"))
    return raw


def recv_message(raw: RawWS, deflater: Deflater):
    """(opcode, payload) of the next data message, inflated if compressed; pings are answered."""
    fragments, compressed, first = [], False, None
    while True:
        fin, rsv, opcode, payload = raw.recv_frame()
        if opcode == PING:
            raw.send_frame(PONG, payload)
            continue
        if opcode >= 0x8:
            return opcode, payload
        if first is None:
            first, compressed = opcode, bool(rsv & RSV1)
        fragments.append(payload)
        if fin:
            data = b"".join(fragments)
            return first, deflater.inflate(data) if compressed else data


# -- the websockets client -------------------------------------------------------------------------
def test_negotiated_by_default_and_large_messages_both_ways(ws_server):
    with ws_connect(ws_server, "/echo", max_size=None) as ws:
        params = ext_params(ws.response.headers.get("Sec-WebSocket-Extensions"))
        assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
        # uvicorn (websockets sans-I/O) and tricorn both keep 4 KiB windows.
        assert params.get("server_max_window_bits") == "12"
        for message in ("hello", "héllo wörld " * 100, BIG_TEXT, b"\x00\x01binary" * 50, BIG_BYTES, "", b""):
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_compression_off_on_the_client(ws_server):
    with ws_connect(ws_server, "/echo", compression=None, max_size=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
        for message in ("plain", BIG_TEXT, BIG_BYTES):
            ws.send(message)
            assert ws.recv(timeout=10) == message


OFFERS = {
    "client_no_context_takeover": dict(client_no_context_takeover=True),
    "server_no_context_takeover": dict(server_no_context_takeover=True),
    "server_max_window_bits=10": dict(server_max_window_bits=10),
    "server_max_window_bits=9": dict(server_max_window_bits=9),
    "client_max_window_bits=9": dict(client_max_window_bits=9),
    "all": dict(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=11,
        client_max_window_bits=10,
    ),
}


@pytest.mark.parametrize("name", list(OFFERS))
def test_offered_parameters_are_honoured(ws_server, name):
    offer = OFFERS[name]
    factory = ClientPerMessageDeflateFactory(**offer)
    with ws_connect(ws_server, "/echo", compression=None, extensions=[factory], max_size=None) as ws:
        params = ext_params(ws.response.headers.get("Sec-WebSocket-Extensions"))
        for flag in ("server_no_context_takeover", "client_no_context_takeover"):
            if offer.get(flag):
                assert params.get(flag) is True, params
        for bits in ("server_max_window_bits", "client_max_window_bits"):
            if bits in offer:
                assert int(params[bits]) <= offer[bits], params
        # Many messages, so context takeover (or its absence) matters on both sides.
        for i in range(30):
            message = f"message {i} " + "abc" * i
            ws.send(message)
            assert ws.recv(timeout=5) == message
            ws.send(message.encode())
            assert ws.recv(timeout=5) == message.encode()
        ws.send(BIG_TEXT)
        assert ws.recv(timeout=10) == BIG_TEXT


def test_max_size_applies_to_the_inflated_message(start_server):
    srv = start_server(APP, "--ws-max-size", "65536")
    with ws_connect(srv, "/echo", max_size=None) as ws:
        assert ws.protocol.extensions
        ws.send(b"\x00" * 65536)  # about 100 bytes on the wire
        assert ws.recv(timeout=5) == b"\x00" * 65536
        ws.send("a" * 65537)
        assert closed_code(ws)[0] == 1009
    assert_healthy(srv)


def test_decompression_bomb_closes_1009_without_inflating_it(start_server):
    """256 MiB of zeros deflate to about 250 KiB: the server stops at --ws-max-size, memory stays flat."""
    srv = start_server(APP, "--ws-max-size", str(1 << 20))
    compressor = zlib.compressobj(wbits=-15)
    zeros = bytes(1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    raw = raw_with_deflate(srv)
    try:
        rss_before = vm_rss_kib(srv.proc.pid)
        raw.send_frame(BINARY, bomb[:-4], rsv=RSV1)
        code, _, _ = raw.read_close(timeout=10)
        assert code == 1009
        grown_mib = (vm_rss_kib(srv.proc.pid) - rss_before) / 1024
        assert grown_mib < 64, f"the server grew by {grown_mib:.0f} MiB"
    finally:
        raw.close()
    assert_healthy(srv)


def test_disabled_by_option_and_by_environment(start_server):
    off = [
        start_server(APP, "--ws-per-message-deflate", "false"),
        start_server(APP, env={"TRICORN_WS_PER_MESSAGE_DEFLATE": "false", "UVICORN_WS_PER_MESSAGE_DEFLATE": "false"}),
    ]
    for srv in off:
        with ws_connect(srv, "/echo") as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            ws.send(BIG_TEXT)
            assert ws.recv(timeout=10) == BIG_TEXT


# -- raw frames ------------------------------------------------------------------------------------
def test_server_messages_are_compressed_on_the_wire(ws_server):
    raw = raw_with_deflate(ws_server)
    deflater = Deflater()
    try:
        text = "compressible text " * 500
        for _ in range(3):  # uncompressed client messages are allowed too (section 6)
            raw.send_frame(TEXT, text.encode())
            fin, rsv, opcode, payload = raw.recv_frame()
            assert (fin, rsv, opcode) == (True, RSV1, TEXT)
            assert len(payload) < len(text) // 10
            assert deflater.inflate(payload) == text.encode()
        # Control frames are never compressed (section 6.1).
        raw.send_frame(PING, b"ping payload")
        assert raw.recv_frame() == (True, 0, PONG, b"ping payload")
    finally:
        raw.close()


def test_fragmented_compressed_message_with_interleaved_ping(ws_server):
    """A compressed message split in three frames anywhere (inside a UTF-8 sequence too), a ping between."""
    raw = raw_with_deflate(ws_server)
    deflater = Deflater()
    try:
        for round_ in range(3):  # context takeover: each message refers back to the previous ones
            text = ("héllo wörld " * 200 + str(round_)).encode()
            data = deflater.deflate(text)
            a, b = len(data) // 3, 2 * len(data) // 3
            raw.send_frame(TEXT, data[:a], fin=False, rsv=RSV1)
            raw.send_frame(PING, b"between")
            raw.send_frame(CONT, data[a:b], fin=False)
            raw.send_frame(CONT, data[b:], fin=True)
            assert raw.recv_frame()[2:] == (PONG, b"between")
            assert recv_message(raw, deflater) == (TEXT, text)
        # An uncompressed message between compressed ones.
        raw.send_frame(BINARY, b"as is")
        assert recv_message(raw, deflater) == (BINARY, b"as is")
        raw.send_frame(CLOSE, struct.pack("!H", 1000))
        assert raw.read_close()[0] == 1000
    finally:
        raw.close()


def test_client_no_context_takeover_raw(ws_server):
    raw = raw_with_deflate(ws_server, "permessage-deflate; client_no_context_takeover; server_no_context_takeover")
    params = ext_params(raw.response.header("sec-websocket-extensions"))
    assert params.get("client_no_context_takeover") is True
    assert params.get("server_no_context_takeover") is True
    deflater = Deflater(no_context_takeover=True)
    try:
        for i in range(5):
            text = f"same words again and again {i} ".encode() * 20
            raw.send_frame(TEXT, deflater.deflate(text), rsv=RSV1)
            _, rsv, opcode, payload = raw.recv_frame()
            assert (rsv, opcode) == (RSV1, TEXT)
            # Without server context takeover every message inflates on its own.
            assert zlib.decompressobj(wbits=-15).decompress(payload + TAIL) == text
    finally:
        raw.close()


NEGOTIATION = {
    # offer: expected parameters in the answer (None: no extension)
    "permessage-deflate; client_no_context_takeover": {"client_no_context_takeover": True},
    'permessage-deflate; server_max_window_bits="10"': {"server_max_window_bits": "10"},
    "x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover": {"server_no_context_takeover": True},
    "permessage-deflate; unknown=1, permessage-deflate; client_max_window_bits=9": {"client_max_window_bits": "9"},
    "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9": {
        "server_max_window_bits": "9"
    },
    "permessage-deflate; server_max_window_bits=16": None,
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover": None,
    "permessage-bzip2": None,
}


@pytest.mark.parametrize("offer", list(NEGOTIATION))
def test_negotiation_of_offers(ws_server, offer):
    expected = NEGOTIATION[offer]
    raw = RawWS(ws_server, "/echo", headers={"Sec-WebSocket-Extensions": offer})
    try:
        answer = raw.response.header("sec-websocket-extensions")
        if expected is None:
            assert answer is None
        else:
            params = ext_params(answer)
            assert expected.items() <= params.items(), params
    finally:
        raw.close()


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn adds its own answer to the application's header")
def test_application_answering_the_extensions_itself(ws_server):
    """An app that sets Sec-WebSocket-Extensions in websocket.accept answers the offer: no compression."""
    raw = RawWS(ws_server, "/own-extension", headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    try:
        assert raw.response.header_all("sec-websocket-extensions") == ["x-app-extension"]
        assert raw.recv_frame() == (True, 0, TEXT, b"app " * 100)
    finally:
        raw.close()


BAD_COMPRESSED = {
    # name: (frames after a negotiated handshake, expected close code)
    "rsv1-on-control-frame": ([dict(opcode=PING, payload=b"\x00", rsv=RSV1)], 1002),
    "rsv1-on-continuation": (
        [dict(opcode=TEXT, payload=b"abc", fin=False), dict(opcode=CONT, payload=b"\x00", rsv=RSV1)],
        1002,
    ),
    "rsv1-with-rsv2": ([dict(opcode=TEXT, payload=Deflater().deflate(b"x"), rsv=RSV1 | 0b010)], 1002),
    "unmasked-compressed-frame": ([dict(opcode=TEXT, payload=Deflater().deflate(b"x"), rsv=RSV1, mask=False)], 1002),
    "reserved-opcode": ([dict(opcode=0x3, payload=b"what")], 1002),
    "corrupt-deflate-data": ([dict(opcode=BINARY, payload=b"\xff\xff\xff\xff\xff", rsv=RSV1)], 1002),
    "invalid-utf8-after-inflating": ([dict(opcode=TEXT, payload=Deflater().deflate(b"ok \xff\xfe"), rsv=RSV1)], 1007),
    "new-compressed-message-inside-one": (
        [
            dict(opcode=TEXT, payload=Deflater().deflate(b"a"), fin=False, rsv=RSV1),
            dict(opcode=TEXT, payload=Deflater().deflate(b"b"), rsv=RSV1),
        ],
        1002,
    ),
}


@pytest.mark.parametrize("case", list(BAD_COMPRESSED))
def test_bad_compressed_input_closes_with_rfc_code(ws_server, case):
    frames, expected = BAD_COMPRESSED[case]
    raw = raw_with_deflate(ws_server, path="/wait")
    try:
        assert recv_message(raw, Deflater()) == (TEXT, b"ready")
        for f in frames:
            raw.send_frame(**f)
        assert raw.read_close()[0] == expected
        assert raw.client.is_closed(5)
    finally:
        raw.close()
    assert_healthy(ws_server)


@pytest.mark.parametrize("server_option", ["default", "off"])
def test_rsv1_without_the_extension_is_1002(start_server, server_option):
    """No extension negotiated (the client did not offer it, or the server has it off): RSV1 fails (1002)."""
    if server_option == "off":
        srv = start_server(APP, "--ws-per-message-deflate", "false")
        raw = RawWS(srv, "/wait", headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
        assert raw.response.header("sec-websocket-extensions") is None
    else:
        srv = start_server(APP)
        raw = RawWS(srv, "/wait")
    try:
        assert raw.recv_frame()[2:] == (TEXT, b"ready")
        raw.send_frame(TEXT, Deflater().deflate(b"hello"), rsv=RSV1)
        assert raw.read_close()[0] == 1002
    finally:
        raw.close()
    assert_healthy(srv)


# -- HTTP/2 (RFC 8441) -----------------------------------------------------------------------------
@pytest.mark.skipif(IS_UVICORN, reason="uvicorn does not speak HTTP/2")
def test_negotiated_over_http2(ws_server):
    from tests.test_websocket_h2 import H2Client, ws_frame

    class RawH2Client(H2Client):
        @staticmethod
        def _ws_parse(stream) -> None:  # frames are read below, RSV bits included
            pass

    def server_frame(buf: bytearray):
        """(first byte, payload) of a complete server frame at the start of ``buf``, else None."""
        if len(buf) < 2:
            return None
        n, pos = buf[1] & 0x7F, 2
        if n == 126:
            (n,), pos = struct.unpack("!H", buf[2:4]), 4
        elif n == 127:
            (n,), pos = struct.unpack("!Q", buf[2:10]), 10
        return (buf[0], bytes(buf[pos : pos + n])) if len(buf) >= pos + n else None

    deflater = Deflater()
    with RawH2Client(ws_server.port) as client:
        sid = client.ws_open(
            "/echo", extra=[("sec-websocket-extensions", "permessage-deflate; client_max_window_bits")]
        )
        stream = client.streams[sid]
        assert stream.status == 200
        params = ext_params(stream.header("sec-websocket-extensions"))
        assert params["client_max_window_bits"] == "12"
        text = ("over HTTP/2 " * 1000).encode()
        frame = bytearray(ws_frame(TEXT, deflater.deflate(text)))
        frame[0] |= RSV1 << 4
        client.send_data(sid, bytes(frame))
        first, payload = client.until(lambda: server_frame(stream.data), message="the echo")
        assert first == 0x80 | (RSV1 << 4) | TEXT
        assert len(payload) < len(text) // 10
        assert deflater.inflate(payload) == text
