"""Applications called in the ways ASGI allows beyond `async def app(scope, receive, send)`.

Each answers HTTP only (run with `--lifespan off --interface asgi3`); the path picks the behaviour:
``/`` answers, ``/inspect`` describes the request's task and its coroutine as asyncio and
anyio see them, ``/cancel-self`` cancels its own task before answering, ``/close-self`` tries
to close its own task's coroutine, ``/wait`` waits until ``/close-waiting`` closes the waiting
request's coroutine from another request.
"""

import asyncio
import inspect
import json

_WAITING: list = []


async def _answer(send, body, status=200):
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def coroutine_app(scope, receive, send):
    if scope["path"] == "/inspect":
        task = asyncio.current_task()
        coroutine = task.get_coro()
        facts = {
            "iscoroutine": asyncio.iscoroutine(coroutine),
            "state": inspect.getcoroutinestate(coroutine),
            "qualname": coroutine.__qualname__,
            "frame_function": coroutine.cr_frame.f_code.co_name,
            "repr_names_app": "coroutine_app" in repr(task),
            "stack_names_app": task.get_stack()[-1].f_code.co_name == "coroutine_app",
        }
        return await _answer(send, json.dumps(facts).encode())
    if scope["path"] == "/close-self":
        try:
            asyncio.current_task().get_coro().close()
        except ValueError as exc:
            return await _answer(send, f"{type(exc).__name__}: {exc}".encode())
        return await _answer(send, b"closed itself")
    if scope["path"] == "/wait":
        _WAITING.append(asyncio.current_task())
        await asyncio.Event().wait()
    if scope["path"] == "/close-waiting":
        while not _WAITING:
            await asyncio.sleep(0.01)
        _WAITING.pop().get_coro().close()
        return await _answer(send, b"closed")
    if scope["path"] == "/cancel-self":
        asyncio.current_task().cancel()
        await asyncio.sleep(0)
        return await _answer(send, b"not cancelled")
    await _answer(send, b"called")


class _Awaitable:
    """An awaitable that is not a coroutine: `__await__` hands out a coroutine's iterator."""

    def __init__(self, scope, send):
        self.coroutine = _answer(send, b"awaited " + scope["path"].encode())

    def __await__(self):
        return self.coroutine.__await__()


def awaitable_app(scope, receive, send):
    """A plain function returning an awaitable object."""
    return _Awaitable(scope, send)


def not_awaitable_app(scope, receive, send):
    """A plain function returning something `await` refuses."""
    return 42


class RaisingCallApp:
    """An application object whose call raises before any coroutine exists."""

    def __call__(self, scope, receive, send):
        raise ValueError("boom-in-call")


raising_call_app = RaisingCallApp()


async def returning_app(scope, receive, send):
    await _answer(send, b"returned")
    return {"unexpected": "value"}
