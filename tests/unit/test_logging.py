"""One logging setup: JSON lines off a terminal, readable lines on one, stdlib included."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from dockyard_common import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_off_a_terminal_logs_are_json_lines() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("dockyard.test").info("container started", container="web", pid=42)
    record = json.loads(out.getvalue())
    assert record["event"] == "container started"
    assert record["container"] == "web"
    assert record["pid"] == 42
    assert record["level"] == "info"
    assert record["logger"] == "dockyard.test"
    assert record["timestamp"].endswith("Z")


def test_stdlib_loggers_render_through_the_same_pipeline() -> None:
    out = io.StringIO()
    configure_logging(stream=out, fmt="json")
    logging.getLogger("kopf.objects").warning("handler retried")
    record = json.loads(out.getvalue())
    assert (record["event"], record["level"], record["logger"]) == \
        ("handler retried", "warning", "kopf.objects")


def test_console_format_is_readable_key_value_text() -> None:
    out = io.StringIO()
    configure_logging(stream=out, fmt="console")
    get_logger("dockyard.test").info("pulled", image="nginx:1.27")
    line = out.getvalue()
    assert "pulled" in line
    assert "image=nginx:1.27" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_levels_below_the_threshold_are_dropped() -> None:
    out = io.StringIO()
    configure_logging(stream=out, level="warning")
    get_logger("dockyard.test").info("noise")
    assert out.getvalue() == ""


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level must be one of"):
        configure_logging(level="loud")


def test_a_lazy_configuration_applies_at_the_first_logger() -> None:
    out = io.StringIO()
    configure_logging(stream=out, fmt="json", lazy=True, level="warning")
    get_logger("dockyard.test").warning("late but configured")
    assert json.loads(out.getvalue())["event"] == "late but configured"
