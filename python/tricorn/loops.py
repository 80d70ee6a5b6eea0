"""Event loop factories selectable with `--loop`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def asyncio_loop_factory(use_subprocess: bool = False) -> LoopFactory:
    """Return the stdlib selector loop class (the native side needs `add_reader`)."""
    if sys.platform == "win32" and not use_subprocess:
        return asyncio.ProactorEventLoop
    return asyncio.SelectorEventLoop


def uvloop_loop_factory(use_subprocess: bool = False) -> LoopFactory:
    """Return `uvloop.new_event_loop`; raises ImportError when uvloop is not installed."""
    import uvloop

    return uvloop.new_event_loop


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


LOOP_FACTORIES: dict[str, Callable[..., LoopFactory] | None] = {
    "none": None,
    "auto": auto_loop_factory,
    "asyncio": asyncio_loop_factory,
    "uvloop": uvloop_loop_factory,
    "zuvloop": zuvloop_loop_factory,
}
