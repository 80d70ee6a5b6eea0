"""Changes the access logger while serving: ``/quiet`` adds a filter that drops lines for ``/secret``.

The server writes default access lines itself while the logger keeps its default configuration; a filter
added at run time must be honoured from the next line on.
"""

import logging


def drop_secret(record: logging.LogRecord) -> bool:
    return "/secret" not in str(record.args)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/quiet":
        for name in ("tricorn.access", "uvicorn.access"):
            logging.getLogger(name).addFilter(drop_secret)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
