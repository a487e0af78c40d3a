"""Limit parsing, fixed windows and their resets, key format and hashing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from codexlb.keys.limits import Limit, LimitError, parse_duration, parse_limit, window_bounds
from codexlb.keys.secret import PREFIX, hash_key, new_key, presented_keys, shown_prefix


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "expected"), [
    ("requests=500/day", Limit("requests", "day", 500)),
    ("tokens=2000000/5h", Limit("total_tokens", "5h", 2_000_000)),
    ("input_tokens=1_000/week", Limit("input_tokens", "week", 1000)),
    ("output=7/month", Limit("output_tokens", "month", 7)),
    (" Requests = 3 / DAY ", Limit("requests", "day", 3)),
])
def test_parse_limit(text: str, expected: Limit) -> None:
    assert parse_limit(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("requests500/day", "expected METRIC=NUMBER/WINDOW"), ("bananas=5/day", "expected METRIC=NUMBER/WINDOW"),
    ("requests=5/hour", "unknown window 'hour'; allowed: 5h, day, week, month"),
    ("requests=five/day", "'five' is not a whole number"), ("requests=0/day", "at least 1"),
])
def test_bad_limits_say_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(LimitError, match=message):
        parse_limit(text)


@pytest.mark.parametrize(("window", "now", "start", "end"), [
    ("day", "2025-03-04T17:20:00", "2025-03-04T00:00:00", "2025-03-05T00:00:00"),
    ("week", "2025-03-06T09:00:00", "2025-03-03T00:00:00", "2025-03-10T00:00:00"),  # a Thursday; Monday start
    ("month", "2025-12-31T23:59:59", "2025-12-01T00:00:00", "2026-01-01T00:00:00"),
    ("month", "2024-02-10T00:00:00", "2024-02-01T00:00:00", "2024-03-01T00:00:00"),
    ("5h", "1970-01-01T06:00:00", "1970-01-01T05:00:00", "1970-01-01T10:00:00"),
    ("5h", "2025-03-04T17:20:00", "2025-03-04T16:00:00", "2025-03-04T21:00:00"),  # epoch blocks, not days
])
def test_fixed_windows_in_utc(window: str, now: str, start: str, end: str) -> None:
    assert window_bounds(window, ts(now)) == (ts(start), ts(end))


def test_durations() -> None:
    assert parse_duration("30d", "expires") == 30 * 86400
    assert parse_duration("12h", "x") == 43200 and parse_duration("2w", "x") == 14 * 86400
    for bad in ("", "30", "0d", "3y", "-1d"):
        with pytest.raises(LimitError, match="expected a duration such as 30m, 12h, 30d or 2w"):
            parse_duration(bad, "expires")


def test_key_format_and_hash() -> None:
    key = new_key()
    assert key.startswith(PREFIX) and len(key) == len(PREFIX) + 43 and new_key() != key
    assert len(hash_key(key)) == 64 and hash_key(key) == hash_key(key) and key not in hash_key(key)
    assert shown_prefix(key) == key[:11]


def test_presented_keys() -> None:
    assert presented_keys({"authorization": "Bearer  k1 ", "x-api-key": "k2"}) == [
        ("authorization", "k1"), ("x-api-key", "k2")]
    assert presented_keys({"authorization": "Basic k1"}) == []
    assert presented_keys({"authorization": "Bearer "}) == []
