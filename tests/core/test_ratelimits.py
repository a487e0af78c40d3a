"""Rate-limit headers and ``codex.rate_limits`` events: parsed into the account, repeats skipped."""

from __future__ import annotations

import json

import pytest

from codexlb import ratelimits
from codexlb.types import Account, UsageWindow

NOW = 1_787_800_000.0
"""The clock every call here is given (the module never reads the real one when told the time)."""
PRIMARY_RESET = int(NOW) + 25_394
SECONDARY_RESET = int(NOW) + 474_216
HEADERS = {
    "x-codex-plan-type": "pro",
    "x-codex-primary-used-percent": "12.5", "x-codex-primary-window-minutes": "300",
    "x-codex-primary-reset-after-seconds": "8071", "x-codex-primary-reset-at": str(PRIMARY_RESET),
    "x-codex-secondary-used-percent": "40", "x-codex-secondary-window-minutes": "10080",
    "x-codex-secondary-reset-at": str(SECONDARY_RESET), "x-codex-credits-balance": "3.5",
}


def event(primary: float = 12.5, limit: str = "codex") -> bytes:
    return json.dumps({
        "type": "codex.rate_limits", "plan_type": "pro", "metered_limit_name": limit,
        "rate_limits": {"primary": {"used_percent": primary, "window_minutes": 300, "reset_at": PRIMARY_RESET},
                        "secondary": {"used_percent": 40, "window_minutes": 10080, "reset_at": SECONDARY_RESET}},
        "credits": {"balance": "3.5"},
    }).encode()


def test_headers_fill_the_windows_credits_and_plan() -> None:
    account = Account("a")
    assert ratelimits.apply_headers(account, HEADERS, NOW)
    assert account.primary == UsageWindow(12.5, 300, PRIMARY_RESET)
    assert account.secondary == UsageWindow(40.0, 10080, SECONDARY_RESET)
    assert (account.credits, account.plan_type) == (3.5, "pro")


def test_relative_reset_is_used_without_an_absolute_one() -> None:
    account = Account("a")
    headers = {k: v for k, v in HEADERS.items() if k != "x-codex-primary-reset-at"}
    ratelimits.apply_headers(account, headers, NOW)
    assert account.primary.resets_at == NOW + 8071


def test_repeated_headers_change_nothing() -> None:
    account = Account("a")
    ratelimits.apply_headers(account, HEADERS, NOW)
    primary = account.primary
    assert not ratelimits.apply_headers(account, dict(HEADERS), NOW + 1)
    assert account.primary is primary


def test_a_changed_value_is_applied() -> None:
    account = Account("a")
    ratelimits.apply_headers(account, HEADERS, NOW)
    changed = HEADERS | {"x-codex-primary-used-percent": "13"}
    assert ratelimits.apply_headers(account, changed, NOW)
    assert account.primary.used_percent == 13.0
    # a new relative reset beside the same absolute one is read again, and changes no value
    assert not ratelimits.apply_headers(account, changed | {"x-codex-primary-reset-after-seconds": "8070"}, NOW)


def test_a_repeat_is_applied_again_after_another_source_changed_the_account() -> None:
    account = Account("a")
    ratelimits.apply_headers(account, HEADERS, NOW)
    ratelimits.apply_event_data(account, event(), NOW)
    account.primary = UsageWindow(99.0, 300, PRIMARY_RESET)  # the usage job, say
    assert ratelimits.apply_headers(account, HEADERS, NOW)
    assert account.primary.used_percent == 12.5
    account.primary = UsageWindow(99.0, 300, PRIMARY_RESET)
    assert ratelimits.apply_event_data(account, event(), NOW)
    assert account.primary.used_percent == 12.5


def test_headers_and_event_with_the_same_values_do_not_undo_each_other() -> None:
    account = Account("a")
    assert ratelimits.apply_headers(account, HEADERS, NOW)
    assert not ratelimits.apply_event_data(account, event(), NOW)
    windows = (account.primary, account.secondary)
    for _ in range(3):
        assert not ratelimits.apply_headers(account, HEADERS, NOW)
        assert not ratelimits.apply_event_data(account, event(), NOW)
    assert (account.primary, account.secondary) == windows and account.primary is windows[0]


def test_event_data_is_applied_and_its_changes_reported() -> None:
    account = Account("a")
    assert ratelimits.apply_event_data(account, event(), NOW)
    assert account.primary == UsageWindow(12.5, 300, PRIMARY_RESET) and account.credits == 3.5
    assert ratelimits.apply_event_data(account, event(primary=50), NOW)
    assert account.primary.used_percent == 50.0


def test_other_limit_families_and_bad_json() -> None:
    account = Account("a")
    assert not ratelimits.apply_event_data(account, event(primary=70, limit="codex_other"), NOW)
    assert account.primary == UsageWindow()
    assert not ratelimits.apply_event_data(account, b"[1, 2]", NOW)
    with pytest.raises(ValueError):
        ratelimits.apply_event_data(account, b"{not json", NOW)
