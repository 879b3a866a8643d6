"""Opening one pooled connection: dial (DNS, Happy Eyeballs), TLS with ALPN,
proxy hops, and the protocol driver ALPN chose.

The pool key of a proxied origin carries the proxy (its fourth field, a
label without credentials: "forward <proxy>" or "tunnel <proxy>"); the
transport registers the `Proxy` under that label before the pool dials (one
entry per configured proxy and kind, so at most two), and the connector
rebuilds the route from the key:

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
from .._exceptions import (
    ConnectError,
    ConnectTimeout,
    DNSError,
    ProxyError,
    TimeoutException,
    TLSError,
    TransportError,
)
from .._proxy import Proxy, Route, connect_error, parse_connect_response
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
        # Pool-key label -> the proxy it names (see the module docstring).
        self.proxies: dict[str, Proxy] = {}

    def may_multiplex(self, origin: Origin) -> bool:
        return self.http2 and origin[0] == "https"

    async def __call__(
        self, origin: Origin, timeout: Timeout, on_release: Callable[[Any], None]
    ) -> PoolConnection:
        scheme, host, port, via = origin
        peer = origin_label(origin)
        # One connect budget for every step: DNS, TCP, the proxy's CONNECT,
        # TLS and the HTTP/2 SETTINGS.
        loop = asyncio.get_running_loop()
        deadline = None if timeout.connect is None else loop.time() + timeout.connect
        if via:
            proxy = self.proxies[via]
            route = Route._make(scheme, host, port, proxy) if via.startswith("tunnel ") else (
                Route._make("http", proxy.host, proxy.port, proxy)
            )
            transport, stream = await self._through_proxy(route, peer, timeout, deadline)
            ctx = self._ssl_context if route.is_tunnel else None
            # Forwarding: the proxy's credential goes with every request on
            # this connection (a tunnel sent it once, on CONNECT).
            proxy_fields = route.proxy_headers
        else:
            ctx = self._ssl_context if scheme == "https" else None
            proxy_fields = ()
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
                if not self.http2:
                    # ALPN is set per context: a context shared with a client
                    # that has http2=True offers h2 for this one too.
                    raise TLSError(
                        f"{peer} chose HTTP/2 by ALPN, but this client has http2=False: "
                        "its ssl_context offers h2 because it is shared with a client that "
                        "has http2=True or its ALPN protocols were set by the caller; give "
                        "each client its own ssl_context"
                    )
                from .http2 import HTTP2Connection

                conn = HTTP2Connection(origin, stream, on_release)
                await conn.start(timeout, _left(loop, deadline))
                return conn
            return HTTP11Connection(origin, stream, on_release, proxy_fields)
        except BaseException:
            stream.close()
            raise

    async def _through_proxy(
        self, route: Route, peer: str, timeout: Timeout, deadline: float | None
    ) -> tuple[asyncio.Transport, SocketStream]:
        proxy = route.proxy
        assert proxy is not None
        label = proxy.redacted()
        loop = asyncio.get_running_loop()
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
        except (ConnectError, ConnectTimeout, TLSError, DNSError) as exc:
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
            try:
                await self._connect(route, stream, label, loop, deadline)
            except TimeoutException:
                raise ProxyError(
                    f"proxy {label} did not complete the CONNECT exchange within the "
                    f"connect timeout ({timeout.connect or 0:.3g}s)"
                ) from None
            except ProxyError:
                raise
            except TransportError as exc:
                raise ProxyError(
                    f"connection to proxy {label} failed during CONNECT "
                    f"({type(exc).__name__}): {str(exc).rpartition(': ')[2]}"
                ) from None
            assert self._ssl_context is not None
            tls = await start_tls(
                transport, stream, self._ssl_context, route.host, timeout=_left(loop, deadline)
            )
        except BaseException:
            stream.close()
            raise
        stream.transport = tls
        stream.peer = peer
        return tls, stream

    @staticmethod
    async def _connect(
        route: Route,
        stream: SocketStream,
        label: str,
        loop: asyncio.AbstractEventLoop,
        deadline: float | None,
    ) -> None:
        """Send CONNECT and read the proxy's answer through its 2xx head;
        1xx heads before it are skipped (RFC 9110 15.2)."""
        proxy = route.proxy
        stream.write(route.connect_request())
        await stream.drain(_left(loop, deadline))
        head = b""
        while True:
            reply = parse_connect_response(head, proxy=proxy) if head else None
            if reply is None:
                data = await stream.read(_left(loop, deadline))
                if not data:
                    raise ProxyError(f"proxy {label} closed the connection during CONNECT")
                head += data
                continue
            if 100 <= reply.status < 200 and reply.status != 101:
                head = reply.leftover  # an interim answer: the final one follows
                continue
            break
        if not 200 <= reply.status < 300:
            assert proxy is not None
            raise connect_error(reply.status, reply.reason, proxy)
        if reply.leftover:
            # The origin cannot speak before our TLS ClientHello, so these
            # bytes are the proxy's (or anyone's on a cleartext hop to it):
            # never to be read as the origin's authenticated answer.
            raise ProxyError(
                f"proxy {label} sent {len(reply.leftover)} bytes after its "
                f"{reply.status} answer to CONNECT, before the TLS handshake; they "
                "cannot come from the origin, so the tunnel was refused"
            )


def _left(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    """Seconds left of a connect budget (None: unbounded)."""
    return None if deadline is None else max(deadline - loop.time(), 0.0)
