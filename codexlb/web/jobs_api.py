"""``GET /api/jobs`` (behind :mod:`codexlb.web.admin_guard`): each background job, whether this
process is the leader, last run, next run, last error (the leader's view, read from ``meta`` on
followers).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app, jsonify, request

from codexlb.app import lb_of

blueprint = Blueprint("jobs_api", __name__)


@blueprint.get("/api/jobs")
async def jobs() -> Any:
    """Each background job's status (``?job=NAME`` for one)."""
    lb = lb_of(current_app)
    state = await lb.jobs.describe()
    if name := request.args.get("job"):
        state["jobs"] = [j for j in state["jobs"] if j["name"] == name]
    return jsonify(state)
