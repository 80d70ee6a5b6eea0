"""An app that sends response trailers when the server advertises the extension (gRPC-style)."""

import json

# HTTP/1.1 sends only the trailer fields the response declares (RFC 9110 §6.6.2).
HEADERS = [(b"content-type", b"text/plain"), (b"trailer", b"grpc-status, grpc-message")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    extensions = scope.get("extensions") or {}
    if "http.response.trailers" not in extensions:
        body = json.dumps({"trailers": False}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS, "trailers": True})
    await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part two", "more_body": False})
    await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")], "more_trailers": True})
    await send({"type": "http.response.trailers", "headers": [(b"grpc-message", b"ok")], "more_trailers": False})
