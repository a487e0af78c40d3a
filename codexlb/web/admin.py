"""Health, readiness, and JSON error handlers for the whole app."""

from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, Quart, current_app, jsonify
from werkzeug.exceptions import HTTPException

from codexlb.app import lb_of
from codexlb.web import current_request, json_error, too_large

blueprint = Blueprint("admin", __name__)
log = logging.getLogger("codexlb.web")


@blueprint.get("/healthz")
async def healthz() -> Any:
    """The process is alive."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
async def readyz() -> Any:
    """The database is reachable and migrated; otherwise 503 with what is not ready."""
    state = await lb_of(current_app).check_ready()
    return jsonify(state), 200 if state["ready"] else 503


def install_error_handlers(app: Quart) -> None:
    """Every error, including unknown routes and methods, in OpenAI's ``{"error": {...}}`` shape."""

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                431: "request_header_fields_too_large"}.get(exc.code or 500, "http_error")
        message = exc.description or exc.name
        if exc.code == 404:
            message = "unknown route; see README for the served routes"
        if exc.code == 413:
            message = too_large(current_app.config["MAX_CONTENT_LENGTH"])
        allowed = sorted(getattr(exc, "valid_methods", None) or ())
        if exc.code == 405 and allowed:
            current = current_request()
            message = f"method {current.method} is not allowed on {current.path}; allowed: {', '.join(allowed)}"
            return json_error(405, code, message, headers={"allow": ", ".join(allowed)})
        return json_error(exc.code or 500, code, message)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Any:
        log.exception("unhandled error")
        return json_error(500, "internal_error", "internal error")
