"""asyncio's registry of tasks while the server runs in this process.

tricorn gives the `WeakSet` that `asyncio.Task` registers tasks in a native `add`
(src/asgi/task_registry.rs). `asyncio.all_tasks()` must list the app's tasks and each request's
own, and a freed task must leave the set, also when it is freed while the set is iterated.
A request task's first step runs within the server's `drive()` (on the server's loops at the
end of its pass: src/asgi/first_step.rs; on other loops from Python 3.12 with `eager_start`), in
the task's own task and context.
"""

import asyncio
import contextvars
import gc
import weakref

import httpx
import pytest

from tests.helpers import HOST, IS_UVICORN, free_port
from tests.test_serve import config_for, run, server_module, wait_for_port
from tricorn.loops import LOOP_FACTORIES

pytestmark = pytest.mark.skipif(IS_UVICORN, reason="uvicorn has no serve() function (hypercorn's API)")


def task_registry():
    """The set `asyncio.Task` registers tasks in: `_scheduled_tasks` on 3.12+, `_all_tasks` before."""
    import _asyncio

    return _asyncio._scheduled_tasks if hasattr(_asyncio, "_scheduled_tasks") else _asyncio._all_tasks


async def idle():
    await asyncio.sleep(0)


async def finished_tasks(count):
    """`count` finished tasks, which nothing but the returned list refers to."""
    tasks = [asyncio.create_task(idle()) for _ in range(count)]
    for task in tasks:
        await task
    for _ in range(3):
        await asyncio.sleep(0)
    return tasks


def dead_entries(registry):
    """Entries of freed tasks still in the set (none once every removal callback ran)."""
    gc.collect()
    return [reference for reference in registry.data if reference() is None]


class RecordingApp:
    """Answers after a step through the loop, recording whether its task is in `all_tasks()`."""

    def __init__(self):
        self.registered = []
        self.tasks = []

    async def __call__(self, scope, receive, send):
        assert scope["type"] == "http"
        await asyncio.sleep(0)
        task = asyncio.current_task()
        self.registered.append(task in asyncio.all_tasks())
        self.tasks.append(weakref.ref(task))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def serve_and(scenario_body, app):
    port = free_port()

    async def scenario():
        stop = asyncio.Event()
        server = asyncio.create_task(
            server_module.serve(app, config_for(app, port, lifespan="off"), shutdown_trigger=stop.wait)
        )
        await wait_for_port(port, server)
        try:
            await scenario_body(port)
        finally:
            stop.set()
            await asyncio.wait_for(server, 15)

    run(scenario)


def test_request_tasks_are_listed_while_they_run_and_leave_the_registry_when_freed():
    app = RecordingApp()
    registry = task_registry()

    async def body(port):
        assert type(vars(registry)["add"].__self__).__name__ == "AddTask"
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as client:
            for _ in range(20):
                assert (await client.get("/")).text == "ok"
        await asyncio.sleep(0.05)
        assert app.registered == [True] * 20
        gc.collect()
        assert [task() for task in app.tasks] == [None] * 20
        assert not dead_entries(registry)

    serve_and(body, app)


def test_the_apps_own_tasks_are_listed_until_done_and_freed():
    registry = task_registry()

    async def body(port):
        freed = []
        for n in range(50):
            task = asyncio.create_task(idle(), name=f"app-task-{n}")
            freed.append(weakref.ref(task))
        del task
        listed = {task.get_name() for task in asyncio.all_tasks()}
        assert {f"app-task-{n}" for n in range(50)} <= listed
        for _ in range(3):
            await asyncio.sleep(0)
        assert not {task for task in asyncio.all_tasks() if task.get_name().startswith("app-task-")}
        gc.collect()
        assert [task() for task in freed] == [None] * 50
        assert not dead_entries(registry)

    serve_and(body, RecordingApp())


def entries_of(registry, tasks):
    """The weak references `registry.data` holds for `tasks` (kept, so their ids stay theirs)."""
    return [reference for reference in registry.data if any(reference() is task for task in tasks)]


def ids(references):
    return {id(reference) for reference in references}


def test_a_task_freed_while_the_registry_is_iterated_leaves_it_after_the_iteration():
    registry = task_registry()

    async def body(port):
        tasks = await finished_tasks(10)
        iteration = iter(registry)
        held = next(iteration)  # the iteration's frame keeps the task it yielded
        freed = entries_of(registry, [task for task in tasks if task is not held])
        assert len(freed) >= 9
        tasks.clear()
        gc.collect()
        assert ids(freed) <= ids(registry.data)
        assert ids(freed) <= ids(registry._pending_removals)
        for _ in iteration:
            pass
        assert not ids(freed) & ids(registry.data)
        assert not registry._pending_removals

    serve_and(body, RecordingApp())


def test_a_task_added_while_removals_are_pending_commits_them_first():
    registry = task_registry()

    async def body(port):
        tasks = await finished_tasks(5)
        iteration = iter(registry)
        held = next(iteration)
        freed = entries_of(registry, [task for task in tasks if task is not held])
        tasks.clear()
        gc.collect()
        assert ids(freed) <= ids(registry._pending_removals)
        late = asyncio.create_task(idle())
        assert not registry._pending_removals
        assert not ids(freed) & ids(registry.data)
        iteration.close()
        assert late in asyncio.all_tasks()
        await late

    serve_and(body, RecordingApp())


LOOP_CLASSES = {"uvloop": "uvloop.Loop", "asyncio": "asyncio.unix_events._UnixSelectorEventLoop"}


@pytest.mark.parametrize("loop", sorted(LOOP_CLASSES))
def test_a_request_task_takes_its_first_step_in_its_own_task_and_context(start_server, loop):
    """The server's loops let it run a request task's first step at the end of its pass
    (src/asgi/first_step.rs): in the request's task and context, and tasks the app creates are
    scheduled as usual."""
    srv = start_server("tests.apps.basic:app", "--loop", loop)
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        for n in range(3):  # one keep-alive connection: every request gets a fresh context
            info = client.get("/first-step", params={"value": f"v{n}"}).json()
            assert info["task"] == "tricorn.request"
            assert info["before"] == "unset"
            assert info["child_started_at_once"] is False
            assert info["same_task_after_wait"] is True
            assert info["listed_after_wait"] is True
            assert info["child"] == f"v{n}"
    classes = info["loop_classes"]
    assert LOOP_CLASSES[loop] in classes
    assert classes[0].startswith("tricorn.loops.") and classes[1] == LOOP_CLASSES[loop]


@pytest.mark.parametrize("loop", sorted(LOOP_CLASSES))
def test_the_servers_loops_schedule_every_other_callback_as_before(loop):
    event_loop = LOOP_FACTORIES[loop]()()
    try:
        var = contextvars.ContextVar("var", default="unset")
        context = contextvars.copy_context()
        context.run(var.set, "in-context")
        ran = []
        assert callable(event_loop.call_soon(ran.append, 1).cancel)
        event_loop.call_soon(lambda: ran.append(var.get()), context=context)
        event_loop.call_soon(lambda *args: ran.append(args), 2, 3)
        with pytest.raises(TypeError):
            event_loop.call_soon()

        async def main():
            started = []
            task = asyncio.create_task(record_start(started))
            assert started == []
            await task
            future = event_loop.create_future()
            event_loop.call_soon(future.set_result, 5)
            return started, await future

        assert event_loop.run_until_complete(main()) == ([True], 5)
        assert ran == [1, "in-context", (2, 3)]
    finally:
        event_loop.close()


@pytest.mark.parametrize("loop", sorted(LOOP_CLASSES))
def test_each_of_the_servers_loops_holds_its_own_call_soon(loop):
    first, second = LOOP_FACTORIES[loop]()(), LOOP_FACTORIES[loop]()()
    try:
        assert first.call_soon.__self__ is first and second.call_soon.__self__ is second
        assert first.call_soon is first.call_soon
    finally:
        first.close()
        second.close()
    with pytest.raises(RuntimeError, match="closed"):
        first.call_soon(print)


async def record_start(started):
    started.append(True)
