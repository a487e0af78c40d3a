"""Admit only allowed clients: resolve the client IP and apply a CIDR allowlist.

Hooks: ``configure``, ``admit_request`` (``tryfirst``; fails closed: any exception refuses).

Client IP: the socket peer (``flow.request.peer_ip``). When ``FIREWALL_TRUST_PROXY_HEADERS``
is true and the peer is inside ``FIREWALL_TRUSTED_PROXY_CIDRS``, it is the right-most
``X-Forwarded-For`` address that is not itself a trusted proxy, so a client cannot spoof it by
prepending addresses. Repeated header lines count as one list (read by :mod:`codexlb.forwarding`).
An unparseable hop where the client should be makes the client ``"unknown"`` (matched by no
allowlist). The result is stored in ``flow.request.client_ip``.

``enforces_admission`` tells the start-up bind check what is enforced: ``"client_networks"`` when
``allow`` is non-empty.

Client API keys are checked by the ``api_keys`` plugin, after this one.

Settings table ``[plugins.firewall]``:
- ``allow`` (list of CIDRs or a comma-separated string, default ``[]``: everyone): client
  networks allowed to use the proxy; others get 403 ``ip_not_allowed``. A bare address means
  a single host. Env: ``CODEX_LB_PLUGINS__FIREWALL__ALLOW="10.0.0.0/8,192.168.1.0/24"``.
Core settings used: ``FIREWALL_TRUST_PROXY_HEADERS``, ``FIREWALL_TRUSTED_PROXY_CIDRS``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from codexlb import ConfigError, Flow, hookimpl
from codexlb.forwarding import forwarded_for_chain, join_lines, parse_node, split_list
from codexlb.options import PluginOptions

if TYPE_CHECKING:
    from codexlb.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"


parse_ip = parse_node
"""An address from a header hop (see :func:`codexlb.forwarding.parse_node`)."""


def parse_networks(values: Iterable[str], where: str) -> tuple[IPNetwork, ...]:
    """CIDRs (or bare addresses) as networks; a bad entry is a :class:`ConfigError` naming ``where``."""
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a CIDR; allowed: a list of CIDRs such as "
                              "[\"10.0.0.0/8\", \"::1/128\"] or a comma-separated string") from None
    return tuple(networks)


def in_networks(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return any(address.version == net.version and address in net for net in networks)


def resolve_client_ip(peer: str, forwarded_for: str | None, trusted: Sequence[IPNetwork] | None) -> str:
    """The client address for a request from ``peer`` (see the module docstring).

    :param trusted: trusted proxy networks, or ``None`` when forwarded headers are not trusted.
    """
    peer_ip = parse_ip(peer)
    if peer_ip is None:
        return UNKNOWN
    if not trusted or not forwarded_for or not in_networks(peer_ip, trusted):
        return str(peer_ip)
    hops = split_list([forwarded_for])
    if not hops:
        return str(peer_ip)
    for hop in reversed(hops):
        address = parse_ip(hop)
        if address is None:
            return UNKNOWN
        if not in_networks(address, trusted):
            return str(address)
    return str(parse_ip(hops[0]))  # every hop is a trusted proxy: the first one sent the request


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value if str(part).strip()]
    raise ConfigError(f"[plugins.firewall] allow: {value!r} is not a list of CIDRs or a comma-separated string")


class Firewall:
    """CIDR allowlist, checked before the body is read."""

    def __init__(self) -> None:
        self.allow: tuple[IPNetwork, ...] = ()
        self.trusted: tuple[IPNetwork, ...] | None = None
        self.enforces_admission: frozenset[str] = frozenset()
        """What this plugin checks, for the start-up bind check (:mod:`codexlb.bindcheck`)."""

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        PluginOptions("firewall", config, ("allow",))
        self.allow = parse_networks(_as_list(config.get("allow")), "[plugins.firewall] allow")
        trusted = parse_networks(settings.firewall_trusted_proxy_cidrs, "CODEX_LB_FIREWALL_TRUSTED_PROXY_CIDRS")
        self.trusted = trusted if settings.firewall_trust_proxy_headers else None
        self.enforces_admission = frozenset({"client_networks"} if self.allow else ())

    @hookimpl(tryfirst=True)
    async def admit_request(self, flow: Flow) -> None:
        req = flow.request
        chain = join_lines(forwarded_for_chain(req.headers))
        req.client_ip = resolve_client_ip(req.peer_ip, chain, self.trusted)
        if self.allow:
            address = parse_ip(req.client_ip)
            if address is None or not in_networks(address, self.allow):
                flow.reject(403, "ip_not_allowed",
                            f"client address {req.client_ip} is not allowed ([plugins.firewall] allow)")
                return
