#!/usr/bin/env python3
"""WebSocket ping-pong load generator for the `ws-echo` scenario of bench/run.py.

    .venv/bin/python bench/ws_load.py --port 8000 --connections 16 --warmup 3 --duration 10

N connections, each sending a 32-byte text message and waiting for its echo, in a loop.
After --warmup seconds the counters are snapshotted and ``# measure start`` is printed,
after --duration more seconds ``# measure end`` (bench/run.py samples the server's CPU
time on those lines), then one JSON line with the result: messages and messages/s in the
measured window, latency mean / p50 / p99 / max from every 10th message, and this
process's own CPU use (``client_cpu_util``, 1.0 = one full core).

``--impl raw`` (default): the handshake is done with blocking sockets, then every
connection is an asyncio Protocol (uvloop if installed) that writes one pre-built masked
frame per message and compares the answer with the expected unmasked echo frame (a short
general frame parser handles anything else: split reads, pings, close).  No extensions
are offered, so no server compresses, unless ``--deflate``: then every connection offers
``permessage-deflate; client_no_context_takeover`` (RFC 7692), sends one pre-built
compressed frame per message and inflates the server's compressed echoes with zlib, so the
server inflates and deflates every message.  ``--impl websockets`` uses the `websockets`
library's asyncio client (compression off) instead; it costs several times more CPU per
message, enough to make the client the bottleneck (kept for comparison).

``--check``: one connection, one text and one binary message, verify the echoes, exit 0/1.
Stdlib only (plus uvloop / websockets if used).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import socket
import struct
import sys
import time
import zlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAYLOAD = b"0123456789abcdef0123456789abcdef"  # 32 bytes of text
MASK = b"\x5a\x17\xc3\x3e"
OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
SAMPLE_EVERY = 10
DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover"
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 7.2.1: stripped by the sender, appended by the receiver


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def client_frame(opcode: int, payload: bytes, key: bytes = MASK, rsv1: bool = False) -> bytes:
    """A complete, masked client frame (FIN set; RSV1 for a compressed message)."""
    n = len(payload)
    b0 = 0x80 | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + key + _mask(payload, key)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """The unmasked frame a server sends for a short message (what an echo looks like)."""
    assert len(payload) < 126
    return struct.pack("!BB", 0x80 | opcode, len(payload)) + payload


def deflated(payload: bytes) -> bytes:
    """``payload`` as one compressed message with a fresh window (client_no_context_takeover)."""
    c = zlib.compressobj(wbits=-15)
    return (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[: -len(DEFLATE_TAIL)]


def handshake(host: str, port: int, path: str = "/", timeout: float = 10.0, deflate: bool = False) -> socket.socket:
    """Blocking TCP connect + HTTP/1.1 upgrade; returns the socket right after the 101."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    req = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
        + (f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if deflate else "")
        + "\r\n"
    ).encode()
    sock.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed during the handshake: {buf[:300]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head[:300]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != accept:
        raise ConnectionError(f"bad Sec-WebSocket-Accept: {headers.get('sec-websocket-accept')!r}")
    if deflate and not headers.get("sec-websocket-extensions", "").startswith("permessage-deflate"):
        raise ConnectionError(f"permessage-deflate not negotiated: {head[:300]!r}")
    if not deflate and headers.get("sec-websocket-extensions"):
        raise ConnectionError(f"server enabled extensions we did not offer: {headers['sec-websocket-extensions']}")
    if rest:
        raise ConnectionError(f"unexpected data after the handshake: {rest[:100]!r}")
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """Blocking read of one (unfragmented, unmasked) server frame: (opcode, payload)."""

    def exact(n: int) -> bytes:
        b = b""
        while len(b) < n:
            c = sock.recv(n - len(b))
            if not c:
                raise ConnectionError("connection closed")
            b += c
        return b

    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", exact(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", exact(8))
    key = exact(4) if b1 & 0x80 else None
    data = exact(n)
    return b0 & 0x0F, (_mask(data, key) if key else data)


def check(host: str, port: int) -> str | None:
    """One text and one binary round trip, then a clean close; None if all is well."""
    try:
        sock = handshake(host, port)
        try:
            for op, data in ((OP_TEXT, PAYLOAD), (OP_BIN, bytes(range(256)) * 4)):
                sock.sendall(client_frame(op, data))
                got = read_frame(sock)
                if got != (op, data):
                    return f"echo mismatch: sent opcode {op} {len(data)} bytes, got opcode {got[0]} {got[1][:60]!r}"
            sock.sendall(client_frame(OP_CLOSE, struct.pack("!H", 1000)))
            op, _ = read_frame(sock)
            if op != OP_CLOSE:
                return f"expected a close frame after ours, got opcode {op}"
        finally:
            sock.close()
    except (OSError, ValueError) as e:
        return f"websocket check failed: {e!r}"
    return None


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------


class State:
    def __init__(self) -> None:
        self.running = True  # send the next message after each echo
        self.recording = False  # latency samples are kept
        self.samples: list[float] = []  # seconds
        self.errors: list[str] = []


class RawConn(asyncio.Protocol):
    def __init__(self, state: State, done: asyncio.Future, deflate: bool = False) -> None:
        self.state = state
        self.done = done
        self.frame = client_frame(OP_TEXT, deflated(PAYLOAD), rsv1=True) if deflate else client_frame(OP_TEXT, PAYLOAD)
        self.expect = server_frame(OP_TEXT, PAYLOAD)  # an uncompressed echo
        self.inflater = zlib.decompressobj(wbits=-15)  # the server's window (context takeover)
        self.buf = b""
        self.count = 0  # echoes received
        self.t0 = 0.0
        self.closing = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        if self.count % SAMPLE_EVERY == 0:
            self.t0 = time.perf_counter()
        self.transport.write(self.frame)

    def data_received(self, data: bytes) -> None:
        if not self.buf and data == self.expect:  # the fast path: exactly one uncompressed echo
            self.on_message(OP_TEXT, PAYLOAD)
            return
        self.buf += data
        self.parse()

    def parse(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                (n,) = struct.unpack_from("!H", buf, 2)
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, 2)
                pos = 10
            key = None
            if b1 & 0x80:
                key, pos = buf[pos : pos + 4], pos + 4
            if len(buf) < pos + n:
                break
            data = buf[pos : pos + n]
            buf = buf[pos + n :]
            if key:
                data = _mask(data, key)
            op = b0 & 0x0F
            if op == OP_PING:
                self.transport.write(client_frame(OP_PONG, data))
            elif op == OP_PONG:
                pass
            elif op == OP_CLOSE:
                if not self.closing:
                    self.state.errors.append(f"server closed the connection: {data[:60]!r}")
                self.transport.close()
                break
            elif not b0 & 0x80 or op == OP_CONT:  # fragmented: never expected for 32 bytes
                self.state.errors.append("fragmented message")
            else:
                self.on_message(op, self.inflater.decompress(data + DEFLATE_TAIL) if b0 & 0x40 else data)
        self.buf = buf

    def on_message(self, op: int, data: bytes) -> None:
        if op != OP_TEXT or data != PAYLOAD:
            self.state.errors.append(f"echo mismatch: opcode {op} {data[:60]!r}")
        if self.count % SAMPLE_EVERY == 0 and self.state.recording:
            self.state.samples.append(time.perf_counter() - self.t0)
        self.count += 1
        if self.state.running:
            self.send()
        elif not self.closing:  # load stopped: one message was in flight, now close
            self.closing = True
            self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", 1000)))

    def connection_lost(self, exc) -> None:
        if not self.closing:
            self.state.errors.append(f"connection lost: {exc!r}")
        if not self.done.done():
            self.done.set_result(None)


async def run_raw(args, state: State, report) -> None:
    loop = asyncio.get_running_loop()
    conns: list[RawConn] = []
    waits = []
    for _ in range(args.connections):
        sock = handshake(args.host, args.port, args.path, deflate=args.deflate)
        sock.setblocking(False)
        done = loop.create_future()
        _, proto = await loop.create_connection(lambda d=done: RawConn(state, d, args.deflate), sock=sock)
        conns.append(proto)
        waits.append(done)
    await report(lambda: sum(c.count for c in conns))
    try:
        await asyncio.wait_for(asyncio.gather(*waits), timeout=5)
    except asyncio.TimeoutError:
        state.errors.append("connections did not close within 5 s after the run")
        for c in conns:
            c.closing = True
            c.transport.abort()


async def run_websockets(args, state: State, report) -> None:
    from websockets.asyncio.client import connect

    counts = [0] * args.connections
    uri = f"ws://{args.host}:{args.port}{args.path}"

    async def one(i: int, ws) -> None:
        n = 0
        while state.running:
            t0 = time.perf_counter() if n % SAMPLE_EVERY == 0 else 0.0
            await ws.send(PAYLOAD.decode())
            got = await ws.recv()
            if got != PAYLOAD.decode():
                state.errors.append(f"echo mismatch: {got!r:.60}")
            if t0 and state.recording:
                state.samples.append(time.perf_counter() - t0)
            n += 1
            counts[i] = n
        await ws.close()

    socks = [await connect(uri, compression=None, max_queue=None, ping_interval=None) for _ in counts]
    tasks = [asyncio.create_task(one(i, ws)) for i, ws in enumerate(socks)]
    await report(lambda: sum(counts))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main_async(args) -> dict:
    state = State()
    res: dict = {}

    async def report(total) -> None:
        await asyncio.sleep(args.warmup)
        state.recording = True
        n0, t0, c0 = total(), time.perf_counter(), _cpu()
        print("# measure start", flush=True)
        await asyncio.sleep(args.duration)
        n1, t1, c1 = total(), time.perf_counter(), _cpu()
        state.recording = False
        print("# measure end", flush=True)
        state.running = False
        res.update(messages=n1 - n0, elapsed_s=round(t1 - t0, 4), client_cpu_s=round(c1 - c0, 4))

    await (run_raw if args.impl == "raw" else run_websockets)(args, state, report)
    s = sorted(state.samples)
    q = (lambda p: s[min(len(s) - 1, int(p * len(s)))] * 1e3) if s else (lambda p: None)
    res.update(
        impl=args.impl,
        deflate=args.deflate,
        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        connections=args.connections,
        message_bytes=len(PAYLOAD),
        msgs_per_s=round(res["messages"] / res["elapsed_s"], 1),
        client_cpu_util=round(res["client_cpu_s"] / res["elapsed_s"], 3),
        latency_samples=len(s),
        mean_ms=round(sum(s) / len(s) * 1e3, 4) if s else None,
        p50_ms=q(0.50),
        p99_ms=q(0.99),
        max_ms=s[-1] * 1e3 if s else None,
        errors=len(state.errors),
        first_errors=state.errors[:5],
    )
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--impl", choices=("raw", "websockets"), default="raw")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate (--impl raw only)")
    ap.add_argument("--check", action="store_true", help="one text + one binary echo, then exit")
    args = ap.parse_args(argv)
    if args.check:
        err = check(args.host, args.port)
        print(err or "ok")
        return 1 if err else 0
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("# uvloop not installed, using asyncio", file=sys.stderr)
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        res = asyncio.run(main_async(args))
    except (OSError, asyncio.TimeoutError) as e:
        print(json.dumps({"error": repr(e)}), flush=True)
        return 1
    print(json.dumps(res), flush=True)
    return 1 if res["errors"] or not res["messages"] else 0


if __name__ == "__main__":
    sys.exit(main())
