"""Python API: run(), Config, Server(config).serve(), started, should_exit (like uvicorn's)."""

import asyncio
import importlib
import inspect
import logging
import signal
import sys
import textwrap

import httpx
import pytest

from tests.apps import basic
from tests.helpers import HOST, SERVER, SERVER_NAME, ServerProcess, free_port, graceful_exit_codes

server_module = importlib.import_module(SERVER)  # a missing package must fail, not skip


async def _wait_started(server, task, timeout=20):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not server.started:
        if task.done():
            task.result()
            raise AssertionError("serve() returned before the server started")
        if loop.time() > deadline:
            raise AssertionError("server did not start")
        await asyncio.sleep(0.02)


def _run_in_process(coro_fn, timeout=30):
    async def main():
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(main())


def test_public_names():
    for name in ("run", "Config", "Server"):
        assert hasattr(server_module, name), name
    params = inspect.signature(server_module.run).parameters
    for kw in (
        "host",
        "port",
        "uds",
        "fd",
        "loop",
        "lifespan",
        "log_level",
        "access_log",
        "root_path",
        "proxy_headers",
        "forwarded_allow_ips",
        "timeout_keep_alive",
        "timeout_graceful_shutdown",
        "limit_concurrency",
        "backlog",
        "headers",
        "server_header",
        "date_header",
        "factory",
        "app_dir",
        "env_file",
        "log_config",
    ):
        assert kw in params, kw


def test_config_accepts_uvicorn_keywords():
    config = server_module.Config(
        app=basic.app,
        host=HOST,
        port=free_port(),
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        access_log=False,
        root_path="/r",
        proxy_headers=False,
        forwarded_allow_ips="*",
        timeout_keep_alive=3,
        timeout_graceful_shutdown=2,
        limit_concurrency=10,
        backlog=64,
        headers=[("x-a", "b")],
        server_header=False,
        date_header=False,
        factory=False,
        log_config=None,
    )
    assert config.host == HOST
    assert config.root_path == "/r"
    assert config.timeout_keep_alive == 3
    assert config.limit_concurrency == 10
    assert config.backlog == 64


def test_config_defaults_like_uvicorn():
    config = server_module.Config(app=basic.app, log_config=None)
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.lifespan == "auto"
    assert config.root_path == ""
    assert config.proxy_headers is True
    assert config.server_header is True
    assert config.date_header is True
    assert config.timeout_keep_alive == 5
    assert config.timeout_graceful_shutdown is None
    assert config.limit_concurrency is None
    assert config.backlog == 2048
    assert config.access_log is True


def test_server_serve_started_should_exit():
    port = free_port()

    async def scenario():
        config = server_module.Config(
            app=basic.app, host=HOST, port=port, log_config=None, log_level="warning", headers=[("x-api", "1")]
        )
        server = server_module.Server(config)
        assert server.started is False
        assert server.should_exit is False
        task = asyncio.create_task(server.serve())
        await _wait_started(server, task)
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            r = await client.get("/scope?api=1")
            assert r.status_code == 200
            assert r.headers["server"] == SERVER_NAME
            assert r.headers["x-api"] == "1"
            assert r.json()["query_string"] == "api=1"
            r = await client.get("/ctx", params={"value": "z"})
            assert r.json()["before"] == "unset"
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        # The port is released after serve() returns.
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                await client.get(f"http://{HOST}:{port}/scope")
        except httpx.HTTPError:
            return True
        return False

    assert _run_in_process(scenario) is True


def test_access_logger_name_and_args():
    port = free_port()
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    access = logging.getLogger(f"{SERVER_NAME}.access")
    handler = Collect()
    access.addHandler(handler)
    try:

        async def scenario():
            config = server_module.Config(app=basic.app, host=HOST, port=port, log_config=None, log_level="info")
            server = server_module.Server(config)
            task = asyncio.create_task(server.serve())
            await _wait_started(server, task)
            async with httpx.AsyncClient(timeout=10) as client:
                await client.get(f"http://{HOST}:{port}/head?x=1")
            await asyncio.sleep(0)
            server.should_exit = True
            await asyncio.wait_for(task, 15)

        _run_in_process(scenario)
    finally:
        access.removeHandler(handler)
    matching = [r for r in records if r.args and len(r.args) == 5 and r.args[2] == "/head?x=1"]
    assert matching, [(r.msg, r.args) for r in records]
    client_addr, method, full_path, http_version, status = matching[0].args
    assert client_addr.startswith("127.0.0.1:")
    assert (method, http_version, status) == ("GET", "1.1", 200)
    assert matching[0].msg == '%s - "%s %s HTTP/%s" %d'


def test_error_logger_gets_traceback():
    port = free_port()
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    error = logging.getLogger(f"{SERVER_NAME}.error")
    handler = Collect()
    error.addHandler(handler)
    try:

        async def scenario():
            config = server_module.Config(app=basic.app, host=HOST, port=port, log_config=None, log_level="info")
            server = server_module.Server(config)
            task = asyncio.create_task(server.serve())
            await _wait_started(server, task)
            async with httpx.AsyncClient(timeout=10) as client:
                assert (await client.get(f"http://{HOST}:{port}/raise-before")).status_code == 500
            server.should_exit = True
            await asyncio.wait_for(task, 15)

        _run_in_process(scenario)
    finally:
        error.removeHandler(handler)
    exc_records = [r for r in records if r.exc_info and "boom-before-start" in str(r.exc_info[1])]
    assert exc_records, [r.getMessage() for r in records]
    assert "Exception in ASGI application" in exc_records[0].getMessage()


def test_serve_with_lifespan_state_in_process():
    port = free_port()
    from tests.apps import lifespan_apps

    async def scenario():
        config = server_module.Config(
            app=lifespan_apps.state_app, host=HOST, port=port, log_config=None, log_level="warning", lifespan="on"
        )
        server = server_module.Server(config)
        task = asyncio.create_task(server.serve())
        await _wait_started(server, task)
        async with httpx.AsyncClient(timeout=10) as client:
            data = (await client.get(f"http://{HOST}:{port}/")).json()
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        return data

    assert _run_in_process(scenario)["token"] == "abc"


RUN_SCRIPT = textwrap.dedent("""
    import sys
    import {server}
    from tests.apps import basic
    app = basic.app if sys.argv[2] == "object" else "tests.apps.basic:app"
    {server}.run(app, host="127.0.0.1", port=int(sys.argv[1]), root_path="/run", server_header=False,
                 headers=[("x-run", "yes")], log_level="info")
""")


@pytest.mark.parametrize("kind", ["object", "import-string"])
def test_run_blocks_and_stops_on_sigterm(kind):
    port = free_port()
    cmd = [sys.executable, "-c", RUN_SCRIPT.format(server=SERVER), str(port), kind]
    with ServerProcess(None, cmd=cmd, port=port) as s:
        s.wait_ready()
        r = httpx.get(s.url + "/scope", timeout=10)
        assert r.json()["root_path"] == "/run"
        assert r.headers["x-run"] == "yes"
        assert "server" not in r.headers
        assert s.stop(signal.SIGTERM) in graceful_exit_codes()


def test_run_bad_import_string_exits_3():
    import subprocess

    from tests.helpers import REPO, clean_env

    code = f"import {SERVER}; {SERVER}.run('tests.apps.no_such_module_xyz:app', port={free_port()})"
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=str(REPO), env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 3, r.stderr
