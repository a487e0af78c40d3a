"""Request log: newest first, keyset pages, filters; one request's detail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quart import current_app, request

from codexlb.app import lb_of
from codexlb.db.dashboard_queries import LogFilter, request_detail, request_page
from codexlb.web.dashboard import blueprint, page

PAGE_SIZE = 50
FILTER_ARGS = ("account", "key", "model", "status", "route", "since", "until")


def _time(value: str) -> float | None:
    """A ``datetime-local`` value (read as UTC) or unix seconds; ``None`` if unreadable."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_filters(args: Any) -> tuple[LogFilter, dict[str, str], list[str]]:
    """Filters from query arguments, the arguments kept (for links), and problems to show."""
    kept = {name: str(args.get(name, "")).strip() for name in FILTER_ARGS if str(args.get(name, "")).strip()}
    problems: list[str] = []
    status: int | str | None = None
    if "status" in kept:
        value = kept["status"]
        if value in ("ok", "error"):
            status = value
        elif value.isdigit() and 100 <= int(value) <= 599:
            status = int(value)
        else:
            problems.append("status: give ok, error, or an HTTP status such as 429")
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        times[name] = _time(kept[name]) if name in kept else None
        if name in kept and times[name] is None:
            problems.append(f"{name}: give a date and time such as 2026-01-31T14:00")
    filters = LogFilter(account_id=kept.get("account"), api_key_id=kept.get("key"), model=kept.get("model"),
                        status=status, route=kept.get("route"), since=times["since"], until=times["until"])
    return filters, kept, problems


@blueprint.get("/requests")
async def request_log() -> Any:
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None
    filters, kept, problems = parse_filters(request.args)
    cursor = request.args.get("cursor") or None
    result = await request_page(lb.sessionmaker, filters, cursor=cursor, limit=PAGE_SIZE)
    accounts = sorted(lb.pool.all(), key=lambda a: a.label.lower())
    return await page("requests.html", 400 if problems else 200, rows=result.rows, next_cursor=result.next_cursor,
                      filters=kept, problems=problems, accounts=accounts, first_page=cursor is None)


@blueprint.get("/requests/<int:ident>")
async def request_view(ident: int) -> Any:
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None
    row = await request_detail(lb.sessionmaker, ident)
    if row is None:
        return await page("message.html", 404, title="No such request",
                          message=f"Request {ident} is not in the log (it may have been pruned).")
    return await page("request.html", row=row)
