"""The one parser of forwarding headers (``X-Forwarded-For``, ``X-Real-IP``, ``Forwarded``, ...).

Every caller (the firewall's trusted-proxy chain, the admin API's loopback rule) reads forwarding
headers through this module, so they all see the same clients:

- repeated header lines count, in order, as one comma-separated list (RFC 9110 section 5.3);
- list elements are trimmed, empty ones dropped;
- ``Forwarded`` (RFC 7239) is read pair by pair: ``;`` separates pairs, ``,`` elements, values
  may be quoted (``for="[2001:db8::1]:443"``), whitespace around ``=`` is tolerated, and a comma
  or semicolon inside quotes does not split.

``headers`` is anything with ``getlist`` (werkzeug/Quart ``Headers``, which keep repeated lines) or a
plain mapping of lower-cased names (a :class:`codexlb.flow.ProxyRequest`'s, where repeated lines of
these headers were joined with ``", "``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
FORWARDED_FOR = "x-forwarded-for"
FORWARDED = "forwarded"
CLIENT_HEADERS = (FORWARDED_FOR, "x-real-ip", "true-client-ip", "x-client-ip", "cf-connecting-ip")
"""Headers whose every element names a client (``Forwarded`` is read separately)."""
FORWARDING_HEADERS = (*CLIENT_HEADERS, FORWARDED)

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = re.compile(rf"\s*({_TOKEN})\s*=\s*({_QUOTED}|[^;,\s\"]*)\s*")
_SEPARATOR = re.compile(r"\s*([;,]|$)")
_ESCAPE = re.compile(r"\\(.)")


class MalformedHeader(ValueError):
    """A ``Forwarded`` header that RFC 7239 cannot read."""


def header_lines(headers: Any, name: str) -> list[str]:
    """Every line of header ``name`` (case-insensitive), in order."""
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return [str(value) for value in getlist(name)]
    value = headers.get(name.lower()) if isinstance(headers, Mapping) else None
    return [] if value is None else [str(value)]


def join_lines(lines: Iterable[str]) -> str:
    """Repeated lines of one list header as the single line they stand for."""
    return ", ".join(lines)


def split_list(lines: Iterable[str]) -> list[str]:
    """The elements of a comma-separated header over all its lines, trimmed, empties dropped."""
    return [part.strip() for line in lines for part in line.split(",") if part.strip()]


def parse_forwarded(lines: Iterable[str]) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded`` lines as one dict per element (parameter names lower-cased).

    Raises :class:`MalformedHeader` for text that is not ``name=value`` pairs.
    """
    elements: list[dict[str, str]] = []
    for line in lines:
        current: dict[str, str] = {}
        position = 0
        while position < len(line):
            if not line[position:].strip():
                break
            pair = _PAIR.match(line, position)
            if pair is None:
                if line[position] in ",; \t":  # empty element or pair: allowed, skipped
                    if line[position] == "," and current:
                        elements.append(current)
                        current = {}
                    position += 1
                    continue
                raise MalformedHeader(f"Forwarded: cannot read {line[position:]!r}")
            name, value = pair.group(1).lower(), pair.group(2)
            if value.startswith('"'):
                value = _ESCAPE.sub(r"\1", value[1:-1])
            if name in current:
                raise MalformedHeader(f"Forwarded: {name!r} given twice in one element")
            current[name] = value
            separator = _SEPARATOR.match(line, pair.end())
            if separator is None:
                raise MalformedHeader(f"Forwarded: cannot read {line[pair.end():]!r}")
            if separator.group(1) == "," and current:
                elements.append(current)
                current = {}
            position = separator.end()
        if current:
            elements.append(current)
    return elements


@functools.lru_cache(maxsize=4096)
def parse_node(text: str) -> IPAddress | None:
    """An address from a hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``"::1"``; else ``None``.

    IPv4-mapped IPv6 (``::ffff:10.0.0.1``) becomes the IPv4 address; a zone (``%eth0``) is kept.
    """
    text = text.strip().strip('"').strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(text: str | None) -> bool:
    """Whether ``text`` is a loopback address (``127.0.0.0/8``, ``::1``, ``::ffff:127.x``)."""
    address = parse_node(text) if text else None
    return bool(address and address.is_loopback)


def from_this_machine(peer: str | None, headers: Any) -> bool:
    """A loopback peer, and no forwarding header names a client (a local reverse proxy relaying a
    remote one)."""
    return is_loopback(peer) and not forwarded_clients(headers)


def forwarded_for_chain(headers: Any) -> list[str]:
    """The ``X-Forwarded-For`` hops over all its lines, client first, as sent."""
    return split_list(header_lines(headers, FORWARDED_FOR))


def forwarded_clients(headers: Any) -> list[str]:
    """Every client any forwarding header names (``for=`` of ``Forwarded`` included).

    A ``Forwarded`` header that cannot be read counts as naming a client (``"malformed"``), so a
    caller that refuses forwarded requests fails closed.
    """
    clients = [hop for name in CLIENT_HEADERS for hop in split_list(header_lines(headers, name))]
    try:
        elements = parse_forwarded(header_lines(headers, FORWARDED))
    except MalformedHeader:
        return [*clients, "malformed"]
    return clients + [element["for"] for element in elements if "for" in element]


def forwarded_proto(headers: Any) -> str | None:
    """The scheme the client used according to the nearest proxy (``X-Forwarded-Proto`` or the last
    ``Forwarded`` element's ``proto``), lower-cased; ``None`` when neither says.
    """
    hops = split_list(header_lines(headers, "x-forwarded-proto"))
    if hops:
        return hops[-1].lower()
    try:
        elements = parse_forwarded(header_lines(headers, FORWARDED))
    except MalformedHeader:
        return None
    protos = [element["proto"] for element in elements if "proto" in element]
    return protos[-1].lower() if protos else None
