"""Opening one pooled connection: dial (DNS, Happy Eyeballs), TLS with ALPN,
proxy hops, and the protocol driver ALPN chose.

The pool key of a proxied origin carries the proxy (its fourth field, a
label without credentials); the transport registers the `Route` under that
label before the pool dials, so the connector knows which proxy to use:

    direct   dial the origin; TLS with ALPN for https
    forward  dial the proxy (TLS to it for an https proxy); HTTP/1.1 with
             absolute-form targets, Proxy-Authorization on each request
    tunnel   dial the proxy (TLS to it for an https proxy), CONNECT
             host:port with Proxy-Authorization, then TLS to the origin
             inside the tunnel with ALPN (HTTP/2 end to end when chosen)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from .._backends.stream import SocketStream
from .._config import Timeout
from .._exceptions import ConnectError, ConnectTimeout, ProxyError, TLSError
from .._proxy import Route, connect_error, parse_connect_response
from .dial import negotiated_alpn, open_connection, start_tls
from .dns import DNSCache
from .http11 import HTTP11Connection
from .pool import Origin, PoolConnection, origin_label


class Connector:
    """Turns an origin into a connected, protocol-ready pool connection."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        proxy_ssl_context: ssl.SSLContext | None = None,
        dns: DNSCache,
        happy_eyeballs_delay: float,
        http2: bool,
    ) -> None:
        self._ssl_context = ssl_context
        self._proxy_ssl_context = proxy_ssl_context or ssl_context
        self._dns = dns
        self._delay = happy_eyeballs_delay
        self.http2 = http2
        self.routes: dict[Origin, Route] = {}

    def may_multiplex(self, origin: Origin) -> bool:
        return self.http2 and origin[0] == "https"

    async def __call__(
        self, origin: Origin, timeout: Timeout, on_release: Callable[[Any], None]
    ) -> PoolConnection:
        scheme, host, port, via = origin
        peer = origin_label(origin)
        if via:
            route = self.routes[origin]
            transport, stream = await self._through_proxy(route, peer, timeout)
            ctx = self._ssl_context if route.is_tunnel else None
        else:
            ctx = self._ssl_context if scheme == "https" else None
            transport, stream = await open_connection(
                host,
                port,
                lambda: SocketStream(peer),
                dns=self._dns,
                ssl_context=ctx,
                connect_timeout=timeout.connect,
                happy_eyeballs_delay=self._delay,
            )
        try:
            if ctx is not None and negotiated_alpn(transport) == "h2":
                from .http2 import HTTP2Connection

                conn = HTTP2Connection(origin, stream, on_release)
                await conn.start(timeout)
                return conn
            return HTTP11Connection(origin, stream, on_release)
        except BaseException:
            stream.close()
            raise

    async def _through_proxy(
        self, route: Route, peer: str, timeout: Timeout
    ) -> tuple[asyncio.Transport, SocketStream]:
        proxy = route.proxy
        assert proxy is not None
        label = proxy.redacted()
        try:
            transport, stream = await open_connection(
                proxy.host,
                proxy.port,
                lambda: SocketStream(f"proxy {label}"),
                dns=self._dns,
                ssl_context=self._proxy_ssl_context if route.proxy_tls else None,
                connect_timeout=timeout.connect,
                happy_eyeballs_delay=self._delay,
            )
        except (ConnectError, ConnectTimeout, TLSError) as exc:
            raise ProxyError(f"could not reach proxy {label} ({type(exc).__name__}): "
                             f"{str(exc).rpartition(': ')[2]}") from None
        if route.proxy_tls and negotiated_alpn(transport) == "h2":
            # The hop to a proxy speaks HTTP/1.1; a caller's ssl_context may
            # have offered h2 to it.
            stream.close()
            raise ProxyError(
                f"proxy {label} chose HTTP/2 by ALPN, but the hop to a proxy speaks "
                "HTTP/1.1: give the client an ssl_context that offers only http/1.1"
            )
        if not route.is_tunnel:
            return transport, stream
        try:
            stream.write(route.connect_request())
            await stream.drain(timeout.write)
            head = b""
            while True:
                data = await stream.read(timeout.connect)
                if not data:
                    raise ProxyError(f"proxy {label} closed the connection during CONNECT")
                head += data
                reply = parse_connect_response(head, proxy=proxy)
                if reply is not None:
                    break
            if not 200 <= reply.status < 300:
                raise connect_error(reply.status, reply.reason, proxy)
            stream.unread(reply.leftover)
            assert self._ssl_context is not None
            tls = await start_tls(
                transport, stream, self._ssl_context, route.host, timeout=timeout.connect
            )
        except BaseException:
            stream.close()
            raise
        stream.transport = tls
        stream.peer = peer
        return tls, stream
