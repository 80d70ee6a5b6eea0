"""Event loop factories selectable with `--loop`."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

_LoopClass = TypeVar("_LoopClass", bound=type[asyncio.AbstractEventLoop])


def first_steps_in_drive(loop_class: _LoopClass) -> _LoopClass:
    """A subclass of `loop_class` whose `call_soon` lets the server run the first steps of its
    request tasks itself, without the ready queue (docs/architecture.md).

    Each loop holds its native `call_soon`, bound once, in a slot: looking it up then makes no
    bound method, as a method of the class would on each call."""
    from tricorn._tricorn import first_step_call_soon

    def __init__(self: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> None:
        loop_class.__init__(self, *args, **kwargs)
        self.call_soon = first_step_call_soon(self)  # type: ignore[method-assign, assignment]

    namespace = {"__slots__": ("call_soon",), "__module__": __name__, "__init__": __init__}
    return cast("_LoopClass", type(loop_class.__name__, (loop_class,), namespace))


def asyncio_loop_factory(use_subprocess: bool = False) -> LoopFactory:
    """Return the stdlib selector loop class (the native side needs `add_reader`)."""
    if sys.platform == "win32" and not use_subprocess:
        return asyncio.ProactorEventLoop
    return _SELECTOR_LOOP


def uvloop_loop_factory(use_subprocess: bool = False) -> LoopFactory:
    """Return `uvloop.Loop` (what `uvloop.new_event_loop` makes); raises ImportError when uvloop is not installed."""
    return _uvloop_class()


@functools.cache
def _uvloop_class() -> type[asyncio.AbstractEventLoop]:
    import uvloop

    return first_steps_in_drive(uvloop.Loop)


def zuvloop_loop_factory(use_subprocess: bool = False) -> LoopFactory:
    """Return `zuvloop.new_event_loop` (uvicorn 0.54's `--loop zuvloop`); raises ImportError without zuvloop."""
    import zuvloop  # type: ignore[import-not-found]

    factory: LoopFactory = zuvloop.new_event_loop
    return factory


def auto_loop_factory(use_subprocess: bool = False) -> LoopFactory:
    """Return uvloop's factory when uvloop is importable, else the asyncio one."""
    try:
        return uvloop_loop_factory(use_subprocess=use_subprocess)
    except ImportError:
        return asyncio_loop_factory(use_subprocess=use_subprocess)


_SELECTOR_LOOP = first_steps_in_drive(asyncio.SelectorEventLoop)

LOOP_FACTORIES: dict[str, Callable[..., LoopFactory] | None] = {
    "none": None,
    "auto": auto_loop_factory,
    "asyncio": asyncio_loop_factory,
    "uvloop": uvloop_loop_factory,
    "zuvloop": zuvloop_loop_factory,
}
