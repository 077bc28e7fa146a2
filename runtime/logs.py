"""One log format for every process: its name and the request id on every line, as text or JSON.

``configure_logging`` is what each process `aiostack up` starts (and `aiostack run`) calls first.
Every record gets ``process_name`` (the actor, node or gateway it is) and ``request_id`` (the
request being handled, ``bus.current_request_id``: the gateway's ``x-openstack-request-id``
carried by every bus call it makes, so one request is followed across processes with one grep;
``-`` outside requests). ``text``: one readable line; ``json``: one object per line (``ts``,
``level``, ``process``, ``pid``, ``logger``, ``request_id``, ``message``, ``exc`` and what a
record adds with ``extra=``), for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from bus.bus import current_request_id

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(process_name)s[%(process)d] %(levelname)s %(name)s [%(request_id)s] %(message)s"
STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Adds the process's name and the current request id to each record."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self.process_name
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": getattr(record, "process_name", None),
            "pid": record.process,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None),
            "message": record.getMessage(),
        }
        entry |= {
            key: value
            for key, value in record.__dict__.items()
            if key not in STANDARD_ATTRIBUTES and key not in {"process_name", "request_id"}
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: LogFormat, process_name: str) -> None:
    """Send every logger's records at ``level`` and above to stderr, in ``log_format``, each
    carrying ``process_name`` and its request id (replacing any handler set before).

    :raises ValueError: an unknown level or format.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: {' or '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(process_name))
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
