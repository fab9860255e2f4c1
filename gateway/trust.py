"""Whom to believe about a client's address: the socket peer, unless that peer is a
trusted proxy (`NEXTFLOW_TRUSTED_PROXIES`). Public routes rate-limit by it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str:
    """The client to rate-limit: the socket peer, unless that peer is a trusted proxy;
    then the right-most `X-Forwarded-For` entry that is not itself trusted (entries to
    its left were written by the client and prove nothing)."""
    address = peer or "unknown"
    if not trusted or not _trusted(address, trusted) or not forwarded_for:
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a mangled header: fall back to the proxy itself
        if not _trusted(hop, trusted):
            return hop
    return address
