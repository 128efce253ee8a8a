"""The one structlog configuration used by every Dockyard entry point.

JSON lines when output is not a terminal (clusters, CI, log shippers); coloured, aligned
key=value lines on a terminal. Standard-library logging (kopf, kubernetes client) is routed
through the same renderer so that a process never mixes two formats.

This module configures logging; it never logs on import. The only state it holds is a
configuration deferred with `lazy=True`: structlog (and rich behind it) take 150 ms to
import, which a CLI command that never logs should not pay.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    import structlog

Format = Literal["auto", "json", "console"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


@dataclass(frozen=True)
class _Settings:
    level: str
    fmt: Format
    stream: TextIO | None


_pending: list[_Settings] = []
_current = _Settings("info", "auto", None)


def configure_logging(
    *, level: str = "info", fmt: Format = "auto", stream: TextIO | None = None,
    lazy: bool = False,
) -> None:
    """Configure structlog and stdlib logging for this process.

    `fmt="auto"` picks JSON unless `stream` (default stderr) is a terminal. Safe to call more
    than once: the last call wins, which lets the CLI apply `--log-format` after start-up.
    With `lazy`, the configuration is applied by the first `get_logger` call instead.
    """
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, not {level!r}")
    global _current  # noqa: PLW0603 -- the process's one logging configuration
    settings = _current = _Settings(level, fmt, stream)
    _pending[:] = [settings]
    if not lazy or "structlog" in sys.modules:
        _apply()


def for_machines() -> bool:
    """Whether output goes to programs rather than people: JSON logs (`--log-format json`,
    or `auto` off a terminal). Progress displays stay quiet then."""
    out = _current.stream if _current.stream is not None else sys.stderr
    return _current.fmt == "json" or (_current.fmt == "auto" and not out.isatty())


def _apply() -> None:
    import structlog  # noqa: PLC0415 -- deferred on purpose, see the module docstring

    settings = _pending.pop()
    level, fmt, stream = settings.level, settings.fmt, settings.stream
    out = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    if as_json:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A named structured logger; configure_logging decides how it renders."""
    import structlog  # noqa: PLC0415 -- deferred on purpose, see the module docstring

    if _pending:
        _apply()
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
