"""``GET /api/jobs`` (loopback clients only): each background job, whether this process is the
leader, last run, next run, last error (the leader's view, read from ``meta`` on followers).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app, jsonify, request

from codexlb.app import lb_of
from codexlb.web import json_error
from codexlb.web.api import from_this_machine

blueprint = Blueprint("jobs_api", __name__)


def loopback_only() -> Any | None:
    """A 403 answer unless the request comes from this machine (see ``api.from_this_machine``)."""
    if from_this_machine():
        return None
    return json_error(403, "forbidden", "the /api routes answer only clients on this machine (127.0.0.1 or ::1)",
                      kind="permission_error")


@blueprint.get("/api/jobs")
async def jobs() -> Any:
    """Each background job's status (``?job=NAME`` for one)."""
    if (refused := loopback_only()) is not None:
        return refused
    lb = lb_of(current_app)
    state = await lb.jobs.describe()
    if name := request.args.get("job"):
        state["jobs"] = [j for j in state["jobs"] if j["name"] == name]
    return jsonify(state)
