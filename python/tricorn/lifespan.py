"""ASGI lifespan protocol (spec 2.0, with `state`): `LifespanOn` runs it, `LifespanOff` skips it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tricorn.config import Config

STATE_TRANSITION_ERROR = "Got invalid state transition on lifespan protocol."


class LifespanOff:
    """Lifespan handler for `--lifespan off`: never calls the app with a lifespan scope."""

    def __init__(self, config: Config) -> None:
        self.should_exit = False
        self.state: dict[str, Any] = {}

    async def startup(self) -> None:
        """Do nothing."""

    async def shutdown(self) -> None:
        """Do nothing."""


class LifespanOn:
    """Run the app's lifespan scope as a task, feeding it startup and shutdown events.

    With `--lifespan auto` an app that raises before answering is taken to not support lifespan.
    After a failed startup, `should_exit` is True.
    """

    def __init__(self, config: Config) -> None:
        if not config.loaded:
            config.load()

        self.config = config
        self.logger = logging.getLogger("tricorn.error")
        self.startup_event = asyncio.Event()
        self.shutdown_event = asyncio.Event()
        self.receive_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.error_occurred = False
        self.startup_failed = False
        self.shutdown_failed = False
        self.should_exit = False
        self.state: dict[str, Any] = {}
        self.main_task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Send `lifespan.startup` and wait for the app's answer (or its failure)."""
        self.logger.info("Waiting for application startup.")

        # Keep a hard reference so the task is not garbage collected while it runs.
        self.main_task = asyncio.get_running_loop().create_task(self.main())
        await self.receive_queue.put({"type": "lifespan.startup"})
        await self.startup_event.wait()

        if self.startup_failed or (self.error_occurred and self.config.lifespan == "on"):
            self.logger.error("Application startup failed. Exiting.")
            self.should_exit = True
        else:
            self.logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        """Send `lifespan.shutdown` and wait for the app's answer, unless the lifespan task already failed."""
        if self.error_occurred:
            return
        self.logger.info("Waiting for application shutdown.")
        await self.receive_queue.put({"type": "lifespan.shutdown"})
        await self.shutdown_event.wait()

        if self.shutdown_failed or (self.error_occurred and self.config.lifespan == "on"):
            self.logger.error("Application shutdown failed. Exiting.")
            self.should_exit = True
        else:
            self.logger.info("Application shutdown complete.")

    async def main(self) -> None:
        """Call the app with the lifespan scope; record an exception as "unsupported" or as an error."""
        try:
            scope = {
                "type": "lifespan",
                "asgi": {"version": self.config.asgi_version, "spec_version": "2.0"},
                "state": self.state,
            }
            await self.config.loaded_app(scope, self.receive, self.send)
        except BaseException as exc:
            self.error_occurred = True
            if self.startup_failed or self.shutdown_failed:
                return
            if self.config.lifespan == "auto":
                self.logger.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                self.logger.error("Exception in 'lifespan' protocol\n", exc_info=exc)
        finally:
            self.startup_event.set()
            self.shutdown_event.set()

    async def send(self, message: dict[str, Any]) -> None:
        """Receive the app's `lifespan.startup.*` / `lifespan.shutdown.*` answer."""
        assert message["type"] in (
            "lifespan.startup.complete",
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        )

        if message["type"].startswith("lifespan.startup."):
            assert not self.startup_event.is_set(), STATE_TRANSITION_ERROR
            assert not self.shutdown_event.is_set(), STATE_TRANSITION_ERROR
            self.startup_event.set()
            if message["type"] == "lifespan.startup.failed":
                self.startup_failed = True
                if message.get("message"):
                    self.logger.error(message["message"])
        else:
            assert self.startup_event.is_set(), STATE_TRANSITION_ERROR
            assert not self.shutdown_event.is_set(), STATE_TRANSITION_ERROR
            self.shutdown_event.set()
            if message["type"] == "lifespan.shutdown.failed":
                self.shutdown_failed = True
                if message.get("message"):
                    self.logger.error(message["message"])

    async def receive(self) -> dict[str, Any]:
        """Return the next lifespan event for the app."""
        return await self.receive_queue.get()
