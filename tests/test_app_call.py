"""How a request's task calls the application (src/asgi/app_call.rs).

The task's coroutine is the server's own object, which calls the application at its first step and
steps the application's coroutine: the task and its coroutine must look to asyncio and anyio as
they would with `await app(scope, receive, send)`, any awaitable the application returns must be
awaited, and whatever the call raises or returns must be reported as for a coroutine.
"""

import concurrent.futures

import httpx
import pytest

from tests.helpers import IS_UVICORN

APPS = "tests.apps.app_calls"


def get(srv, path="/"):
    return httpx.get(srv.url + path, timeout=10)


def still_serving(srv):
    return get(srv).status_code == 200


@pytest.fixture(scope="module")
def coroutine_server():
    from tests.helpers import ServerProcess

    with ServerProcess(f"{APPS}:coroutine_app", "--lifespan", "off", "--interface", "asgi3") as srv:
        srv.wait_ready()
        yield srv


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's task runs a coroutine of its own around the app")
def test_the_tasks_coroutine_passes_for_the_applications(coroutine_server):
    facts = get(coroutine_server, "/inspect").json()
    assert facts == {
        "iscoroutine": True,
        "state": "CORO_RUNNING",
        "qualname": "coroutine_app",
        "frame_function": "coroutine_app",
        "repr_names_app": True,
        "stack_names_app": True,
    }


def test_a_task_that_cancels_itself_gets_a_500_and_the_server_goes_on(coroutine_server):
    assert get(coroutine_server, "/cancel-self").status_code == 500
    coroutine_server.wait_output("CancelledError", stream="stderr")
    assert still_serving(coroutine_server)


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn's task runs a coroutine of its own around the app")
def test_the_running_coroutine_cannot_be_closed_from_its_own_code(coroutine_server):
    response = get(coroutine_server, "/close-self")
    assert (response.status_code, response.text) == (200, "ValueError: coroutine already executing")


@pytest.mark.skipif(IS_UVICORN, reason="uvicorn awaits its 500 response in the coroutine being closed")
def test_a_waiting_request_whose_coroutine_is_closed_gets_a_500(coroutine_server):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(get, coroutine_server, "/wait")
        closing = get(coroutine_server, "/close-waiting")
        assert (closing.status_code, closing.text) == (200, "closed")
        assert waiting.result(timeout=10).status_code == 500
    assert still_serving(coroutine_server)


def test_an_awaitable_that_is_not_a_coroutine_is_awaited(start_server):
    srv = start_server(f"{APPS}:awaitable_app", "--lifespan", "off", "--interface", "asgi3")
    response = get(srv, "/path")
    assert (response.status_code, response.text) == (200, "awaited /path")


def test_a_result_await_refuses_gives_a_500_and_the_reason(start_server):
    srv = start_server(f"{APPS}:not_awaitable_app", "--lifespan", "off", "--interface", "asgi3")
    assert get(srv).status_code == 500
    err = srv.wait_output("can't be used in 'await' expression", stream="stderr")
    assert "Exception in ASGI application" in err
    assert get(srv).status_code == 500


def test_an_exception_from_the_call_itself_gives_a_500_and_its_traceback(start_server):
    srv = start_server(f"{APPS}:raising_call_app", "--lifespan", "off", "--interface", "asgi3")
    assert get(srv).status_code == 500
    err = srv.wait_output("boom-in-call", stream="stderr")
    assert "Exception in ASGI application" in err
    assert "Traceback (most recent call last)" in err and "in __call__" in err


def test_a_value_returned_is_logged_and_the_response_stands(start_server):
    srv = start_server(f"{APPS}:returning_app", "--lifespan", "off", "--interface", "asgi3")
    response = get(srv)
    assert (response.status_code, response.text) == (200, "returned")
    srv.wait_output("ASGI callable should return None, but returned '{'unexpected': 'value'}'.", stream="stderr")
