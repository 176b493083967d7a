"""Structured logging: readable on a terminal, JSON lines otherwise (fit for journald)."""

from __future__ import annotations

import logging
import sys

import structlog

_level = logging.INFO


def debug_enabled() -> bool:
    """Whether debug lines are logged: a hot path asks this first, as a call on structlog's module-level
    logger builds a bound logger (the loggers are not cached, so that a reload can change the level)."""
    return _level <= logging.DEBUG


def configure_logging(level: str = "info", json_lines: bool | None = None) -> None:
    """Log to stderr at `level`; JSON lines unless stderr is a terminal."""
    global _level
    _level = logging.getLevelName(level.upper())
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    rendering = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json_lines
        else [structlog.dev.ConsoleRenderer()]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
