"""The small framework app, Starlette version."""

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect


async def get_item(request):
    return JSONResponse(
        {
            "item_id": int(request.path_params["item_id"]),
            "q": request.query_params.get("q"),
            "path": request.url.path,
            "greeting": request.state.greeting,
            "framework": "starlette",
        }
    )


async def post_echo(request):
    return JSONResponse({"received": await request.json(), "framework": "starlette"})


async def stream(request):
    async def gen():
        for i in range(3):
            yield f"part{i};"

    return StreamingResponse(gen(), media_type="text/plain")


# Types of the messages FileResponse sent for the last /file request.
FILE_MESSAGES: list[str] = []


async def file(request):
    return FileResponse(request.query_params["path"])


async def file_messages(request):
    return JSONResponse(FILE_MESSAGES)


async def websocket_echo(websocket):
    await websocket.accept(subprotocol=(websocket.scope["subprotocols"] or [None])[0])
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"{websocket.path_params['room']}:{text}")
    except WebSocketDisconnect:
        pass


def sync_endpoint(request):
    # A sync endpoint runs in a worker thread via anyio: needs a real current task.
    return JSONResponse({"sync": True})


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello-from-lifespan"}


starlette_app = Starlette(
    routes=[
        Route("/items/{item_id:int}", get_item),
        Route("/echo", post_echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/sync", sync_endpoint),
        Route("/file", file),
        Route("/file-messages", file_messages),
        WebSocketRoute("/ws/{room}", websocket_echo),
    ],
    lifespan=lifespan,
)


def record_file_messages(inner):
    """Record the message types sent for /file, to see whether FileResponse used pathsend."""

    async def recording_app(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/file":
            return await inner(scope, receive, send)
        FILE_MESSAGES.clear()

        async def recording_send(message):
            FILE_MESSAGES.append(message["type"])
            await send(message)

        await inner(scope, receive, recording_send)

    return recording_app


app = record_file_messages(starlette_app)
