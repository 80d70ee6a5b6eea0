"""The small framework app, Starlette version."""

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


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


def sync_endpoint(request):
    # A sync endpoint runs in a worker thread via anyio: needs a real current task.
    return JSONResponse({"sync": True})


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello-from-lifespan"}


app = Starlette(
    routes=[
        Route("/items/{item_id:int}", get_item),
        Route("/echo", post_echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/sync", sync_endpoint),
    ],
    lifespan=lifespan,
)
