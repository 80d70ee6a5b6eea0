"""A plain WSGI application (PEP 3333); behaviour is selected by path."""

import json
import os
import threading
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part{i};".encode() for i in range(3))
    if path == "/sleep":
        # Blocks a thread of the pool, not the event loop.
        time.sleep(float(query.get("seconds", "1")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/raise":
        raise RuntimeError("boom-in-wsgi")
    if path == "/status":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("X-Wsgi", "yes")])
        return [b"nothing here"]
    keys = (
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_PROTOCOL",
        "SERVER_PORT",
        "REMOTE_ADDR",
        "CONTENT_TYPE",
        "HTTP_X_CUSTOM",
        "wsgi.url_scheme",
        "wsgi.multithread",
    )
    data = {key: environ.get(key) for key in keys}
    data["thread"] = threading.current_thread().name
    data["main_thread"] = threading.current_thread() is threading.main_thread()
    data["pid"] = os.getpid()
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
