"""Every command's ``--help`` is plain text: no reStructuredText markup leaks from docstrings."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ["serve", "check-config", "plugins", "db", "accounts", "jobs", "keys", "keys create", "fake-upstream"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_markup(command: str) -> None:
    done = subprocess.run([sys.executable, "-m", "codexlb", *command.split(), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: codexlb" in done.stdout
    assert "``" not in done.stdout and ":func:" not in done.stdout and ":class:" not in done.stdout
