"""Log formatters and the default logging configuration (uvicorn-compatible output)."""

from __future__ import annotations

import http
import json
import logging
import logging.config
import sys
from collections.abc import Callable
from configparser import RawConfigParser
from copy import copy, deepcopy
from typing import IO, Any, Literal, cast

from tricorn._ansi import style as ansi_style

TRACE_LOG_LEVEL = 5

LOG_LEVELS: dict[str, int] = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE_LOG_LEVEL,
}

LOGGING_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "tricorn.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "tricorn.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "tricorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "tricorn.error": {"level": "INFO"},
        "tricorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


class ColourizedFormatter(logging.Formatter):
    """Formatter that provides `%(levelprefix)s` (the level name, coloured when `use_colors`).

    A log call with `extra={"color_message": ...}` uses that message instead of the plain one when colouring.
    """

    level_name_colors: dict[int, Callable[[str], str]] = {
        TRACE_LOG_LEVEL: lambda level_name: ansi_style(str(level_name), fg="blue"),
        logging.DEBUG: lambda level_name: ansi_style(str(level_name), fg="cyan"),
        logging.INFO: lambda level_name: ansi_style(str(level_name), fg="green"),
        logging.WARNING: lambda level_name: ansi_style(str(level_name), fg="yellow"),
        logging.ERROR: lambda level_name: ansi_style(str(level_name), fg="red"),
        logging.CRITICAL: lambda level_name: ansi_style(str(level_name), fg="bright_red"),
    }

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        use_colors: bool | None = None,
    ) -> None:
        if use_colors in (True, False):
            self.use_colors = bool(use_colors)
        else:
            self.use_colors = sys.stdout.isatty()
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)

    def color_level_name(self, level_name: str, level_no: int) -> str:
        """Return `level_name` coloured for `level_no`."""
        func = self.level_name_colors.get(level_no, str)
        return func(level_name)

    def should_use_colors(self) -> bool:
        """Kept for compatibility with uvicorn's formatter API."""
        return True

    def level_prefix(self, record: logging.LogRecord) -> str:
        """`INFO:     `: the level name (coloured when `use_colors`), a colon, padding to 9 characters."""
        levelname = record.levelname
        separator = " " * (8 - len(levelname))
        if self.use_colors:
            levelname = self.color_level_name(levelname, record.levelno)
        return levelname + ":" + separator

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Add `levelprefix` (and the colour message) to a copy of the record, then format it."""
        recordcopy = copy(record)
        if self.use_colors and "color_message" in recordcopy.__dict__:
            recordcopy.msg = recordcopy.__dict__["color_message"]
            recordcopy.__dict__["message"] = recordcopy.getMessage()
        recordcopy.__dict__["levelprefix"] = self.level_prefix(recordcopy)
        return super().formatMessage(recordcopy)


class DefaultFormatter(ColourizedFormatter):
    """Formatter for the `tricorn` and `tricorn.error` loggers."""

    def should_use_colors(self) -> bool:
        """Colour when stderr is a terminal."""
        return sys.stderr.isatty()


class AccessFormatter(ColourizedFormatter):
    """Formatter for `tricorn.access`.

    Expects `record.args == (client_addr, method, full_path, http_version, status_code)` and provides
    `%(client_addr)s`, `%(request_line)s` and `%(status_code)s` (code plus reason phrase).
    """

    status_code_colours: dict[int, Callable[[str], str]] = {
        1: lambda code: ansi_style(str(code), fg="bright_white"),
        2: lambda code: ansi_style(str(code), fg="green"),
        3: lambda code: ansi_style(str(code), fg="yellow"),
        4: lambda code: ansi_style(str(code), fg="red"),
        5: lambda code: ansi_style(str(code), fg="bright_red"),
    }

    def get_status_code(self, status_code: int) -> str:
        """Return `"<code> <phrase>"`, coloured by status class when `use_colors`."""
        try:
            status_phrase = http.HTTPStatus(status_code).phrase
        except ValueError:
            status_phrase = ""
        status_and_phrase = f"{status_code} {status_phrase}"
        if self.use_colors:
            func = self.status_code_colours.get(status_code // 100, str)
            return func(status_and_phrase)
        return status_and_phrase

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Split the access-log arguments into named fields, then format the record.

        A line made by `--access-log-format` (any other arguments) is written after the level prefix.
        """
        recordcopy = copy(record)
        args = cast("tuple[Any, ...]", recordcopy.args)
        if len(args) != 5:
            return f"{self.level_prefix(recordcopy)} {recordcopy.getMessage()}"
        client_addr, method, full_path, http_version, status_code = args
        request_line = f"{method} {full_path} HTTP/{http_version}"
        if self.use_colors:
            request_line = ansi_style(request_line, bold=True)
        recordcopy.__dict__.update(
            {
                "client_addr": client_addr,
                "request_line": request_line,
                "status_code": self.get_status_code(int(status_code)),
            }
        )
        return super().formatMessage(recordcopy)


ACCESS_FORMAT = LOGGING_CONFIG["formatters"]["access"]["fmt"]


def plain_access_handler(logger: logging.Logger) -> logging.Handler | None:
    """The access logger's handler if the server may write default access lines to its stream itself.

    That is the default configuration without colours: one plain `StreamHandler` (not a subclass, which may
    emit differently) with `AccessFormatter` and the default format, no filters, records not propagated.
    The server checks before each line that this still holds and goes through `logging` otherwise.
    """
    if len(logger.handlers) != 1 or logger.filters or logger.propagate:
        return None
    handler = logger.handlers[0]
    formatter = handler.formatter
    plain = (
        type(handler) is logging.StreamHandler
        and handler.terminator == "\n"
        and not handler.filters
        and type(formatter) is AccessFormatter
        and not formatter.use_colors
        and formatter._fmt == ACCESS_FORMAT
        and isinstance(formatter._style, logging.PercentStyle)
    )
    return handler if plain else None


HTTP_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def from_uvicorn(config: dict[str, Any]) -> dict[str, Any]:
    """Make a uvicorn logging dictConfig serve tricorn too.

    Formatter classes named `uvicorn.logging.*` become tricorn's (same arguments, same output), so the
    config loads without uvicorn installed, and each `uvicorn*` logger's settings are copied to the matching
    `tricorn*` logger (unless the config sets that one too), so the messages tricorn logs go where the
    config sends uvicorn's.
    """
    config = deepcopy(config)
    for formatter in (config.get("formatters") or {}).values():
        for key in ("()", "class"):
            if isinstance(formatter, dict) and str(formatter.get(key, "")).startswith("uvicorn.logging."):
                formatter[key] = "tricorn.logging." + formatter[key].removeprefix("uvicorn.logging.")
    loggers = config.get("loggers") or {}
    for name in UVICORN_LOGGERS:
        twin = "tricorn" + name.removeprefix("uvicorn")
        if name in loggers and twin not in loggers:
            loggers[twin] = deepcopy(loggers[name])
    return config


def configure_logging(
    log_config: dict[str, Any] | str | RawConfigParser | IO[Any] | None,
    log_level: str | int | None,
    access_log: bool,
    use_colors: bool | None,
) -> None:
    """Apply `log_config` (dict, .json, .yaml/.yml or .ini; None = leave logging alone), then the level overrides."""
    logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")

    if isinstance(log_config, dict):
        log_config = deepcopy(log_config)
        if use_colors in (True, False):
            for formatter in ("default", "access"):
                if formatter in log_config.get("formatters", {}):
                    log_config["formatters"][formatter]["use_colors"] = use_colors
        logging.config.dictConfig(from_uvicorn(log_config))
    elif isinstance(log_config, str) and log_config.endswith(".json"):
        with open(log_config) as file:
            logging.config.dictConfig(from_uvicorn(json.load(file)))
    elif isinstance(log_config, str) and log_config.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as exc:
            raise ImportError("Install the PyYAML package to use `--log-config` with YAML files.") from exc
        with open(log_config) as file:
            logging.config.dictConfig(from_uvicorn(yaml.safe_load(file)))
    elif log_config is not None:
        logging.config.fileConfig(log_config, disable_existing_loggers=False)

    if log_level is not None:
        level = LOG_LEVELS[log_level.lower()] if isinstance(log_level, str) else log_level
        for name in ("tricorn.error", "tricorn.access", "tricorn.asgi"):
            logging.getLogger(name).setLevel(level)
    if access_log is False:
        logging.getLogger("tricorn.access").handlers = []
        logging.getLogger("tricorn.access").propagate = False
