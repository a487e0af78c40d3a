"""``/v1/chat/completions`` → Responses request translation (protocol.md §8.2).

The response side (stream chunks, non-stream completion) is in :mod:`codexlb.translate.chat_stream`
and re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from codexlb.translate.chat_stream import (
    ChatStreamTranslator,
    assemble_chat_completion,
    chat_usage,
    response_to_chat_completion,
)
from codexlb.translate.responses import normalize_tools, prepare_responses_request

__all__ = [
    "ChatStreamTranslator",
    "assemble_chat_completion",
    "chat_to_responses",
    "chat_usage",
    "models_to_openai_list",
    "response_to_chat_completion",
]

_CHAT_REJECTED_TOOL_TYPES = frozenset({
    "file_search", "code_interpreter", "computer_use", "computer_use_preview", "image_generation",
})
"""§8.1: hosted tools the backend cannot run; ``image_generation`` is refused on chat as well."""

_PASSTHROUGH = ("model", "parallel_tool_calls", "service_tier", "prompt_cache_key", "include")
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


def _text_of(content: Any, where: str, *, allow_refusal: bool = False) -> str:
    """Plain text of a string or a list of text parts (system, developer, tool, assistant)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"{where}: 'content' must be a string or an array of parts")
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, Mapping):
            raise ValueError(f"{where}: content parts must be objects")
        kind = part.get("type")
        if kind in _TEXT_PART_TYPES and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif allow_refusal and kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise ValueError(f"{where}: unsupported content part type {kind!r}")
    return "".join(texts)


def _image_part(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str) or not url:
        raise ValueError(f"{where}: image_url part needs 'image_url.url'")
    out: dict[str, Any] = {"type": "input_image", "image_url": url}
    detail = image.get("detail") if isinstance(image, Mapping) else part.get("detail")
    if isinstance(detail, str):
        out["detail"] = detail
    return out


def _user_content(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list) or not content:
        raise ValueError(f"{where}: 'content' must be a string or a non-empty array of parts")
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, Mapping):
            raise ValueError(f"{where}: content parts must be objects")
        kind = part.get("type")
        if kind in _TEXT_PART_TYPES:
            if not isinstance(part.get("text"), str):
                raise ValueError(f"{where}: text part needs a string 'text'")
            parts.append({"type": "input_text", "text": part["text"]})
        elif kind in ("image_url", "input_image"):
            parts.append(_image_part(part, where))
        elif kind == "file":
            file = part.get("file")
            if not isinstance(file, Mapping) or not isinstance(file.get("file_data"), str):
                raise ValueError(f"{where}: file parts need 'file.file_data' (file_id is not supported)")
            item = {"type": "input_file", "file_data": file["file_data"]}
            if isinstance(file.get("filename"), str):
                item["filename"] = file["filename"]
            parts.append(item)
        elif kind in ("input_audio", "audio"):
            raise ValueError(f"{where}: audio input is not supported")
        else:
            raise ValueError(f"{where}: unsupported content part type {kind!r}")
    return parts


def _function_call_items(tool_calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(tool_calls, list):
        raise ValueError(f"{where}: 'tool_calls' must be an array")
    items: list[dict[str, Any]] = []
    for call in tool_calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(call.get("id"), str):
            raise ValueError(f"{where}: each tool call needs 'id' and 'function'")
        if call.get("type", "function") != "function":
            raise ValueError(f"{where}: unsupported tool call type {call.get('type')!r}")
        name, arguments = function.get("name"), function.get("arguments", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: tool call needs 'function.name'")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        items.append({"type": "function_call", "call_id": call["id"], "name": name, "arguments": arguments})
    return items


def _messages_to_input(messages: Any, keep_system: bool) -> tuple[str, list[dict[str, Any]]]:
    """``(instructions, input items)`` for a chat ``messages`` array."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty array")
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise ValueError(f"{where}: must be an object")
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content, where)
            if keep_system:
                items.append({"type": "message", "role": role,
                              "content": [{"type": "input_text", "text": text}]})
            elif text:
                instructions.append(text)
        elif role == "user":
            items.append({"type": "message", "role": "user", "content": _user_content(content, where)})
        elif role == "assistant":
            text = _text_of(content, where, allow_refusal=True)
            if text:
                items.append({"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": text}]})
            if message.get("tool_calls"):
                items.extend(_function_call_items(message["tool_calls"], where))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ValueError(f"{where}: tool messages need 'tool_call_id'")
            items.append({"type": "function_call_output", "call_id": call_id,
                          "output": _text_of(content, where, allow_refusal=True)})
        elif role == "function":
            raise ValueError(f"{where}: role 'function' is not supported; use 'tools' and 'tool' messages")
        else:
            raise ValueError(f"{where}: unsupported role {role!r}")
    return "\n".join(instructions), items


def _chat_tools(tools: Any) -> list[Any]:
    if not isinstance(tools, list):
        raise ValueError("'tools' must be an array")
    flat: list[Any] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise ValueError(f"tools[{i}]: must be an object")
        if tool.get("type") != "function":
            flat.append(tool)
            continue
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ValueError(f"tools[{i}]: function tools need 'function.name'")
        item: dict[str, Any] = {"type": "function", "name": function["name"]}
        if isinstance(function.get("description"), str):
            item["description"] = function["description"]
        item["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
        # Chat defaults to non-strict; the Responses API defaults to strict.
        item["strict"] = bool(function.get("strict", False))
        flat.append(item)
    for tool in flat:
        if tool.get("type") == "custom":
            raise ValueError("custom tools are not supported on /v1/chat/completions; use /v1/responses")
    return normalize_tools(flat, _CHAT_REJECTED_TOOL_TYPES)


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) or choice is None:
        return choice
    if not isinstance(choice, Mapping):
        raise ValueError("'tool_choice' must be a string or an object")
    kind = choice.get("type")
    if kind == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        if not isinstance(name, str):
            raise ValueError("'tool_choice' of type function needs 'function.name'")
        return {"type": "function", "name": name}
    if kind == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if not isinstance(allowed, Mapping) or not isinstance(allowed.get("tools"), list):
            raise ValueError("'tool_choice.allowed_tools' needs 'mode' and 'tools'")
        tools = [_chat_tool_choice(t) for t in allowed["tools"]]
        return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"), "tools": tools}
    return dict(choice)


def _text_format(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ValueError("'response_format' must be an object")
    kind = response_format.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise ValueError("'response_format.json_schema' needs 'name' and 'schema'")
        fmt: dict[str, Any] = {"type": "json_schema", "name": spec["name"],
                               "schema": spec.get("schema") or {}}
        for key in ("strict", "description"):
            if spec.get(key) is not None:
                fmt[key] = spec[key]
        return fmt
    raise ValueError(f"unsupported response_format type {kind!r}")


def chat_to_responses(body: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a chat completions request into the upstream Responses body; ``ValueError`` → 400.

    The result has already been through :func:`prepare_responses_request`. ``stream`` and
    ``stream_options`` are for the caller; ``max_tokens``, ``n``, sampling and penalty parameters
    are dropped (the backend rejects them). A body with ``input`` instead of ``messages`` is
    taken as a Responses request (§8.2).
    """
    if not isinstance(body, Mapping):
        raise ValueError("request body must be a JSON object")
    if "messages" not in body and "input" in body:
        rest = {k: v for k, v in body.items() if k not in ("stream_options", "n", "max_tokens")}
        return prepare_responses_request(rest)
    n = body.get("n")
    if n is not None and n != 1:
        raise ValueError("only n=1 is supported")
    response_format = body.get("response_format")
    text_format = _text_format(response_format)
    keep_system = isinstance(response_format, Mapping) and response_format.get("type") == "json_object"
    instructions, items = _messages_to_input(body.get("messages"), keep_system)

    out: dict[str, Any] = {k: body[k] for k in _PASSTHROUGH if body.get(k) is not None}
    out["instructions"] = instructions
    out["input"] = items
    if body.get("tools"):
        out["tools"] = _chat_tools(body["tools"])
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    effort = body.get("reasoning_effort")
    if isinstance(body.get("reasoning"), Mapping):
        out["reasoning"] = dict(body["reasoning"])
    elif isinstance(effort, str):
        out["reasoning"] = {"effort": effort}
    text: dict[str, Any] = {}
    if text_format is not None and text_format["type"] != "text":
        text["format"] = text_format
    if isinstance(body.get("verbosity"), str):
        text["verbosity"] = body["verbosity"]
    if text:
        out["text"] = text
    return prepare_responses_request(out)


def models_to_openai_list(upstream_models_json: Any, *, owned_by: str = "openai",
                          created: int = 0) -> dict[str, Any]:
    """``/v1/models`` list from the backend's ``/codex/models`` answer (§4, §8.3).

    Entries without a ``slug`` or with ``supported_in_api: false`` are left out; duplicates once.
    """
    entries: Any = upstream_models_json
    if isinstance(entries, Mapping):
        entries = entries.get("models")
    if not isinstance(entries, list):
        raise ValueError("upstream models answer has no 'models' array")
    data: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        slug = entry.get("slug")
        if not isinstance(slug, str) or not slug or slug in seen or entry.get("supported_in_api") is False:
            continue
        seen.add(slug)
        data.append({"id": slug, "object": "model", "created": created, "owned_by": owned_by})
    return {"object": "list", "data": data}
