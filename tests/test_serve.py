"""In-process serving: `await tricorn.serve(app, config, shutdown_trigger=...)`, and `Server` used as
FastAPI's and Starlette's users do (started in a task or a thread, stopped with `should_exit`)."""

import asyncio
import importlib
import signal
import socket
import sys
import textwrap
import threading
import time

import httpx
import pytest

from tests.apps import basic
from tests.helpers import HOST, IS_UVICORN, SERVER, ServerProcess, free_port, graceful_exit_codes

server_module = importlib.import_module(SERVER)
needs_serve = pytest.mark.skipif(IS_UVICORN, reason="uvicorn has no serve() function (hypercorn's API)")


class LifespanApp:
    """The basic app, recording its lifespan events."""

    def __init__(self):
        self.events = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await basic.app(scope, receive, send)


async def wait_for_port(port, task, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        if task.done():
            task.result()
            raise AssertionError("serve() returned before serving")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("the server did not start") from None
            await asyncio.sleep(0.02)
        else:
            writer.close()
            return


def run(coro_fn, timeout=30):
    async def main():
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(main())


def config_for(app, port, **kwargs):
    return server_module.Config(app, host=HOST, port=port, log_config=None, log_level="warning", **kwargs)


@needs_serve
def test_serve_until_the_trigger_then_lifespan_shutdown():
    app = LifespanApp()
    port = free_port()

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(
            server_module.serve(app, config_for(app, port, headers=[("x-embedded", "1")]), shutdown_trigger=stop.wait)
        )
        await wait_for_port(port, task)
        assert app.events == ["lifespan.startup"]
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            r = await client.get("/scope")
            assert r.status_code == 200 and r.headers["x-embedded"] == "1"
        stop.set()
        assert await asyncio.wait_for(task, 15) is None
        assert app.events == ["lifespan.startup", "lifespan.shutdown"]
        with pytest.raises(OSError):
            await asyncio.open_connection(HOST, port)

    run(scenario)


@needs_serve
def test_serve_with_an_awaitable_trigger_and_given_sockets():
    app = LifespanApp()
    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]

    async def scenario():
        done = asyncio.get_running_loop().create_future()
        config = config_for(app, free_port())
        task = asyncio.create_task(server_module.serve(app, config, shutdown_trigger=done, sockets=[sock]))
        await wait_for_port(port, task)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"http://{HOST}:{port}/head")).text == "hello"
        done.set_result(None)
        await asyncio.wait_for(task, 15)
        assert app.events == ["lifespan.startup", "lifespan.shutdown"]

    run(scenario)


@needs_serve
def test_serve_lets_a_running_request_finish():
    port = free_port()

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(
            server_module.serve(basic.app, config_for(basic.app, port), shutdown_trigger=stop.wait)
        )
        await wait_for_port(port, task)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            request = asyncio.create_task(client.get("/sleep", params={"seconds": "0.5"}))
            await asyncio.sleep(0.2)
            stop.set()
            assert (await request).text == "slept"
        await asyncio.wait_for(task, 15)

    run(scenario)


@needs_serve
def test_cancelling_serve_shuts_down_gracefully():
    app = LifespanApp()
    port = free_port()

    async def scenario():
        task = asyncio.create_task(
            server_module.serve(app, config_for(app, port), shutdown_trigger=asyncio.Event().wait)
        )
        await wait_for_port(port, task)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        assert app.events == ["lifespan.startup", "lifespan.shutdown"]

    run(scenario)


@needs_serve
def test_a_failing_trigger_stops_the_server_and_raises():
    app = LifespanApp()
    port = free_port()

    async def trigger():
        await asyncio.sleep(0.5)
        raise LookupError("trigger-failed")

    async def scenario():
        task = asyncio.create_task(server_module.serve(app, config_for(app, port), shutdown_trigger=trigger))
        with pytest.raises(LookupError, match="trigger-failed"):
            await asyncio.wait_for(task, 15)
        assert app.events == ["lifespan.startup", "lifespan.shutdown"]

    run(scenario)


@needs_serve
def test_serve_raises_when_it_cannot_start():
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def scenario():
            with pytest.raises(RuntimeError, match="could not start"):
                await server_module.serve(basic.app, config_for(basic.app, port), shutdown_trigger=asyncio.Event().wait)

        run(scenario)


SIGNAL_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import tricorn
    from tests.apps import basic

    asyncio.run(tricorn.serve(basic.app, tricorn.Config(basic.app, port=int(sys.argv[1]))))
    print("SERVE-RETURNED", flush=True)
""")


@needs_serve
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_without_trigger_stops_on_a_signal_and_returns(sig):
    port = free_port()
    with ServerProcess(None, cmd=[sys.executable, "-c", SIGNAL_SCRIPT, str(port)], port=port) as server:
        server.wait_ready()
        assert httpx.get(server.url + "/head", timeout=10).text == "hello"
        assert server.stop(sig) == 0
        assert "SERVE-RETURNED" in server.stdout
        assert "BASIC-LIFESPAN-SHUTDOWN" in server.stdout


# --- Server as FastAPI's and Starlette's users drive it ----------------------------------------------------------
def test_fastapi_app_in_a_task_stopped_with_should_exit():
    from tests.apps.fastapi_app import app

    port = free_port()

    async def scenario():
        server = server_module.Server(config_for(app, port, lifespan="on"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "serve() returned before starting"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            r = await client.get("/items/5", params={"q": "x"})
        assert r.json()["greeting"] == "hello-from-lifespan"
        server.should_exit = True
        await asyncio.wait_for(task, 15)

    run(scenario)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_starlette_app_run_in_a_thread_with_given_sockets():
    """The fixture pattern of many test suites: `Server.run()` in a thread, stopped with `should_exit`."""
    from tests.apps.starlette_app import app

    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    server = server_module.Server(config_for(app, free_port()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        r = httpx.get(f"http://{HOST}:{port}/items/2", timeout=10)
        assert r.json()["item_id"] == 2
    finally:
        server.should_exit = True
        thread.join(15)
    assert not thread.is_alive()


def test_force_exit_does_not_wait_for_running_requests():
    port = free_port()

    async def scenario():
        server = server_module.Server(config_for(basic.app, port))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as client:
            request = asyncio.create_task(client.get("/sleep", params={"seconds": "30"}))
            await asyncio.sleep(0.3)
            server.should_exit = True
            server.force_exit = True
            started = time.monotonic()
            await asyncio.wait_for(task, 10)
            assert time.monotonic() - started < 5
            if IS_UVICORN:
                request.cancel()  # uvicorn leaves the connection open until its loop closes
                return
            with pytest.raises(httpx.HTTPError):
                await request

    run(scenario)


def test_run_blocks_until_a_signal_with_the_exit_status_of_run():
    """`Server(config).run()` in the main thread re-raises the signal after shutting down, as uvicorn's."""
    port = free_port()
    script = textwrap.dedent(f"""
        import {SERVER}
        from tests.apps import basic
        {SERVER}.Server({SERVER}.Config(basic.app, port={port})).run()
    """)
    with ServerProcess(None, cmd=[sys.executable, "-c", script], port=port) as server:
        server.wait_ready()
        assert httpx.get(server.url + "/head", timeout=10).text == "hello"
        assert server.stop(signal.SIGTERM) in graceful_exit_codes()
        assert "BASIC-LIFESPAN-SHUTDOWN" in server.stdout
