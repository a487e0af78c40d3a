from __future__ import annotations

import json
import random
import re

import pytest

from codexlb.sse import (
    PEEK_TYPES,
    SSEEvent,
    SSEEventTooLarge,
    SSEScanner,
)
from codexlb.sse_frames import format_event, terminal_error_event, usage_from_completed
from codexlb.types import TokenUsage

COMPLETED = {
    "type": "response.completed",
    "sequence_number": 12,
    "response": {
        "id": "resp_1", "object": "response", "created_at": 1755041560, "status": "completed",
        "model": "gpt-5.4", "output": [],
        "usage": {"input_tokens": 12840, "input_tokens_details": {"cached_tokens": 11904},
                  "output_tokens": 312, "output_tokens_details": {"reasoning_tokens": 192},
                  "total_tokens": 13152},
    },
}


def _turn() -> list[dict]:
    """A §1.6 turn: rate limits, reasoning, a message with unicode deltas, completed."""
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    return [
        {"type": "codex.rate_limits", "plan_type": "plus",
         "rate_limits": {"primary": {"used_percent": 3, "window_minutes": 300, "reset_at": 1787329759}}},
        {"type": "response.created", "sequence_number": 0,
         "response": {"id": "resp_1", "status": "in_progress", "output": []}},
        {"type": "response.in_progress", "sequence_number": 1,
         "response": {"id": "resp_1", "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": msg},
        {"type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "delta": "Hé\nl", "logprobs": []},
        {"type": "response.output_text.delta", "sequence_number": 5, "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "delta": "lo 🌍\r\n", "logprobs": []},
        {"type": "response.output_item.done", "sequence_number": 6, "output_index": 0,
         "item": {**msg, "status": "completed",
                  "content": [{"type": "output_text", "text": "Hé\nllo 🌍\r\n", "annotations": []}]}},
        COMPLETED,
    ]


def _wire(events: list[dict], sep: bytes = b"\n") -> bytes:
    return b"".join(format_event(e["type"], e).replace(b"\n", sep) for e in events)


def _scan_all(stream: bytes, sizes: list[int] | int, limit: int = 1 << 20, **kw) -> list[SSEEvent]:
    scanner = SSEScanner(limit, **kw)
    out: list[SSEEvent] = []
    pos, k = 0, 0
    while pos < len(stream):
        size = sizes if isinstance(sizes, int) else sizes[k % len(sizes)]
        out += scanner.feed(stream[pos:pos + size])
        pos += size
        k += 1
    assert scanner.buffered == 0
    return out


def test_whole_stream_parses_to_the_payloads() -> None:
    events = _scan_all(_wire(_turn()), 1 << 20)
    assert [e.json() for e in events] == _turn()
    assert [e.event for e in events] == [p["type"] for p in _turn()]
    assert all(e.type == e.event for e in events)


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"])
def test_every_chunking_gives_the_same_events(sep: bytes) -> None:
    stream = _wire(_turn(), sep)
    expected = _scan_all(stream, len(stream))
    assert [e.json() for e in expected] == _turn()
    for size in range(1, 65):
        assert _scan_all(stream, size) == expected, size
    for pattern in ([1, 2, 3], [7, 1], [2, 5, 11, 1, 1]):
        assert _scan_all(stream, pattern) == expected


def test_switching_to_line_mode_mid_stream_at_any_split() -> None:
    turn = _turn()
    stream = _wire(turn[:4]) + _wire(turn[4:6], b"\r\n") + _wire(turn[6:])
    for size in range(1, 80):
        assert [e.json() for e in _scan_all(stream, size)] == turn, size


def test_raw_is_the_exact_bytes_and_concatenates_back_to_the_stream() -> None:
    for sep in (b"\n", b"\r\n", b"\r"):
        stream = _wire(_turn(), sep)
        for size in (1, 2, 3, 5, len(stream)):
            joined = b"".join(e.raw for e in _scan_all(stream, size))
            # A CRLF's LF split into the next chunk lands in the next event's raw; the last one has none.
            assert joined == stream or (size < len(stream) and joined + b"\n" == stream)


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    scanner = SSEScanner(1024)
    assert scanner.feed(b"event: a\r") == []
    assert scanner.feed(b"\ndata: 1\r") == []
    [first] = scanner.feed(b"\n\r")  # the blank line's CR dispatches; no waiting for a possible LF
    assert (first.event, first.data, first.raw) == ("a", b"1", b"event: a\r\ndata: 1\r\n\r")
    [second] = scanner.feed(b"\nevent: b\r\ndata: 2\r\n\r\n")
    assert (second.event, second.data, second.raw) == ("b", b"2", b"\nevent: b\r\ndata: 2\r\n\r\n")
    assert scanner.buffered == 0
    assert scanner.feed(b"\r") == [] and scanner.feed(b"\n") == [] and scanner.buffered == 0


def test_mixed_line_ends_multiline_data_comments_and_fields() -> None:
    stream = (
        b": keepalive\n\n"
        b": note\nevent: custom\nid: 7\nretry: 100\nunknown: x\ndata: first\ndata:second\ndata\r\n\r"
        b"data: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\n"
        b"event: only-name\n\n"
        b"data:  two spaces\n\n"
    )
    for size in (1, 3, len(stream)):
        events = _scan_all(stream, size)
        assert [(e.event, e.data) for e in events] == [
            ("custom", b"first\nsecond\n"),
            (None, b'{"type":"response.output_text.delta","delta":"x"}'),
            (None, b" two spaces"),
        ]
        assert events[1].type == "response.output_text.delta"


def test_type_from_json_when_no_event_line() -> None:
    assert SSEEvent(None, b'{ "type" : "error", "message": "x"}').type == "error"
    assert SSEEvent(None, b'{"type":"a\\u0062"}').type == "ab"
    assert SSEEvent(None, b"[DONE]").type is None
    assert SSEEvent(None, b"[1]").type is None
    with pytest.raises(ValueError):
        SSEEvent(None, b"not json").json()


def test_json_is_parsed_once() -> None:
    event = SSEEvent("x", b'{"a": [1]}')
    assert event.json() is event.json()


@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
def test_types_filter_skips_deltas_but_keeps_the_peek_set(sep: bytes) -> None:
    stream = _wire(_turn(), sep)
    for size in (1, 4, len(stream)):
        kept = _scan_all(stream, size, types=PEEK_TYPES)
        assert [e.event for e in kept] == [
            "codex.rate_limits", "response.created", "response.output_item.done", "response.completed",
        ]
    no_event_lines = b"".join(b"data: " + json.dumps(p, separators=(",", ":")).encode() + sep + sep
                              for p in _turn())
    kept = _scan_all(no_event_lines, 3, types={"response.completed"})
    assert [e.json()["type"] for e in kept] == ["response.completed"]


def test_a_run_of_skipped_events_is_kept_again_once_its_type_is_wanted() -> None:
    delta = {"type": "response.output_text.delta", "delta": "x"}
    run = format_event(delta["type"], delta) * 3
    scanner = SSEScanner(1 << 16, types={"response.completed"})
    assert scanner.feed(run) == []
    scanner.keep_only({"response.completed", "response.output_text.delta"})
    assert [e.event for e in scanner.feed(run + format_event("response.completed", COMPLETED))] == [
        "response.output_text.delta"] * 3 + ["response.completed"]
    longer = SSEScanner(1 << 16, types={"response.output_text.deltas"})  # the skipped name is a prefix of it
    assert longer.feed(run) == []
    assert [e.event for e in longer.feed(b"event: response.output_text.deltas\ndata: {}\n\n")] == [
        "response.output_text.deltas"]


def test_events_of_one_chunk_come_back_together_and_in_order() -> None:
    events = SSEScanner(1 << 16).feed(_wire(_turn()))
    assert [e.json()["type"] for e in events] == [p["type"] for p in _turn()]


def test_incomplete_event_at_eof_is_held_not_returned() -> None:
    scanner = SSEScanner(1024)
    assert scanner.feed(b"event: x\ndata: {}\n") == []
    assert scanner.buffered == len(b"event: x\ndata: {}\n")


def test_oversize_event_raises_and_is_discarded_then_scanning_resumes() -> None:
    small = format_event("a", {"n": 1})
    big = b"event: big\ndata: " + b"x" * 5000 + b"\n\n"
    after = format_event("b", {"n": 2})
    for size in (1, 7, 100, 4096, 1 << 20):
        scanner = SSEScanner(1000)
        stream = small + big + after
        seen: list[SSEEvent] = []
        errors = 0
        for pos in range(0, len(stream), size):
            try:
                seen += scanner.feed(stream[pos:pos + size])
            except SSEEventTooLarge as exc:
                errors += 1
                assert exc.limit == 1000
                seen += exc.events
            assert len(scanner._buf) <= 1000 + size  # memory stays bounded while discarding
        assert errors == 1, size
        assert [e.event for e in seen] == ["a", "b"]
        assert scanner.buffered == 0


def test_oversize_without_line_breaks_keeps_memory_bounded() -> None:
    scanner = SSEScanner(64)
    with pytest.raises(SSEEventTooLarge):
        scanner.feed(b"data: " + b"y" * 100)
    for _ in range(100):
        assert scanner.feed(b"z" * 1000) == []
        assert len(scanner._buf) <= 1
    assert scanner.feed(b"\r") == []
    assert scanner.feed(b"\n\r\ndata: ok\n\n") == [SSEEvent(None, b"ok")]


@pytest.mark.parametrize("tail", [b"", b"\n", b"\ndata: more"])
@pytest.mark.parametrize("cr", [False, True])
def test_discarding_knows_whether_the_cut_line_was_empty(tail: bytes, cr: bool) -> None:
    scanner = SSEScanner(32)
    if cr:
        scanner.feed(b"\r\n")  # switch to the line-by-line path
    with pytest.raises(SSEEventTooLarge):
        scanner.feed(b"event: big\ndata: " + b"y" * 40 + tail)
    # The next LF ends the partial line when there is one, else it is the blank line.
    assert scanner.feed(b"\n") == []
    after = scanner.feed(b"data: after\n\n")
    assert after == ([SSEEvent(None, b"after")] if tail == b"\n" else [])
    assert scanner.feed(b"data: last\n\n") == [SSEEvent(None, b"last")]


def test_event_at_the_limit_passes() -> None:
    body = b"data: " + b"x" * 94 + b"\n"
    assert len(body) == 101
    assert SSEScanner(101).feed(body + b"\n") == [SSEEvent(None, b"x" * 94)]
    with pytest.raises(SSEEventTooLarge):
        SSEScanner(100).feed(body + b"\n")


def test_big_event_in_small_chunks_is_linear() -> None:
    payload = {"type": "response.output_item.done", "item": {"text": "a" * (8 << 20)}}
    stream = format_event(payload["type"], payload) + format_event("response.completed", COMPLETED)
    scanner = SSEScanner(16 << 20)
    events: list[SSEEvent] = []
    for pos in range(0, len(stream), 1024):
        events += scanner.feed(stream[pos:pos + 1024])
    assert [e.event for e in events] == ["response.output_item.done", "response.completed"]
    assert len(events[0].json()["item"]["text"]) == 8 << 20
    # Each byte is looked at no more than once per line-end character (LF, CR).
    assert scanner.scanned_bytes <= 2 * len(stream)


def test_many_small_events_in_one_big_chunk_is_linear() -> None:
    delta = {"type": "response.output_text.delta", "delta": "x"}
    stream = format_event(delta["type"], delta) * 20000
    scanner = SSEScanner(1024)
    assert len(scanner.feed(stream)) == 20000
    assert scanner.scanned_bytes <= 2 * len(stream)


def test_format_event_shape() -> None:
    frame = format_event("response.created", {"response": {"id": "r"}})
    assert frame == b'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n'
    expected = 'event: x\ndata: {"type":"x","t":"é\\n"}\n\n'.encode()
    assert format_event("x", {"type": "x", "t": "é\n"}) == expected


def test_terminal_error_event_is_a_response_failed_codex_understands() -> None:
    frame = terminal_error_event("server_is_overloaded", "Our servers are currently overloaded.",
                                 response_id="resp_x", created_at=5, sequence_number=9)
    [event] = SSEScanner(4096).feed(frame)
    payload = event.json()
    assert event.event == payload["type"] == "response.failed"
    assert payload["sequence_number"] == 9
    response = payload["response"]
    assert response["id"] == "resp_x" and response["status"] == "failed"
    assert response["error"] == {"code": "server_is_overloaded",
                                 "message": "Our servers are currently overloaded."}
    generated = SSEScanner(4096).feed(terminal_error_event("c", "m", error_extra={"type": "t"}))[0].json()
    assert generated["response"]["id"].startswith("resp_")
    assert generated["response"]["error"]["type"] == "t"


def test_terminal_error_event_validates_as_openai_event() -> None:
    from openai.types.responses import ResponseFailedEvent

    frame = terminal_error_event("server_error", "boom", model="gpt-5.4", sequence_number=0)
    payload = SSEScanner(4096).feed(frame)[0].json()
    payload["response"].update(parallel_tool_calls=False, tool_choice="auto", tools=[])
    event = ResponseFailedEvent.model_validate(payload)
    assert event.response.error is not None and event.response.error.message == "boom"


def test_usage_from_completed() -> None:
    assert usage_from_completed(COMPLETED) == TokenUsage(input=12840, cached=11904, output=312, reasoning=192)
    assert usage_from_completed(COMPLETED["response"]) == TokenUsage(12840, 11904, 312, 192)
    nulls = {"response": {"usage": {"input_tokens": 5, "input_tokens_details": None,
                                    "output_tokens": 2, "output_tokens_details": None}}}
    assert usage_from_completed(nulls) == TokenUsage(input=5, output=2)
    assert usage_from_completed({"response": {"usage": None}}) == TokenUsage()
    assert usage_from_completed({}) == TokenUsage()


def _reference_parse(stream: bytes) -> list[tuple[str | None, bytes]]:
    """Non-incremental reading of the SSE spec, to compare the scanner against."""
    events: list[tuple[str | None, bytes]] = []
    name: str | None = None
    data: list[bytes] | None = None
    lines = re.split(rb"\r\n|\r|\n", stream)
    for line in lines[:-1]:  # the last piece has no line end: an unfinished line
        if not line:
            if data is not None:
                events.append((name, b"\n".join(data)))
            name, data = None, None
        elif not line.startswith(b":"):
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"data":
                data = (data or []) + [value]
            elif field == b"event":
                name = value.decode() or None
    return events


def _fed_in_pieces(scanner: SSEScanner, stream: bytes, rng: random.Random, longest: int) -> list[SSEEvent]:
    """The events of ``stream`` fed to ``scanner`` in random pieces of 1 to ``longest`` bytes."""
    got: list[SSEEvent] = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, longest)
        got += scanner.feed(stream[pos:pos + step])
        pos += step
    return got


@pytest.mark.parametrize("ends", [[b"\n"], [b"\n", b"\r\n", b"\r"]])
def test_random_streams_match_a_reference_parser(ends: list[bytes]) -> None:
    rng = random.Random(1234)
    pieces = [b"data: {\"a\":1}", b"data", b"data:", b"event: x", b"event:", b": c", b"id: 1", b"x",
              b"data:  y", b""]
    for _ in range(300):
        stream = b"".join(rng.choice(pieces) + rng.choice(ends) for _ in range(rng.randint(1, 30)))
        expected = _reference_parse(stream)
        for _ in range(3):
            got = _fed_in_pieces(SSEScanner(1 << 16), stream, rng, 9)
            assert [(e.event, e.data) for e in got] == expected, stream


def test_kept_types_read_like_the_reference_parser_whatever_the_event_shape() -> None:
    """With ``types``, the kept events are the reference parser's of those types (or of no event line)."""
    rng = random.Random(99)
    blocks = [b"event: x\ndata: {\"a\":1}\n\n", b"event:x\ndata:a\n\n", b"event: x\ndata:\n\n",
              b"event: x\ndata:  y\n\n", b"event: x\ndata: a\ndata: b\n\n", b"event: x\n\n",
              b"event: x\n: c\ndata: a\n\n", b"event: x\nid: 1\n\n", b"event: y\ndata: a\n\n",
              b"data: z\n\n", b"event:\ndata: z\n\n", b"\n"]
    for _ in range(300):
        stream = b"".join(rng.choice(blocks) for _ in range(rng.randint(1, 12)))
        expected = [e for e in _reference_parse(stream) if e[0] in (None, "x")]
        raws = [e.raw for e in SSEScanner(1 << 16).feed(stream) if e.event in (None, "x")]
        for _ in range(3):
            got = _fed_in_pieces(SSEScanner(1 << 16, types={"x"}), stream, rng, 40)
            assert [(e.event, e.data) for e in got] == expected, stream
            assert [e.raw for e in got] == raws, stream
