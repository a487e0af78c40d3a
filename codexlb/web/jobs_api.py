"""``GET /api/jobs`` (loopback clients only) and the model routes served from the model registry.

``/api/jobs`` lists each background job: enabled, whether this process is the leader, last run,
next run, last error (the leader's view, read from ``meta`` on followers).

Registering :data:`blueprint` also overrides the views of ``GET /v1/models`` and
``GET /backend-api/codex/models`` (endpoints ``proxy.models`` / ``proxy.codex_models``): while
``lb.models`` holds a model list they answer from it after the usual admission check (firewall,
API keys) and are logged like any flow; otherwise they fall back to the upstream pass-through.
A Codex client newer than ``MODEL_REGISTRY_CLIENT_VERSION`` may be offered models the cache lacks,
so its request goes to the upstream first and the cache only answers when that fails (5xx).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, jsonify, request
from quart.blueprints import BlueprintSetupState

from codexlb.app import lb_of
from codexlb.web.api import is_loopback

blueprint = Blueprint("jobs_api", __name__)
MODEL_ENDPOINTS = {"proxy.models": "models", "proxy.codex_models": "codex_models"}


def loopback_only() -> Any | None:
    """A 403 answer unless the peer (and any client it forwards for) is on this machine."""
    client = request.scope.get("client")
    forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()]
    if is_loopback(str(client[0]) if client else None) and all(is_loopback(hop) for hop in forwarded):
        return None
    body = {"error": {"message": "the /api routes answer only clients on this machine (127.0.0.1 or ::1)",
                      "type": "permission_error", "code": "forbidden"}}
    return jsonify(body), 403


@blueprint.get("/api/jobs")
async def jobs() -> Any:
    """Each background job's status (``?job=NAME`` for one)."""
    if (refused := loopback_only()) is not None:
        return refused
    lb = lb_of(current_app)  # type: ignore[arg-type]
    state = await lb.jobs.describe()
    if name := request.args.get("job"):
        state["jobs"] = [j for j in state["jobs"] if j["name"] == name]
    return jsonify(state)


def _registry_view(endpoint: str, passthrough: Any) -> Any:
    async def view() -> Response:
        from codexlb.web import proxy

        lb = lb_of(current_app)  # type: ignore[arg-type]
        registry = getattr(lb, "models", None)
        if registry is None or not registry.ready:
            return await passthrough()  # type: ignore[no-any-return]
        client_version = request.args.get("client_version")
        if endpoint == "codex_models" and registry.newer_than_cache(client_version):
            live: Response = await passthrough()  # the cache may lack models this client can use
            if live.status_code < 500:
                return live
            cached = registry.codex_response(client_version, request.headers.get("if-none-match"))
            headers = [*cached.headers, ("x-codexlb-route", "model_registry:fallback")]
            return Response(cached.body, status=cached.status, headers=headers)
        flow = proxy.make_flow(endpoint)
        result = await lb.pipeline.admit(flow)
        if result is None:
            flow.route = "model_registry:cache"
            if endpoint == "models":
                result = registry.openai_response()
            else:
                result = registry.codex_response(client_version, request.headers.get("if-none-match"))
            flow.response = result
        return proxy.to_quart(lb, flow, result)

    view.__name__ = f"{endpoint}_from_registry"
    return view


@blueprint.record_once
def _serve_models_from_registry(state: BlueprintSetupState) -> None:
    """Wrap the proxy's model views (registered before this blueprint) with the registry."""
    views = state.app.view_functions
    for name, endpoint in MODEL_ENDPOINTS.items():
        if name in views:
            views[name] = _registry_view(endpoint, views[name])
