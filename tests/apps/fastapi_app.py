"""The small framework app, FastAPI version."""

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello-from-lifespan"}


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def get_item(item_id: int, request: Request, q: str | None = None):
    return {
        "item_id": item_id,
        "q": q,
        "path": request.url.path,
        "greeting": request.state.greeting,
        "framework": "fastapi",
    }


@app.post("/echo")
async def post_echo(request: Request):
    return {"received": await request.json(), "framework": "fastapi"}


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(3):
            yield f"part{i};"

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/sync")
def sync_endpoint():
    # Runs in a worker thread via anyio: needs a real current task.
    return {"sync": True}


@app.websocket("/ws/{room}")
async def websocket_echo(websocket: WebSocket, room: str):
    await websocket.accept(subprotocol=(websocket.scope["subprotocols"] or [None])[0])
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"{room}:{text}")
    except WebSocketDisconnect:
        pass
