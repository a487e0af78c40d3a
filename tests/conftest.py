"""Fixtures shared by the whole test suite. Each block says who owns it."""

from __future__ import annotations

# ---- begin: no secrets in logs (guards) ---------------------------------------------------------
import logging
from collections.abc import Iterator

import pytest

from tests.support.logleaks import LogCapture, find_leaks

VERBOSE_LOGGERS = ("codexlb", "plugins")
"""Our loggers run at DEBUG for the session so that debug lines are checked too."""


@pytest.fixture(scope="session", autouse=True)
def log_capture() -> Iterator[LogCapture]:
    """Record every log line of the session; at the end, fail if a registered secret was logged.

    Secrets are registered with :func:`codexlb.testing.secrets.register_secret` (the fake
    upstream registers every token it mints); ``Bearer ey...`` values are caught without it.
    """
    capture = LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    levels = {name: logging.getLogger(name).level for name in VERBOSE_LOGGERS}
    for name in VERBOSE_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    leaks = find_leaks(capture.text())
    assert not leaks, f"secrets appeared in the logs of this test session: {', '.join(leaks[:20])}"
# ---- end: no secrets in logs ----------------------------------------------------------------------


# ---- begin: hypothesis profiles (property tests) -------------------------------------------------
# "ci" (the default) keeps the property tests bounded; HYPOTHESIS_PROFILE=dev explores more.
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
# ---- end: hypothesis profiles -----------------------------------------------------------------------
