"""Legacy Alembic revision ids and the current revisions they stand for.

When ``DATABASE_ALEMBIC_AUTO_REMAP_ENABLED`` is true, :func:`codexlb.db.migrate.prepare_database`
rewrites any of these ids found in ``alembic_version`` before it upgrades. Add an entry whenever a
revision is renamed; never remove one, because old databases may still carry it.
"""

from __future__ import annotations

LEGACY_REVISIONS: dict[str, str] = {
    # Pre-release snapshots used codex-lb's naming styles for the same initial schema.
    "000_base_schema": "0001_initial",
    "20250101_000000_base_schema": "0001_initial",
}
