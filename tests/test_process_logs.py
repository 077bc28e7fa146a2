"""Every process's log lines name the process and the request being handled (``runtime.logs``)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from bus import request_scope
from runtime.logs import configure_logging


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``configure_logging`` replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_text_line_names_the_process_and_the_request_or_a_dash(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "text", "conductor")
    log = logging.getLogger("actors.conductor")
    with request_scope("req-1234"):
        log.info("building %s", "vm1")
    log.info("idle")
    log.debug("not shown at INFO")
    first, second = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\S+ \S+ conductor\[\d+\] INFO actors.conductor \[req-1234\] building vm1", first)
    assert second.endswith("INFO actors.conductor [-] idle")


def test_a_json_line_holds_the_fields_and_what_the_record_adds(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("DEBUG", "json", "gateway")
    with request_scope("req-abcd"):
        logging.getLogger("aiostack.access").info("GET /", extra={"status": 200})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("gateway").exception("failed")
    access, failed = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert {k: access[k] for k in ("level", "process", "logger", "request_id", "message", "status")} == {
        "level": "INFO",
        "process": "gateway",
        "logger": "aiostack.access",
        "request_id": "req-abcd",
        "message": "GET /",
        "status": 200,
    }
    assert failed["level"] == "ERROR" and "RuntimeError: boom" in failed["exc"]


def test_an_unknown_level_or_format_is_refused(root_logging: None) -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD", "text", "net")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("INFO", "xml", "net")  # type: ignore[arg-type]
