"""Transports: what a Client hands a finished request to.

`HTTPTransport` is the real one (pool, dial, HTTP/1.1 and HTTP/2).
`MockTransport(handler)` answers from a function, for users' own tests.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ._config import DEFAULT_TIMEOUT, Timeout
from ._exceptions import InvalidURL
from ._models import Request, Response
from ._proto.h1_request import check_request_line, field_block
from ._proxy import ProxyConfig
from ._tls import create_ssl_context
from ._transport.connection import Connector
from ._transport.dns import DNSCache
from ._transport.pool import ConnectionPool, Origin


class AsyncBaseTransport(Protocol):
    async def handle_async_request(self, request: Request) -> Response: ...

    async def aclose(self) -> None: ...


class HTTPTransport:
    """Sends requests over pooled HTTP/1.1 and HTTP/2 connections."""

    def __init__(
        self,
        *,
        verify: bool | str = True,
        cert: Any = None,
        ssl_context: ssl.SSLContext | None = None,
        http2: bool = True,
        max_connections: int | None = 100,
        max_connections_per_host: int | None = None,
        max_keepalive_connections: int | None = 20,
        keepalive_expiry: float | None = 120.0,
        happy_eyeballs_delay: float = 0.25,
        dns_ttl: float = 60.0,
        dns: DNSCache | None = None,
        proxies: Any = None,
        trust_env: bool = True,
        fleet: Any = None,
    ) -> None:
        self.ssl_context = create_ssl_context(
            verify=verify, cert=cert, ssl_context=ssl_context, http2=http2
        )
        self.proxies = ProxyConfig.from_client_args(proxies, trust_env=trust_env)
        proxy_ctx = None
        if not self.proxies.is_direct and ssl_context is None:
            # The hop to an https proxy speaks HTTP/1.1 only.
            proxy_ctx = create_ssl_context(verify=verify, cert=cert, http2=False)
        self.fleet = fleet
        if dns is None:
            dns = DNSCache(ttl=dns_ttl, shared=fleet.dns if fleet is not None else None)
        self.dns = dns
        self.connector = Connector(
            ssl_context=self.ssl_context,
            proxy_ssl_context=proxy_ctx,
            dns=self.dns,
            happy_eyeballs_delay=happy_eyeballs_delay,
            http2=http2,
        )
        self.pool = ConnectionPool(
            self.connector,
            max_connections=max_connections,
            max_connections_per_host=max_connections_per_host,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            may_multiplex=self.connector.may_multiplex,
            fleet=fleet,
        )

    async def handle_async_request(self, request: Request) -> Response:
        origin, timeout = self.prepare(request)
        return await self.pool.handle_request(request, origin, timeout)

    def prepare(self, request: Request) -> tuple[Origin, Timeout]:
        """Check `request` and route it: the pool key to send it on and its
        timeouts. Raises before any connection is taken (InvalidURL,
        LocalProtocolError). The Client calls this and the pool itself,
        one coroutine fewer than `handle_async_request`."""
        url = request.url
        origin, target, _ = url.wire_parts()
        if origin[0] not in ("http", "https"):
            raise InvalidURL(f"unsupported URL scheme {url.scheme!r} in {url.redacted()!r}")
        if not origin[1]:
            raise InvalidURL(f"URL has no host: {url.redacted()!r}")
        # Refuse bad fields or framing before a connection is taken; HTTP/1.1
        # then sends the checked, serialised fields as they are.
        check_request_line(request.method, target)
        extensions = request.extensions
        extensions["framing"] = field_block(request.headers.raw_items())
        # Routing is decided afresh for every hop: a redirect's copy of the
        # previous hop's proxy target or credentials must never be sent.
        extensions.pop("target", None)
        if not self.proxies.is_direct:
            origin = self._route(request, origin)
        return origin, extensions.get("timeout", DEFAULT_TIMEOUT)

    def _route(self, request: Request, origin: Origin) -> Origin:
        route = self.proxies.route_for(request.url)
        if route.is_direct or route.proxy is None:
            return origin
        if route.is_forward:
            via = f"forward {route.proxy.redacted()}"
            request.extensions["target"] = route.request_target(request.url)
            origin = ("http", route.proxy.host, route.proxy.port, via)
        else:
            via = f"tunnel {route.proxy.redacted()}"
            origin = (origin[0], origin[1], origin[2], via)
        # One entry per configured proxy and kind (the http:// proxy only
        # forwards, the https:// one only tunnels), not one per origin.
        self.connector.proxies.setdefault(via, route.proxy)
        return origin

    def get_pool_stats(self) -> dict[str, dict[str, int]]:
        return self.pool.stats()

    def close(self) -> None:
        self.pool.close()

    async def aclose(self) -> None:
        self.pool.close()
        if self.fleet is not None:
            await self.fleet.aclose()


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport:
    """A transport that answers every request by calling `handler(request)`
    (sync or async), for testing code that uses a Client."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def handle_async_request(self, request: Request) -> Response:
        result = self.handler(request)
        if inspect.isawaitable(result):
            result = await result
        assert isinstance(result, Response)
        result.request = request
        return result

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


__all__ = ["AsyncBaseTransport", "HTTPTransport", "MockTransport", "Timeout"]
