"""The one parser of forwarding headers: repeated lines, lists, whitespace, RFC 7239 ``Forwarded``."""

from __future__ import annotations

import ipaddress

import pytest
from werkzeug.datastructures import Headers

from codexlb.forwarding import (
    MalformedHeader,
    forwarded_clients,
    forwarded_for_chain,
    is_loopback,
    parse_forwarded,
    parse_node,
)


@pytest.mark.parametrize(("line", "elements"), [
    ("for=8.8.8.8", [{"for": "8.8.8.8"}]),
    ("for =8.8.8.8", [{"for": "8.8.8.8"}]),
    ("For = 8.8.8.8 ; Proto = https", [{"for": "8.8.8.8", "proto": "https"}]),
    ('for="[2001:db8::1]:443";proto=https', [{"for": "[2001:db8::1]:443", "proto": "https"}]),
    ("for=192.0.2.1, for=198.51.100.2;by=10.0.0.1", [{"for": "192.0.2.1"}, {"for": "198.51.100.2", "by": "10.0.0.1"}]),
    ('for="a,b;c";proto=http', [{"for": "a,b;c", "proto": "http"}]),
    ('for="\\"x"', [{"for": '"x'}]),
    (" , ,for=1.2.3.4,", [{"for": "1.2.3.4"}]),
    ("proto=https", [{"proto": "https"}]),
    ("", []),
])
def test_parse_forwarded(line: str, elements: list[dict[str, str]]) -> None:
    assert parse_forwarded([line]) == elements


@pytest.mark.parametrize("line", ["garbage", "for=1.2.3.4 x", 'for="unterminated', "for=1;for=2", "=1.2.3.4"])
def test_malformed_forwarded(line: str) -> None:
    with pytest.raises(MalformedHeader):
        parse_forwarded([line])


def test_repeated_lines_are_one_list() -> None:
    headers = Headers([("X-Forwarded-For", "127.0.0.1"), ("x-forwarded-for", " 8.8.8.8 ,, 9.9.9.9")])
    assert forwarded_for_chain(headers) == ["127.0.0.1", "8.8.8.8", "9.9.9.9"]
    assert forwarded_for_chain({"x-forwarded-for": "127.0.0.1, 8.8.8.8"}) == ["127.0.0.1", "8.8.8.8"]
    assert parse_forwarded(["for=1.1.1.1", "for=2.2.2.2"]) == [{"for": "1.1.1.1"}, {"for": "2.2.2.2"}]


@pytest.mark.parametrize(("lines", "clients"), [
    ([("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "8.8.8.8")], ["127.0.0.1", "8.8.8.8"]),
    ([("X-Real-IP", "127.0.0.1"), ("X-Real-IP", "8.8.8.8")], ["127.0.0.1", "8.8.8.8"]),
    ([("Forwarded", "for =8.8.8.8")], ["8.8.8.8"]),
    ([("Forwarded", 'for="[2001:db8::1]:443"')], ["[2001:db8::1]:443"]),
    ([("Forwarded", "proto=https;by=10.0.0.1")], []),
    ([("Forwarded", "nonsense")], ["malformed"]),
    ([("True-Client-IP", "203.0.113.5")], ["203.0.113.5"]),
    ([("X-Forwarded-For", "")], []),
    ([("Accept", "*/*")], []),
])
def test_forwarded_clients(lines: list[tuple[str, str]], clients: list[str]) -> None:
    assert forwarded_clients(Headers(lines)) == clients


@pytest.mark.parametrize(("text", "address"), [
    ("1.2.3.4", "1.2.3.4"), ("1.2.3.4:80", "1.2.3.4"), ("[::1]:80", "::1"), ('"[2001:db8::1]:443"', "2001:db8::1"),
    ("::ffff:10.0.0.1", "10.0.0.1"), ("fe80::1%eth0", "fe80::1%eth0"), (" 8.8.8.8 ", "8.8.8.8"),
    ("unknown", None), ("_hidden", None), ("[::1", None), ("", None),
])
def test_parse_node(text: str, address: str | None) -> None:
    assert parse_node(text) == (ipaddress.ip_address(address) if address else None)


def test_is_loopback() -> None:
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "[::1]:80")))
    assert not any(map(is_loopback, ("192.0.2.2", "10.0.0.1", "::ffff:10.0.0.1", "", None, "localhost")))
