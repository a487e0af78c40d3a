"""Usage from a terminal event's raw JSON: only the usage object decoded, the whole event when needed."""

from __future__ import annotations

import json

from codexlb.sse_frames import completed_usage
from codexlb.types import TokenUsage

USAGE = {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100}, "output_tokens": 30,
         "output_tokens_details": {"reasoning_tokens": 7}, "total_tokens": 150}
TRICKY_TEXT = 'the key "usage": {"input_tokens": 999} appears in the answer'


def completed(usage: object = USAGE, *, text: str = TRICKY_TEXT, after: dict[str, object] | None = None,
              indent: int | None = None) -> bytes:
    response = {"id": "resp_1", "status": "completed",
                "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}],
                "usage": usage, **(after or {})}
    return json.dumps({"type": "response.completed", "response": response}, indent=indent).encode()


def test_the_response_usage_is_read_whatever_the_answer_holds() -> None:
    assert completed_usage(completed()) == TokenUsage(input=120, cached=100, output=30, reasoning=7)
    assert completed_usage(completed(indent=2)) == TokenUsage(input=120, cached=100, output=30, reasoning=7)


def test_a_later_usage_key_that_is_no_usage_falls_back_to_the_whole_event() -> None:
    data = completed(after={"metadata": {"usage": "internal"}})
    assert completed_usage(data) == TokenUsage(input=120, cached=100, output=30, reasoning=7)


def test_no_usage_gives_none() -> None:
    assert completed_usage(completed(usage=None)) is None
    assert completed_usage(completed(usage={}, text="plain")) is None
    assert completed_usage(b'{"type":"response.completed","response":{"status":"completed"}}') is None
    assert completed_usage(b"{not json") is None
