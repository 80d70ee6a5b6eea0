"""Plain ASGI test app; behaviour is selected by path (relative to root_path).

Unknown paths echo the scope as JSON (bytes decoded as latin-1, tuples as lists, plus a ``_types`` map).
Results of background behaviour are kept in RESULTS and read back through ``/results?key=K``.
"""

import asyncio
import contextvars
import json
import multiprocessing
import os
import random
import types
from urllib.parse import parse_qs

RESULTS: dict = {}
REQUEST_VAR: contextvars.ContextVar = contextvars.ContextVar("request_var", default="unset")
# Set in the server's context at import: requests see it unless --reset-contextvars is given.
IMPORT_VAR: contextvars.ContextVar = contextvars.ContextVar("import_var", default="unset")
IMPORT_VAR.set("set-at-import")


def jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def scope_types(scope):
    types = {k: type(v).__name__ for k, v in scope.items()}
    headers = list(scope.get("headers") or [])
    types["headers[]"] = sorted({type(h).__name__ for h in headers})
    types["headers[][]"] = sorted({type(x).__name__ for h in headers for x in h})
    for key in ("client", "server"):
        if isinstance(scope.get(key), (tuple, list)):
            types[key + "[]"] = [type(x).__name__ for x in scope[key]]
    if isinstance(scope.get("asgi"), dict):
        types["asgi{}"] = {k: type(v).__name__ for k, v in scope["asgi"].items()}
    return types


async def respond(send, body=b"", status=200, content_type=b"text/plain", headers=()):
    if isinstance(body, str):
        body = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, data, status=200):
    await respond(send, json.dumps(data).encode(), status, b"application/json")


async def read_body(receive):
    chunks = []
    messages = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), messages, True
        messages += 1
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages, False


async def wait_for_key(key, timeout=30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while key not in RESULTS and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            print("BASIC-LIFESPAN-SHUTDOWN", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    assert scope["type"] == "http"
    path = (
        scope["path"][len(scope.get("root_path", "")) :]
        if scope["path"].startswith(scope.get("root_path", ""))
        else scope["path"]
    )
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    handler = ROUTES.get(path)
    if handler is None:
        return await scope_echo(scope, receive, send, q)
    return await handler(scope, receive, send, q)


async def scope_echo(scope, receive, send, q):
    data = jsonable(scope)
    data["_types"] = scope_types(scope)
    await respond_json(send, data)


async def echo(scope, receive, send, q):
    body, messages, _ = await read_body(receive)
    await respond(send, body, headers=[(b"x-messages", str(messages).encode())])


async def echo_stream(scope, receive, send, q):
    """Each request chunk is sent back as a response chunk as soon as it is received."""
    started = False
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if not started:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")],
                }
            )
            started = True
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if body or not more:
            await send({"type": "http.response.body", "body": body, "more_body": more})
        if not more:
            return


async def stream(scope, receive, send, q):
    n, size, gate = int(q.get("n", "3")), int(q.get("size", "10")), q.get("gate")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(n):
        await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * size, "more_body": True})
        if gate and i == 0:
            await wait_for_key(gate)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def expect(scope, receive, send, q):
    """Sleeps before the first receive(): a lazy 100 Continue must not be sent before."""
    RESULTS[q.get("key", "expect")] = "sleeping"
    await asyncio.sleep(float(q.get("delay", "0.5")))
    RESULTS[q.get("key", "expect")] = "receiving"
    body, _, _ = await read_body(receive)
    await respond(send, body)


async def no_read(scope, receive, send, q):
    await respond(send, b"no-read")


async def head(scope, receive, send, q):
    await respond(send, b"hello")


async def results(scope, receive, send, q):
    await respond_json(send, {"value": RESULTS.get(q["key"])})


async def set_result(scope, receive, send, q):
    RESULTS[q["key"]] = q.get("value", "1")
    await respond(send, b"ok")


async def wait_disconnect(scope, receive, send, q):
    key = q["key"]
    message = await receive()
    RESULTS[key] = "waiting:" + message["type"]
    message = await receive()
    RESULTS[key] = "got:" + message["type"]


async def raise_before(scope, receive, send, q):
    raise RuntimeError("boom-before-start")


async def raise_after(scope, receive, send, q):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("boom-after-start")


async def no_response(scope, receive, send, q):
    return None


async def incomplete(scope, receive, send, q):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})


async def return_value(scope, receive, send, q):
    await respond(send, b"ok")
    return "not-none"


async def wrong_order(scope, receive, send, q):
    case = q.get("case")
    if case == "body-first":
        try:
            await send({"type": "http.response.body", "body": b"too early"})
        except Exception as exc:
            return await respond(send, f"{type(exc).__name__}: {exc}")
        return await respond(send, b"no error")
    if case == "double-start":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
        else:
            text = "no error"
        await send({"type": "http.response.body", "body": text.encode()})
        return
    if case == "after-complete":
        await respond(send, b"done")
        try:
            await send({"type": "http.response.body", "body": b"extra"})
        except Exception as exc:
            RESULTS[q["key"]] = f"{type(exc).__name__}: {exc}"
        else:
            RESULTS[q["key"]] = "no error"
        return
    await respond(send, b"unknown case", 400)


async def ctx(scope, receive, send, q):
    before = REQUEST_VAR.get()
    REQUEST_VAR.set(q.get("value", "set"))
    await asyncio.sleep(float(q.get("delay", "0")))
    child = await asyncio.create_task(_read_var())
    await respond_json(send, {"before": before, "after": REQUEST_VAR.get(), "child": child})


async def send_misuse(scope, receive, send, q):
    """`send` and `receive` called wrongly, then rightly: the errors each wrong call raised."""
    import threading

    errors = []
    wrong_calls = (
        lambda: send(),
        lambda: send({}, {}),
        lambda: send(message={"type": "http.response.start"}),
        lambda: receive(1),
        lambda: receive(timeout=1),
    )
    for call in wrong_calls:
        try:
            call()
        except TypeError as exc:
            errors.append(f"TypeError: {exc}")
    from_thread = []

    def in_thread():
        for call in (lambda: send({"type": "http.response.start", "status": 200}), receive):
            try:
                call()
            except RuntimeError as exc:
                from_thread.append(f"RuntimeError: {exc}")

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    await respond_json(send, {"errors": errors, "from_thread": from_thread})


async def _read_var():
    return REQUEST_VAR.get()


async def first_step(scope, receive, send, q):
    """What the task sees in its first step and after a wait through the loop."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    before = REQUEST_VAR.get()
    REQUEST_VAR.set(q.get("value", "set"))
    started = []
    child = asyncio.create_task(_record_start(started))
    info = {
        "task": task.get_name() if task else None,
        "before": before,
        "loop_classes": [f"{cls.__module__}.{cls.__qualname__}" for cls in type(loop).__mro__],
        "child_started_at_once": bool(started),
    }
    await asyncio.sleep(0)
    info["same_task_after_wait"] = asyncio.current_task() is task
    info["listed_after_wait"] = task in asyncio.all_tasks()
    info["child"] = await child
    await respond_json(send, info)


async def _record_start(started):
    started.append(True)
    return REQUEST_VAR.get()


async def task_info(scope, receive, send, q):
    import anyio

    task = asyncio.current_task()
    info = {
        "task_type": type(task).__name__ if task else None,
        "is_task": isinstance(task, asyncio.Task),
        "anyio_task_matches": anyio.get_current_task().id == id(task),
    }
    with anyio.fail_after(5):
        await anyio.sleep(0)
    results_list = []

    async def child(n):
        await anyio.sleep(0.01)
        results_list.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(child, n)
    info["task_group"] = sorted(results_list)
    info["to_thread"] = await anyio.to_thread.run_sync(lambda: 42)
    with anyio.move_on_after(0.05) as cs:
        await anyio.sleep(5)
    info["cancelled"] = cs.cancelled_caught
    try:
        await asyncio.wait_for(asyncio.sleep(5), 0.05)
    except asyncio.TimeoutError:
        info["wait_for_timeout"] = True
    await respond_json(send, info)


async def bp_send(scope, receive, send, q):
    """Streams `total` bytes in `chunk`-sized pieces, recording how much send() has accepted."""
    key, total, size = q["key"], int(q["total"]), int(q.get("chunk", "65536"))
    piece = b"x" * size
    RESULTS[key] = 0
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(total).encode())],
        }
    )
    sent = 0
    try:
        while sent < total:
            n = min(size, total - sent)
            await send({"type": "http.response.body", "body": piece[:n], "more_body": sent + n < total})
            sent += n
            RESULTS[key] = sent
    finally:
        RESULTS[key + ":done"] = sent


async def bp_recv(scope, receive, send, q):
    """Does not read the body until `/set?key=KEY:go` has been requested, then counts it."""
    key = q["key"]
    RESULTS[key] = "waiting"
    await wait_for_key(key + ":go")
    RESULTS[key] = "reading"
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            RESULTS[key] = "disconnected"
            return
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    RESULTS[key] = total
    await respond(send, str(total).encode())


async def sleep(scope, receive, send, q):
    print(f"SLEEP-STARTED {q.get('key', '')}", flush=True)
    await asyncio.sleep(float(q.get("seconds", "1")))
    await respond(send, b"slept")
    print(f"SLEEP-DONE {q.get('key', '')}", flush=True)


async def random_bytes(scope, receive, send, q):
    """``size`` bytes from ``random.Random(seed)``, sent in ``chunk``-sized pieces (a test can hash them)."""
    data = random.Random(int(q.get("seed", "0"))).randbytes(int(q["size"]))
    size = int(q.get("chunk", "65536"))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(data)).encode())],
        }
    )
    for start in range(0, len(data), size):
        await send({"type": "http.response.body", "body": data[start : start + size], "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def hold(scope, receive, send, q):
    """Stays in the app for ``seconds``; RESULTS[key] counts the requests inside now, RESULTS[key:max] the peak."""
    key = q["key"]
    RESULTS[key] = RESULTS.get(key, 0) + 1
    RESULTS[key + ":max"] = max(RESULTS.get(key + ":max", 0), RESULTS[key])
    try:
        await asyncio.sleep(float(q.get("seconds", "0.5")))
    finally:
        RESULTS[key] -= 1
    await respond(send, b"held")


async def env(scope, receive, send, q):
    await respond_json(send, {"value": os.environ.get(q["name"])})


async def pathsend(scope, receive, send, q):
    """Sends the file ``path`` with http.response.pathsend, after an optional ``prefix`` body chunk."""
    headers = [(b"content-type", b"application/octet-stream")]
    if "length" in q:
        headers.append((b"content-length", q["length"].encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if "prefix" in q:
        await send({"type": "http.response.body", "body": q["prefix"].encode(), "more_body": True})
    await send({"type": "http.response.pathsend", "path": q["path"]})
    RESULTS["pathsend"] = "sent"


async def early_hint(scope, receive, send, q):
    """Sends a 103 with two links when the scope offers http.response.early_hint, then the response."""
    offered = "http.response.early_hint" in scope.get("extensions", {})
    if offered:
        links = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]
        await send({"type": "http.response.early_hint", "links": links})
        await asyncio.sleep(0.05)
    await respond_json(send, {"offered": offered})


# Response header containers an app may send (ASGI: an iterable of [name, value] iterables).
HEADER_SHAPES = {
    "list-of-tuples": lambda pairs: list(pairs),
    "list-of-lists": lambda pairs: [list(p) for p in pairs],
    "tuple-of-tuples": lambda pairs: tuple(pairs),
    "generator": lambda pairs: (p for p in pairs),
    "str-name": lambda pairs: [(n.decode(), v) for n, v in pairs],
    "str-value": lambda pairs: [(n, v.decode()) for n, v in pairs],
    "triple": lambda pairs: [(n, v, b"extra") for n, v in pairs],
    "bare-bytes": lambda pairs: [n + b": " + v for n, v in pairs],
}


async def header_shapes(scope, receive, send, q):
    """Sends its response headers in the container shape named by `shape`; reports a refusal as text."""
    body = b"shaped"
    pairs = [(b"content-type", b"text/plain"), (b"content-length", b"6"), (b"x-shape", q["shape"].encode())]
    try:
        await send({"type": "http.response.start", "status": 200, "headers": HEADER_SHAPES[q["shape"]](pairs)})
    except Exception as exc:
        return await respond(send, f"{type(exc).__name__}: {exc}".encode(), status=500)
    await send({"type": "http.response.body", "body": body})


class _MessageDict(dict):
    """A dict subclass as an ASGI message."""


def _fresh_keys(message):
    """The message with keys that are equal strings but not the interned ones of the code."""
    return {"".join(list(key)): value for key, value in message.items()}


MESSAGE_SHAPES = {
    "dict": dict,
    "fresh-keys": _fresh_keys,
    "subclass": _MessageDict,
    "mapping-proxy": types.MappingProxyType,
}


async def message_shapes(scope, receive, send, q):
    """Sends its response as messages of the mapping kind named by `shape`, in two body parts,
    with trailers announced as False; `missing` leaves that key out of the start message."""
    shape = MESSAGE_SHAPES[q["shape"]]
    start = {"type": "http.response.start", "status": 201, "headers": [(b"x-shape", q["shape"].encode())]}
    start["trailers"] = False
    start.pop(q.get("missing", ""), None)
    try:
        await send(shape(start))
    except Exception as exc:
        return await respond(send, f"{type(exc).__name__}: {exc}".encode(), status=500)
    await send(shape({"type": "http.response.body", "body": b"two ", "more_body": True}))
    await send(shape({"type": "http.response.body", "body": b"parts"}))


async def status(scope, receive, send, q):
    """Status ``code`` with ``body``; ``connection`` sets that response header."""
    headers = [(b"connection", q["connection"].encode())] if "connection" in q else []
    await respond(send, q.get("body", ""), status=int(q.get("code", "200")), headers=headers)


async def ctx_import(scope, receive, send, q):
    """Reports the context variable set when the module was imported."""
    await respond_json(send, {"import_var": IMPORT_VAR.get()})


async def pid(scope, receive, send, q):
    """The serving process's id and multiprocessing name (to tell workers apart)."""
    await respond_json(send, {"pid": os.getpid(), "process": multiprocessing.current_process().name})


BALLAST: list = []


async def grow(scope, receive, send, q):
    """Keep `mib` more MiB resident in this process (written, so that the pages are really used)."""
    BALLAST.append(b"x" * (int(q.get("mib", "1")) * 1024 * 1024))
    await respond(send, str(os.getpid()))


ROUTES = {
    "/ctx-import": ctx_import,
    "/echo": echo,
    "/echo-stream": echo_stream,
    "/stream": stream,
    "/expect": expect,
    "/no-read": no_read,
    "/head": head,
    "/results": results,
    "/set": set_result,
    "/wait-disconnect": wait_disconnect,
    "/raise-before": raise_before,
    "/raise-after": raise_after,
    "/no-response": no_response,
    "/incomplete": incomplete,
    "/return-value": return_value,
    "/wrong-order": wrong_order,
    "/ctx": ctx,
    "/task": task_info,
    "/first-step": first_step,
    "/send-misuse": send_misuse,
    "/bp-send": bp_send,
    "/bp-recv": bp_recv,
    "/sleep": sleep,
    "/random": random_bytes,
    "/hold": hold,
    "/env": env,
    "/status": status,
    "/header-shapes": header_shapes,
    "/message-shapes": message_shapes,
    "/pathsend": pathsend,
    "/early-hint": early_hint,
    "/pid": pid,
    "/grow": grow,
}


def create_app():
    """Factory for --factory."""

    async def factory_app(scope, receive, send):
        if scope["type"] == "http":
            return await respond(send, b"from-factory")
        return await app(scope, receive, send)

    return factory_app
