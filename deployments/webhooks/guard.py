"""The SSRF guard: a webhook may only reach public addresses, unless settings allow
private ones (all, or some CIDRs). Checked when a subscription is saved and again at
every delivery, on the addresses the host resolves to then (DNS may have changed),
and the request goes to the address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(Exception):
    """The URL is not one a webhook may call; the message says why (no addresses)."""


def classify(address: IPAddress) -> str | None:
    """Why an address is not public, or None when it is. IPv4-mapped and other
    IPv6 forms that embed an IPv4 address are judged by that address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            return classify(embedded)
        if address in _NAT64:
            return classify(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable"
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class Policy:
    allow_private: bool = False
    allowed: Sequence[Network] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, allow_private: bool, cidrs: str) -> Policy:
        nets = tuple(
            ipaddress.ip_network(c.strip(), strict=False) for c in cidrs.split(",") if c.strip()
        )
        return cls(allow_private, nets)

    def refusal(self, address: IPAddress) -> str | None:
        reason = classify(address)
        if reason is None or self.allow_private:
            return None
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        for candidate in (address, plain):
            if candidate is not None and any(candidate in net for net in self.allowed):
                return None
        return reason


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    address: IPAddress


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or TargetRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must use http or https")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL must not carry credentials")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise TargetRefused(f"the host {host!r} does not resolve") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise TargetRefused(f"the host {host!r} does not resolve")
    return found


async def check(url: str, policy: Policy) -> Target:
    """Resolve the URL's host and refuse it when ANY address it resolves to is not
    allowed (an attacker controls which one a client would pick). Returns the
    address to connect to."""
    scheme, host, port = parse_url(url)
    addresses = await resolve(host, port)
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise TargetRefused(f"the URL's host resolves to a {reason} address")
    return Target(scheme, host, port, addresses[0])
