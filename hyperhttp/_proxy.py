"""Proxy configuration and routing decisions (pure: no sockets, no loop).

The connection layer asks `ProxyConfig.route_for(url)` once per request and
gets a `Route` saying what to do; this module never opens anything.

    Target    Proxy     Route.kind  What the connection layer does
    http://   (none)    direct      dial the origin
    http://   http://   forward     dial the proxy, absolute-form HTTP/1.1 requests
    http://   https://  forward     dial the proxy, TLS to it, absolute-form HTTP/1.1
    https://  http://   tunnel      dial the proxy, CONNECT, TLS to origin (ALPN)
    https://  https://  tunnel      dial the proxy, TLS to it, CONNECT, TLS to origin

Decisions a user may need to know (the user documentation states the rest):

* A proxy URL without a port uses its scheme's default (80 for http://,
  443 for https://), as Python clients do; curl's 1080 is not used.
* A proxy URL without a scheme (`proxy.corp:3128`) means http://, as curl
  reads it. Only http:// and https:// proxies exist here; `socks*://` and
  any other scheme raise `InvalidURL` when the client is built.
* Explicit `proxies=` replaces the environment entirely, NO_PROXY included,
  so what the code says is what happens; a `"no_proxy"` key in the dict
  gives bypass rules of its own. `trust_env=False` ignores the environment.
* Of `http_proxy` and `HTTP_PROXY` (and likewise for the others) the
  lower-case one wins when both are set, as in curl; an empty value counts
  as unset. When `REQUEST_METHOD` is set (a CGI script) both spellings of
  HTTP_PROXY are ignored: a client can set it with a `Proxy:` request header
  ("httpoxy"), and on platforms whose environment ignores case the
  lower-case spelling is no safer. Python's urllib does the same.
* NO_PROXY: `corp` matches `corp` and every name under it; `.corp` and
  `*.corp` match only names under it (not `corp`). IPv4/IPv6 literals and
  CIDR ranges match IP-literal hosts only; names are never resolved. An IPv6
  entry with a port must be bracketed (`[::1]:8080`). CIDR entries take no
  port. `*` anywhere in the list disables proxying. Entries that cannot be
  read are skipped with one warning each.
* Credentials in a proxy URL become `Proxy-Authorization: Basic ...`: on
  every forwarded request, and on the CONNECT request only for tunnels.
  `repr()`/`str()` of a proxy and every error message hide the password;
  a username given without a password is hidden too (it is then usually a
  token).
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias

from ._exceptions import InvalidURL, LocalProtocolError, ProxyError
from ._noproxy import NoProxy, _ip_or_none, _unbracket
from ._urls import URL, redacted_userinfo

__all__ = [
    "ConnectResponse",
    "NoProxy",
    "Proxy",
    "ProxyConfig",
    "Route",
    "absolute_form",
    "build_connect_request",
    "connect_error",
    "parse_connect_response",
    "routing",
]

_log = logging.getLogger("hyperhttp.proxy")

_PROXY_SCHEMES = frozenset({"http", "https"})
_SOCKS_SCHEMES = frozenset({"socks", "socks4", "socks4a", "socks5", "socks5h"})
_HOST_RE = re.compile(r"[A-Za-z0-9._-]+")
_TOKEN_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_STATUS_LINE_RE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_DEFAULT_MAX_HEAD = 64 * 1024



# --- Proxy ------------------------------------------------------------------
class Proxy:
    """One HTTP or HTTPS proxy: where it is and the credentials it wants.

    `Proxy("http://user:pass@proxy.corp:3128")`. The password never shows in
    `repr()` or `str()`. Equal proxies (same place, same credentials) may
    share connections.
    """

    __slots__ = ("_auth_header", "_display", "_url")

    _url: URL
    _auth_header: str | None
    _display: str

    def __init__(self, url: str | URL) -> None:
        text = url if isinstance(url, str) else str(url)
        if "://" not in text.strip():
            text = "http://" + text.strip()  # `proxy.corp:3128`, as curl reads it
        parsed = URL(text)
        scheme = parsed.scheme
        if scheme in _SOCKS_SCHEMES:
            raise InvalidURL(
                f"SOCKS proxies are not supported ({_redact(parsed)}); use an http:// or "
                "https:// proxy"
            )
        if scheme not in _PROXY_SCHEMES:
            raise InvalidURL(
                f"unsupported proxy scheme {scheme!r} in {_redact(parsed)}; "
                "use http:// or https://"
            )
        if not parsed.host:
            raise InvalidURL(f"proxy URL has no host: {_redact(parsed)}")
        if parsed.path != "/" or parsed.query or parsed.fragment:
            # An "@" past the host means a "/", "?" or "#" in the password
            # ended the authority early: its start is then in the "host" or
            # "port", so nothing of the URL is shown.
            tail = f"{parsed.path}?{parsed.query or ''}#{parsed.fragment or ''}"
            shown = "" if "@" in tail else f": {_redact(parsed)}"
            raise InvalidURL(
                f"proxy URL must not have a path, query or fragment{shown} (percent-encode "
                "'/', '?', '#' and '@' in a proxy user name or password)"
            )
        port = parsed.port
        if port is None or not 0 < port < 65536:
            raise InvalidURL(f"invalid port in proxy URL {_redact(parsed)}")
        host = parsed.host
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        object.__setattr__(self, "_url", URL(f"{scheme}://{hostport}"))
        object.__setattr__(self, "_auth_header", _basic_auth(parsed))
        shown = redacted_userinfo(parsed.username, parsed.password)
        object.__setattr__(self, "_display", f"{scheme}://{shown}{hostport}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Proxy is immutable")

    @property
    def url(self) -> URL:
        """The proxy's URL without credentials, port always explicit."""
        return self._url

    @property
    def scheme(self) -> Literal["http", "https"]:
        return "https" if self._url.scheme == "https" else "http"

    @property
    def host(self) -> str:
        """Host name or IP address (IPv6 without brackets)."""
        return self._url.host

    @property
    def port(self) -> int:
        port = self._url.port
        assert port is not None  # set explicitly in __init__
        return port

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port) of the proxy itself."""
        return (self.scheme, self.host, self.port)

    @property
    def auth_header(self) -> str | None:
        """The `Proxy-Authorization` value, or None without credentials."""
        return self._auth_header

    @property
    def has_credentials(self) -> bool:
        return self._auth_header is not None

    def redacted(self) -> str:
        """The proxy as text for logs and messages: no password."""
        return self._display

    def __str__(self) -> str:
        return self._display

    def __repr__(self) -> str:
        return f"Proxy({self._display!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Proxy):
            return NotImplemented
        return self._url == other._url and self._auth_header == other._auth_header

    def __hash__(self) -> int:
        return hash((str(self._url), self._auth_header))


ProxiesArg: TypeAlias = (
    str | URL | Proxy | Mapping[str, str | URL | Proxy | Sequence[str] | None] | None
)
"""What the client's `proxies=` accepts."""


def _redact(url: URL) -> str:
    return f"{url.scheme}://{redacted_userinfo(url.username, url.password)}{url.netloc}"


def _basic_auth(url: URL) -> str | None:
    user, password = url.username or "", url.password or ""
    if not user and not password:
        return None
    if ":" in user:
        raise InvalidURL("a proxy user name may not contain ':' (Basic authentication)")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


# --- configuration ------------------------------------------------------------
class ProxyConfig:
    """Which proxy, if any, each request goes through. Built once per client;
    `route_for()` is cheap and cached per (scheme, host, port)."""

    __slots__ = ("_cache", "_http", "_https", "_no_proxy")

    _CACHE_SIZE = 1024

    def __init__(
        self,
        *,
        http: Proxy | None = None,
        https: Proxy | None = None,
        no_proxy: NoProxy | None = None,
    ) -> None:
        self._http = http
        self._https = https
        self._no_proxy = no_proxy if no_proxy is not None else NoProxy()
        self._cache: dict[tuple[str, str, int], Route] = {}

    @classmethod
    def from_client_args(
        cls,
        proxies: ProxiesArg,
        *,
        trust_env: bool,
        environ: Mapping[str, str] = os.environ,
        logger: logging.Logger = _log,
    ) -> ProxyConfig:
        """The client's `proxies=` and `trust_env=` made into a config.

        `proxies` is one URL (for both schemes) or a dict with keys "http",
        "https", "all" (fallback) and "no_proxy"; a None value sends that
        scheme direct, and a missing key too. Given explicitly, it replaces
        the environment entirely. Raises `InvalidURL` for an unusable URL
        (SOCKS included) and `ValueError` for an unknown dict key.
        """
        if proxies is None:
            return cls.from_environ(environ, logger=logger) if trust_env else cls()
        if isinstance(proxies, str | URL | Proxy):
            proxy = _as_proxy(proxies, "proxies")
            return cls(http=proxy, https=proxy)
        unknown = sorted(set(proxies) - {"http", "https", "all", "no_proxy"})
        if unknown:
            raise ValueError(
                f"unknown proxies key(s) {unknown}; use 'http', 'https', 'all' or 'no_proxy'"
            )
        fallback = _dict_proxy(proxies, "all")
        return cls(
            http=_dict_proxy(proxies, "http") if "http" in proxies else fallback,
            https=_dict_proxy(proxies, "https") if "https" in proxies else fallback,
            no_proxy=NoProxy.parse(_no_proxy_arg(proxies.get("no_proxy")), logger=logger),
        )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] = os.environ, *, logger: logging.Logger = _log
    ) -> ProxyConfig:
        """Read HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY (either case)."""
        http_var = _env(environ, "http_proxy")
        if http_var is not None and "REQUEST_METHOD" in environ:
            logger.warning("ignoring %s: REQUEST_METHOD is set (CGI, httpoxy)", http_var[0])
            http_var = None
        all_var = _env(environ, "all_proxy")
        https_var = _env(environ, "https_proxy")
        no_proxy_var = _env(environ, "no_proxy")
        return cls(
            http=_env_proxy(http_var or all_var),
            https=_env_proxy(https_var or all_var),
            no_proxy=NoProxy.parse(no_proxy_var[1] if no_proxy_var else None, logger=logger),
        )

    @property
    def http(self) -> Proxy | None:
        """The proxy for http:// targets."""
        return self._http

    @property
    def https(self) -> Proxy | None:
        """The proxy for https:// targets."""
        return self._https

    @property
    def no_proxy(self) -> NoProxy:
        return self._no_proxy

    @property
    def is_direct(self) -> bool:
        """True when no request can go through a proxy."""
        return (self._http is None and self._https is None) or self._no_proxy.matches_all

    def proxy_for(self, url: URL) -> Proxy | None:
        """The proxy a request to `url` goes through, or None for direct."""
        return self.route_for(url).proxy

    def route_for(self, url: URL) -> Route:
        """What the connection layer must do to reach `url`."""
        scheme, host, port = url.scheme, url.host, url.port or 0
        key = (scheme, host, port)
        route = self._cache.get(key)
        if route is None:
            proxy = self._https if scheme == "https" else self._http if scheme == "http" else None
            if proxy is not None and self._no_proxy and self._no_proxy.matches(host, port):
                proxy = None
            route = Route._make(scheme, host, port, proxy)
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.clear()  # bounded; a client rarely talks to this many origins
            self._cache[key] = route
        return route

    def __repr__(self) -> str:
        return f"ProxyConfig(http={self._http!r}, https={self._https!r}, no_proxy={self._no_proxy!r})"


def _as_proxy(value: object, where: str) -> Proxy:
    if isinstance(value, Proxy):
        return value
    if isinstance(value, str | URL):
        return Proxy(value)
    raise TypeError(f"{where} must be a URL string, URL, Proxy or None, not {type(value).__name__}")


def _dict_proxy(proxies: Mapping[str, object], key: str) -> Proxy | None:
    value = proxies.get(key)
    return None if value is None else _as_proxy(value, f"proxies[{key!r}]")


def _no_proxy_arg(value: object) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    raise TypeError("proxies['no_proxy'] must be a string or a list of strings")


def _env(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(variable, value) of the first non-empty of `name`, `NAME`."""
    for var in (name, name.upper()):
        value = environ.get(var, "").strip()
        if value:
            return var, value
    return None


def _env_proxy(var: tuple[str, str] | None) -> Proxy | None:
    if var is None:
        return None
    try:
        return Proxy(var[1])
    except InvalidURL as exc:
        raise InvalidURL(f"environment variable {var[0]}: {exc} (or set trust_env=False)") from None


# --- routes -------------------------------------------------------------------
RouteKind = Literal["direct", "forward", "tunnel"]


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach one origin: `direct`, `forward` (absolute-form requests
    to the proxy, always HTTP/1.1) or `tunnel` (CONNECT, then TLS to the
    origin with ALPN). `proxy_tls`: TLS to the proxy first."""

    kind: RouteKind
    scheme: str
    host: str
    port: int
    proxy: Proxy | None

    @classmethod
    def _make(cls, scheme: str, host: str, port: int, proxy: Proxy | None) -> Route:
        if proxy is None:
            return cls("direct", scheme, host, port, None)
        if scheme == "http":
            return cls("forward", scheme, host, port, proxy)
        if scheme == "https":
            return cls("tunnel", scheme, host, port, proxy)
        raise InvalidURL(f"cannot send a {scheme}:// request through a proxy")

    @property
    def is_direct(self) -> bool:
        return self.kind == "direct"

    @property
    def is_forward(self) -> bool:
        return self.kind == "forward"

    @property
    def is_tunnel(self) -> bool:
        return self.kind == "tunnel"

    @property
    def proxy_tls(self) -> bool:
        """TLS to the proxy before anything else (an https:// proxy)."""
        return self.proxy is not None and self.proxy.scheme == "https"

    @property
    def origin_tls(self) -> bool:
        """TLS to the origin (direct or inside the tunnel)."""
        return self.scheme == "https" and self.kind != "forward"

    @property
    def allows_http2(self) -> bool:
        """HTTP/2 may be negotiated (by ALPN with the origin); never when forwarding."""
        return self.origin_tls

    @property
    def dial_address(self) -> tuple[str, int]:
        """Where the TCP connection goes: the proxy, or the origin when direct."""
        if self.proxy is not None:
            return (self.proxy.host, self.proxy.port)
        return (self.host, self.port)

    @property
    def pool_key(self) -> tuple[object, ...]:
        """Connections with equal keys are interchangeable. A forwarding
        connection serves every http:// origin behind the same proxy."""
        if self.kind == "direct":
            return ("direct", self.scheme, self.host, self.port)
        if self.kind == "forward":
            return ("forward", self.proxy)
        return ("tunnel", self.proxy, self.scheme, self.host, self.port)

    @property
    def proxy_headers(self) -> tuple[tuple[str, str], ...]:
        """Headers to add to each request: `Proxy-Authorization` when
        forwarding with credentials; nothing otherwise (a tunnel sends it on
        the CONNECT request only)."""
        if self.kind == "forward" and self.proxy is not None and self.proxy.auth_header:
            return (("Proxy-Authorization", self.proxy.auth_header),)
        return ()

    def request_target(self, url: URL) -> str:
        """The request-target to send: absolute-form when forwarding."""
        return absolute_form(url) if self.kind == "forward" else url.target

    def connect_request(self, extra_headers: Sequence[tuple[str, str]] = ()) -> bytes:
        """The CONNECT request head for a tunnel route."""
        if self.kind != "tunnel":
            raise LocalProtocolError(f"a {self.kind} route sends no CONNECT request")
        return build_connect_request(self.host, self.port, self.proxy, extra_headers=extra_headers)

    def __repr__(self) -> str:
        via = f" via {self.proxy.redacted()}" if self.proxy is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"<Route {self.kind} {self.scheme}://{host}:{self.port}{via}>"


def routing(url: URL, proxy: Proxy | None) -> Route:
    """The route to `url` through `proxy` (None: direct)."""
    return Route._make(url.scheme, url.host, url.port or 0, proxy)


def absolute_form(url: URL) -> str:
    """`http://host[:port]/path?query`: no credentials, no fragment."""
    return f"{url.scheme}://{url.netloc}{url.target}"


# --- CONNECT ------------------------------------------------------------------
def build_connect_request(
    target_host: str,
    target_port: int,
    proxy: Proxy | None,
    *,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """`CONNECT host:port HTTP/1.1` with `Host` and, when the proxy has
    credentials, `Proxy-Authorization`. Raises `LocalProtocolError` for a
    host, port or header that cannot go on the wire."""
    host = _unbracket(target_host)
    if ":" in host:
        host = host.split("%", 1)[0]  # a zone names our interface: nothing for the proxy
        if _ip_or_none(host) is None:
            raise LocalProtocolError(f"invalid CONNECT target host {target_host!r}")
        host = f"[{host}]"
    elif not _HOST_RE.fullmatch(host):
        raise LocalProtocolError(f"invalid CONNECT target host {target_host!r}")
    if isinstance(target_port, bool) or not isinstance(target_port, int) or not (
        0 < target_port < 65536
    ):
        raise LocalProtocolError(f"invalid CONNECT target port {target_port!r}")
    authority = f"{host}:{target_port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy is not None and proxy.auth_header:
        lines.append(f"Proxy-Authorization: {proxy.auth_header}")
    for name, value in extra_headers:
        raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
        if not _TOKEN_RE.fullmatch(raw_name) or not _FIELD_VALUE_RE.fullmatch(raw_value):
            raise LocalProtocolError(f"invalid header for CONNECT: {name!r}")
        lines.append(f"{name}: {value.strip()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ConnectResponse(NamedTuple):
    """The head of the proxy's answer to CONNECT. After a 2xx, `leftover`
    holds bytes that already belong to the tunnel."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    leftover: bytes


def parse_connect_response(
    data: bytes, *, proxy: Proxy | None = None, max_head_size: int = _DEFAULT_MAX_HEAD
) -> ConnectResponse | None:
    """Parse the response head to CONNECT; None while it is incomplete.

    Strict: CRLF line ends, HTTP/1.0 or 1.1, a three-digit status, token
    header names, no folded lines. Anything else, or a head larger than
    `max_head_size`, raises `ProxyError`. The caller turns a non-2xx status
    into `connect_error()`.
    """
    if data[:5] != b"HTTP/"[: len(data)]:
        raise _malformed(proxy, "it is not an HTTP response")
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > max_head_size:
        if len(data) > max_head_size:
            raise _malformed(proxy, f"the response head is larger than {max_head_size} bytes")
        return None
    lines = data[:end].split(b"\r\n")
    match = _STATUS_LINE_RE.fullmatch(lines[0])
    if match is None:
        raise _malformed(proxy, "bad status line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN_RE.fullmatch(name):
            raise _malformed(proxy, "bad header line")
        value = value.strip(b" \t")
        if not _FIELD_VALUE_RE.fullmatch(value):
            raise _malformed(proxy, "bad header value")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    reason = (match.group(2) or b"").decode("latin-1")
    return ConnectResponse(int(match.group(1)), reason, headers, data[end + 4 :])


def _malformed(proxy: Proxy | None, why: str) -> ProxyError:
    where = f"proxy {proxy.redacted()}" if proxy is not None else "the proxy"
    return ProxyError(f"malformed response to CONNECT from {where}: {why}")


def connect_error(status: int, reason: str, proxy: Proxy) -> ProxyError:
    """The error for a proxy that refused a CONNECT: names the proxy
    (without its password), never the origin or the credentials."""
    safe_reason = "".join(c for c in reason if " " <= c <= "~")[:100].strip()
    shown = f"{status} {safe_reason}".strip()
    if status == 407:
        hint = (
            "the proxy rejected the credentials in the proxy URL"
            if proxy.has_credentials
            else "no credentials were given; put them in the proxy URL "
            "(http://user:password@host:port)"
        )
        message = f"proxy authentication required by proxy {proxy.redacted()} ({shown}): {hint}"
    else:
        message = f"proxy {proxy.redacted()} refused the CONNECT tunnel: {shown}"
    return ProxyError(message, status_code=status)
