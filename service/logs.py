"""Structured JSON logs to stdout, one object per line.

Each line carries the hook call's ``hookInstance`` and service id (from a context variable set by the
route) and only the ``extra`` keys listed in ``_ALLOWED`` — so a patient id, a URL with one in it, or
a token can never slip into a log line through ``extra``. Every string in a line (the message included)
is cut to ``BLINA_CDS_LOG_MAX_FIELD_CHARS``: a value a request chose cannot make a line grow without bound.
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
    def __init__(self, *, max_field_chars: int = 512) -> None:
        super().__init__()
        self._max = max_field_chars

    def _cut(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) > self._max:
            return value[: self._max - 1] + "…"
        return value

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._cut(record.getMessage()),
        }
        if (hi := hook_instance.get()) is not None:
            line["hookInstance"] = self._cut(hi)
        if (sid := service_id.get()) is not None:
            line["service"] = sid
        for key in _ALLOWED:
            if key in record.__dict__:
                line[key] = self._cut(record.__dict__[key])
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO", *, max_field_chars: int = 512) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(max_field_chars=max_field_chars))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints full paths and client addresses; our middleware logs routes instead.
    logging.getLogger("uvicorn.access").disabled = True
