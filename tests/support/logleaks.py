"""Catch secrets in logs: a handler that records every log line and a search for registered secrets.

The test suite installs a :class:`LogCapture` on the root logger and, at the end, asserts that
:func:`find_leaks` finds nothing in what was logged. Secrets come from
:func:`codexlb.testing.secrets.register_secret`.
"""

from __future__ import annotations

import logging
import re

from codexlb.testing.secrets import registered_secrets

__all__ = ["LogCapture", "find_leaks"]

BEARER_JWT = re.compile(r"Bearer\s+ey[A-Za-z0-9_-]{8,}")


def mask(secret: str) -> str:
    """How a leaked secret is named in a report: its first characters and its length."""
    return f"{secret[:6]}...({len(secret)} chars)"


def find_leaks(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Masked descriptions of every registered secret (or ``extra`` value) and ``Bearer ey...`` in ``text``."""
    leaks = [mask(s) for s in sorted(registered_secrets() | set(extra)) if s and s in text]
    leaks += [f"Authorization value {mask(m.group(0))}" for m in BEARER_JWT.finditer(text)]
    return leaks


class LogCapture(logging.Handler):
    """Keeps the formatted message (and exception text) of every record it sees."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a broken record must not break the test that logged it
            self.lines.append(f"{record.levelname} {record.name}: <unformattable {record.msg!r}>")

    def text(self, start: int = 0) -> str:
        """Everything captured from line ``start`` on."""
        return "\n".join(self.lines[start:])
