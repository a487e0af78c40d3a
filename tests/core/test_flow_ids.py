"""Flow ids: 32 hex digits, unique within a process and across forked processes."""

from __future__ import annotations

import os

import pytest

from codexlb.testing import make_flow


def test_ids_are_unique_hex() -> None:
    ids = [make_flow().id for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_other_ids() -> None:
    parent = make_flow().id
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, make_flow().id.encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child[:16] != parent[:16]
