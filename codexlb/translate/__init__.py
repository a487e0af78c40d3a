"""Translation between the public OpenAI shapes (``/v1/...``) and the Codex backend (protocol.md §8)."""

from __future__ import annotations

from codexlb.translate.chat import chat_to_responses, models_to_openai_list
from codexlb.translate.chat_stream import (
    ChatStreamTranslator,
    assemble_chat_completion,
    chat_usage,
    response_to_chat_completion,
)
from codexlb.translate.responses import (
    UNSUPPORTED_UPSTREAM_FIELDS,
    ResponseAssembler,
    ResponseFailed,
    error_from_event,
    prepare_responses_request,
)

__all__ = [
    "UNSUPPORTED_UPSTREAM_FIELDS",
    "ChatStreamTranslator",
    "ResponseAssembler",
    "ResponseFailed",
    "assemble_chat_completion",
    "chat_to_responses",
    "chat_usage",
    "error_from_event",
    "models_to_openai_list",
    "prepare_responses_request",
    "response_to_chat_completion",
]
