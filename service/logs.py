"""Structured JSON logs to stdout, one object per line.

Each line carries the hook call's ``hookInstance`` and service id (from a context variable set by the
route) and only the ``extra`` keys listed in ``_ALLOWED`` — so a patient id, a URL with one in it, or
a token can never slip into a log line through ``extra``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys
from typing import Any

import orjson

hook_instance: contextvars.ContextVar[str | None] = contextvars.ContextVar("hook_instance", default=None)
service_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("service_id", default=None)

_ALLOWED = (
    "method", "route", "status", "ms", "resource_type", "rule_id", "cards", "reason", "error", "pages", "length",
    "count", "states",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (hi := hook_instance.get()) is not None:
            line["hookInstance"] = hi
        if (sid := service_id.get()) is not None:
            line["service"] = sid
        for key in _ALLOWED:
            if key in record.__dict__:
                line[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints full paths and client addresses; our middleware logs routes instead.
    logging.getLogger("uvicorn.access").disabled = True
