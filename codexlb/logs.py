"""Logging set-up shared by ``codexlb serve`` and :mod:`codexlb.asgi`: text lines or JSON objects.

``LOG_FORMAT=json`` writes one JSON object per line: ``time`` (ISO 8601, UTC), ``level``,
``logger``, ``message``, ``flow`` (the access fields ``log_stdout`` attaches as
``record.access``: method, path, status, account, route, ...) when present, and ``exc_info``
for exceptions. The message is the same text the text format shows, so whatever redaction the
emitter applied (payload logging, masked settings) holds in both formats.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codexlb.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LOGGERS = ("httpx", "httpcore", "alembic")
"""Libraries that log one line per call at INFO: kept at WARNING or above."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            data["flow"] = access
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        return json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))


def configure_logging(settings: Settings) -> None:
    """Install one stderr handler on the root logger (unless it has one) in the configured format and level."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "JSON" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
