"""Where a webhook may be delivered: public addresses, and the networks the operator allows.

The server POSTs results from inside the cluster, so a webhook must not be a way for an API
user to reach what only the pod can reach (its loopback, the node's kubelet, the cloud's
metadata service, internal services). The host is checked when the request arrives (a 422
that names `webhook`) and again when the connection is made, on the address actually dialled:
the connection is pinned to a checked address, so a name that resolves elsewhere the second
time (DNS rebinding) gets nowhere. Address classes come from the standard `ipaddress` module;
the pinning is an httpcore network backend under httpx's own transport.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from ..config.settings import Network

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_CGNAT = ip_network("100.64.0.0/10")
_NAT64 = ip_network("64:ff9b::/96")
_CLASSES = (
    ("is_loopback", "loopback"),
    ("is_unspecified", "unspecified"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
)


class TargetRefused(Exception):
    """A webhook host that resolves to an address the server must not call."""


def _embedded_v4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo client, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_class(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address (None when it is)."""
    if isinstance(ip, IPv6Address) and (v4 := _embedded_v4(ip)) is not None:
        return address_class(v4)
    for attribute, name in _CLASSES:
        if getattr(ip, attribute):
            return name
    if ip in _CGNAT:
        return "carrier-grade NAT"
    return None if ip.is_global else "not public"


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` stands for: a literal as it is, a name as the system resolves it
    (numeric forms such as 2130706433 or 0x7f.1 included, as the C library reads them)."""
    try:
        return [ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class WebhookTargets:
    """The policy: public addresses, plus `allowed` networks (the operator's own receivers)."""

    def __init__(self, allowed: Iterable[Network] = (), resolver: Resolver = resolve) -> None:
        self.allowed = list(allowed)
        self.resolver = resolver

    def refusal(self, ip: IPAddress) -> str | None:
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        reason = address_class(ip)
        return f"{ip} is a {reason} address" if reason else None

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of `host`, all of them allowed, or TargetRefused."""
        try:
            found = await self.resolver(host, port)
        except OSError as exc:
            raise TargetRefused(f"{host} does not resolve") from exc
        if not found:
            raise TargetRefused(f"{host} does not resolve")
        for ip in found:
            if (why := self.refusal(ip)) is not None:
                raise TargetRefused(f"{host}: {why}" if str(ip) != host.strip("[]") else why)
        return found

    async def check(self, url: str) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise TargetRefused("the URL has no host")
        await self.addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Dials only addresses the policy allows, resolving the host itself at connect time; TLS
    still verifies the host's name, as httpcore passes it on for the handshake."""

    def __init__(
        self, targets: WebhookTargets, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self.targets = targets
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            [ip, *_] = await self.targets.addresses(host, port)
        except TargetRefused as exc:
            raise httpcore.ConnectError(f"webhook target refused: {exc}") from exc
        return await self.inner.connect_tcp(
            str(ip),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are delivered over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that dials through `PinnedBackend`."""

    def __init__(self, targets: WebhookTargets, inner: httpcore.AsyncNetworkBackend | None = None):
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            network_backend=PinnedBackend(targets, inner),
        )
