"""Where a webhook may be sent (SPEC §12): `https://` only, and never to this machine or a
private network.

The host is resolved once and every address it resolves to is checked; the delivery then
connects to the address that was checked (the host name kept for the Host header, TLS's SNI
and the certificate check), so a DNS answer that changes between the check and the connection
cannot send it elsewhere. Redirects are never followed. `WEBHOOK_ALLOWED_HOSTS` lifts every
rule for the hosts it names (local development).
"""

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from app.kit.errors import ApiError, validation_error

# Host name → the addresses it resolves to (no addresses: it does not resolve).
Resolver = Callable[[str, int], Awaitable[list[str]]]

_RESOLVE_TIMEOUT_SECONDS = 5.0
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError):
        return []
    return [str(info[4][0]) for info in infos]


def _unwrapped(address: _IP) -> _IP:
    """The IPv4 address inside an IPv6 form that carries one (::ffff:10.0.0.1, 6to4, Teredo)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def is_refused_address(text: str) -> bool:
    """Loopback, private, link-local, shared (100.64/10), multicast, unspecified or reserved,
    IPv4-mapped forms included: anything but a global unicast address."""
    address = _unwrapped(ipaddress.ip_address(text.split("%", 1)[0]))
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or address in _SHARED
        or not address.is_global
    )


def url_not_allowed(detail: str) -> ApiError:
    return ApiError("webhook_url_not_allowed", 422, detail)


class UrlRefused(Exception):
    """At delivery: the URL breaks the rules now (a name that came to resolve to a private
    address, say)."""


@dataclass(frozen=True)
class Target:
    """What a delivery connects to: `url` with the checked address in place of the name,
    and the name itself for the Host header and TLS."""

    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UrlGuard:
    allowed_hosts: frozenset[str]
    resolver: Resolver = system_resolver

    def parse(self, text: str) -> httpx.URL:
        """The URL, or 422: validation_error if it is not one, webhook_url_not_allowed if it
        is not https:// (outside the allowed hosts)."""
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL:
            raise validation_error("body.url", "is not a URL") from None
        if not url.scheme or not url.host:
            raise validation_error("body.url", "must be an absolute https:// URL")
        if url.userinfo:
            raise validation_error("body.url", "may not carry a user name or password")
        if url.fragment:
            raise validation_error("body.url", "may not carry a #fragment")
        if url.scheme != "https" and not (url.scheme == "http" and self.allows(url)):
            raise url_not_allowed("Webhook URLs must use https://.")
        return url

    def allows(self, url: httpx.URL) -> bool:
        return url.host.lower() in self.allowed_hosts

    async def check_at_creation(self, text: str) -> str:
        """The URL to store; 422 if it is refused. A name that does not resolve yet is
        accepted: it is checked again at every delivery."""
        url = self.parse(text)
        if not self.allows(url):
            addresses = await self.resolver(url.host, _port(url))
            if any(is_refused_address(address) for address in addresses):
                raise url_not_allowed(
                    "Webhook URLs may not point to this machine or a private network."
                )
        return str(url)

    async def target(self, text: str) -> Target:
        """Where to connect for a delivery now; UrlRefused if the URL is refused."""
        url = httpx.URL(text)
        if self.allows(url):
            return Target(url)
        if url.scheme != "https":
            raise UrlRefused("not https")
        addresses = await self.resolver(url.host, _port(url))
        if not addresses:
            raise UrlRefused("does not resolve")
        if any(is_refused_address(address) for address in addresses):
            raise UrlRefused("resolves to a refused address")
        address = addresses[0].split("%", 1)[0]
        host = url.host if url.port is None else f"{url.host}:{url.port}"
        return Target(
            url.copy_with(host=address),
            headers={"Host": host},
            extensions={"sni_hostname": url.host},
        )


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)
