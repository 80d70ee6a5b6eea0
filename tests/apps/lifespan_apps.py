"""Lifespan test apps."""

import json


async def _http_state(scope, receive, send):
    state = scope.get("state")
    body = {
        "has_state": "state" in scope,
        "state_type": type(state).__name__,
        "keys": sorted(state) if isinstance(state, dict) else None,
    }
    if isinstance(state, dict):
        body["token"] = state.get("token")
        shared = state.get("shared")
        if isinstance(shared, list):
            shared.append(1)
            body["shared_len"] = len(shared)
        body["seen_mutation"] = state.get("mutated", False)
        state["mutated"] = True  # must not leak into the next request (shallow copy per request)
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def state_app(scope, receive, send):
    if scope["type"] == "lifespan":
        print(f"LIFESPAN-SCOPE {json.dumps({'asgi': scope.get('asgi'), 'has_state': 'state' in scope})}", flush=True)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["token"] = "abc"
                scope["state"]["shared"] = []
                print("LIFESPAN-STARTUP", flush=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print("LIFESPAN-SHUTDOWN", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _http_state(scope, receive, send)


async def failing_app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "boom-startup-failed"})
        return
    await _http_state(scope, receive, send)


async def raising_startup_app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("boom-startup-raised")
    await _http_state(scope, receive, send)


async def unsupported_app(scope, receive, send):
    """An app that does not know lifespan (like many old apps): raises on any non-http scope."""
    if scope["type"] != "http":
        print("UNSUPPORTED-CALLED-WITH " + scope["type"], flush=True)
        raise ValueError("only http is supported")
    await _http_state(scope, receive, send)


async def shutdown_failing_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.failed", "message": "boom-shutdown-failed"})
                return
    await _http_state(scope, receive, send)
