"""SSRF guard for outgoing fetches: which addresses may be contacted, and a resolver that enforces it.

:func:`refusal_reason` classifies an address; :class:`GuardedResolver` is an aiohttp resolver
that resolves a name once, refuses it when any of its addresses is not allowed, and hands
aiohttp exactly the addresses it checked, so the connection goes to a checked address (no
second lookup; TLS SNI and the Host header keep the original name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], str | None]
"""Returns why an address is refused, or ``None`` when it may be contacted."""
Lookup = Callable[[str, int], Awaitable[list[IPAddress]]]

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
V4_REFUSED: tuple[tuple[_V4, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified/this-network"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "shared (CGNAT)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (_V4("192.0.2.0/24"), "reserved (documentation)"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay)"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_V4("198.51.100.0/24"), "reserved (documentation)"),
    (_V4("203.0.113.0/24"), "reserved (documentation)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
V6_REFUSED: tuple[tuple[_V6, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("100::/64"), "reserved (discard)"),
    (_V6("2001:db8::/32"), "reserved (documentation)"),
    (_V6("2001::/23"), "reserved (IETF protocol assignments)"),
    (_V6("fc00::/7"), "private (unique local)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "private (site-local)"),
    (_V6("ff00::/8"), "multicast"),
)
NAT64 = (_V6("64:ff9b::/96"), _V6("64:ff9b:1::/48"))
V4_COMPATIBLE = _V6("::/96")
V4_TRANSLATED = _V6("::ffff:0:0:0/96")
SIX_TO_FOUR = _V6("2002::/16")


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 form carries (mapped, compatible, translated, NAT64, 6to4)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in V4_COMPATIBLE:
        return low32, "IPv4-compatible"
    if address in V4_TRANSLATED:
        return low32, "IPv4-translated"
    if any(address in net for net in NAT64):
        return low32, "NAT64"
    if address in SIX_TO_FOUR and address.sixtofour is not None:
        return address.sixtofour, "6to4"
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why fetching from ``address`` is refused (loopback, private, ...), or ``None`` if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        if address in V4_COMPATIBLE and int(address) <= 1:
            return "unspecified" if int(address) == 0 else "loopback"
        embedded = embedded_ipv4(address)
        if embedded is not None:
            inner, form = embedded
            reason = refusal_reason(inner)
            return f"{form} {reason}" if reason else None
        for net, reason in V6_REFUSED:
            if address in net:
                return reason
        return None if address.is_global else "not globally routable"
    for net4, reason in V4_REFUSED:
        if address in net4:
            return reason
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    return None if address.is_global else "not globally routable"


class FetchRefused(Exception):
    """A fetch target is not allowed (address, host, scheme, size or type)."""


async def system_lookup(host: str, port: int) -> list[IPAddress]:
    """All addresses of ``host`` from the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


class GuardedResolver(AbstractResolver):
    """Resolve once, refuse if any address is refused, return only the checked addresses."""

    def __init__(self, policy: AddressPolicy = refusal_reason, lookup: Lookup = system_lookup) -> None:
        self.policy, self.lookup = policy, lookup

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        try:
            addresses = await self.lookup(host, port)
        except OSError as exc:
            raise OSError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
        if not addresses:
            raise OSError(f"cannot resolve {host!r}: no addresses")
        for address in addresses:
            reason = self.policy(address)
            if reason is not None:
                raise FetchRefused(f"host {host!r} resolves to a {reason} address")
        results: list[ResolveResult] = []
        for address in dict.fromkeys(addresses):
            fam = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            results.append({"hostname": host, "host": str(address), "port": port, "family": fam,
                            "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
        return results

    async def close(self) -> None:
        return None


def check_literal(host: str, policy: AddressPolicy) -> None:
    """Refuse a URL host that is an IP literal aiohttp would not pass to the resolver."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return
    reason = policy(address)
    if reason is not None:
        raise FetchRefused(f"address {address} is {reason}")
