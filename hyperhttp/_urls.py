"""URLs: parsing, normalising, joining and query parameters.

A `URL` is an immutable value. Parsing is strict where a lax parser would
let a request go somewhere other than where it looks like it goes: control
characters, whitespace, bad ports and empty hosts are refused with
`InvalidURL`. Host names are lower-cased and IDNA-encoded; paths and queries
are percent-encoded where they hold characters that may not go on the wire.

`str(url)` is the full URL. `repr(url)` and `url.redacted()` hide the
password, and are what error messages use.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

from ._exceptions import InvalidURL

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = "/?%:@!$&'()*+,;=-._~"
_FORBIDDEN = frozenset([chr(i) for i in range(0x20)] + ["\x7f"])
# A reference with `//` but no host after it (`http://`, `//`, `http:///x`,
# `//:80/`), read after the clean-up urlsplit does (leading C0 controls and
# spaces, and any tab or newline, removed).
_EMPTY_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//(?:[^/?#]*@)?(?::[^/?#]*)?(?:[/?#]|$)")
_C0_OR_SPACE = "".join(chr(i) for i in range(0x21))
_URLSPLIT_DROPS = str.maketrans("", "", "\t\r\n")

PrimitiveValue: TypeAlias = str | int | float | bool | None
QueryParams: TypeAlias = (
    Mapping[str, PrimitiveValue | Sequence[PrimitiveValue]]
    | Sequence[tuple[str, PrimitiveValue]]
    | str
    | bytes
)


def _param_str(value: PrimitiveValue) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    return str(value)


def encode_params(params: QueryParams | None) -> str:
    """Render `params` as a query string (no leading '?')."""
    if not params:
        return ""
    if isinstance(params, bytes):
        return params.decode("ascii")
    if isinstance(params, str):
        return params.lstrip("?")
    pairs: list[tuple[str, str]] = []
    items: Iterable[tuple[str, Any]]
    items = params.items() if isinstance(params, Mapping) else params
    value: Any
    for key, value in items:
        if isinstance(value, list | tuple):
            pairs.extend((str(key), _param_str(v)) for v in value)
        else:
            pairs.append((str(key), _param_str(value)))
    return urlencode(pairs)


def _encode_host(host: str) -> str:
    if not host:
        return host
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        try:
            return str(ipaddress.IPv6Address(inner.split("%", 1)[0])) + (
                "%" + inner.split("%", 1)[1] if "%" in inner else ""
            )
        except ValueError:
            raise InvalidURL(f"invalid IPv6 address in URL: {host!r}") from None
    host = host.lower()
    if host.isascii():
        if any(c in host for c in " /\\@?#[]<>^|{}\"`%"):
            raise InvalidURL(f"invalid character in host {host!r}")
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidURL(f"invalid international host name {host!r}") from None


# Parsing (urlsplit, IDNA, quoting) costs tens of microseconds and services
# ask for the same URLs over and over: remember the parts of recent strings.
# URLs never change once made (every "change" is a copy), so the cached
# objects themselves can be handed out by `shared_url`.
_PARSED: dict[str, URL] = {}
_PARSED_MAX = 1024


def redacted_userinfo(username: str | None, password: str | None) -> str:
    """The userinfo part (with its "@") as messages and reprs show it: a
    password becomes `[secure]`, and so does a user name that comes without
    one, as `https://TOKEN@host/` and `https://TOKEN:@host/` carry tokens."""
    if password:
        return quote(username or "", safe="") + ":[secure]@"
    if username or password is not None:
        return "[secure]@"
    return ""


def _split_failure(exc: ValueError) -> str:
    """What urllib could not parse, without the text it quotes: a password
    holding "/", "?" or "#" ends the authority early, and its rest is then
    read, and quoted, as the port."""
    text = str(exc)
    if "Port" in text:
        return (
            "invalid port in URL; if the URL carries a password, percent-encode "
            "any '/', '?', '#' or '@' in it"
        )
    if "IPv6" in text:
        return "invalid IPv6 address in URL (unbalanced brackets)"
    return "invalid URL: the part between '//' and the path cannot be parsed"


def shared_url(url: str) -> URL:
    """The URL for `url`, possibly an object other callers hold too (URLs
    are immutable): no copy on the hot path."""
    cached = _PARSED.get(url)
    return cached if cached is not None else URL(url)


class URL:
    """An absolute or relative URL."""

    __slots__ = ("_fragment", "_host", "_password", "_path", "_port", "_query",
                 "_scheme", "_username", "_wire")

    _scheme: str
    _username: str | None
    _password: str | None
    _host: str
    _port: int | None
    _path: str
    _query: str
    _fragment: str
    _wire: tuple[tuple[str, str, int, str], str, str]

    def __init__(self, url: str | URL = "", *, params: QueryParams | None = None) -> None:
        if isinstance(url, URL):
            self._copy_parts(url)
        else:
            if not isinstance(url, str):
                raise TypeError(f"URL must be str or URL, not {type(url).__name__}")
            parsed = _PARSED.get(url)
            if parsed is None:
                self._parse(url)
                if params or type(self) is not URL:
                    URL(url)  # caches a plain URL of its own
                elif self._username is None and self._password is None:
                    # A URL with credentials is not kept process-wide.
                    if len(_PARSED) >= _PARSED_MAX:
                        _PARSED.pop(next(iter(_PARSED)))
                    _PARSED[url] = self
            else:
                self._copy_parts(parsed)
        if params:
            extra = encode_params(params)
            if extra:
                self._query = f"{self._query}&{extra}" if self._query else extra

    def _copy_parts(self, other: URL) -> None:
        # Not `_wire`: a copy works its own out (copy_with changes the copy).
        self._scheme = other._scheme
        self._username = other._username
        self._password = other._password
        self._host = other._host
        self._port = other._port
        self._path = other._path
        self._query = other._query
        self._fragment = other._fragment

    def _parse(self, raw: str) -> None:
        stripped = raw.strip()
        if any(c in _FORBIDDEN for c in stripped):
            raise InvalidURL("URL contains a control character (CR, LF, NUL, TAB or similar)")
        try:
            parts = urlsplit(stripped)
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(_split_failure(exc)) from None
        self._scheme = parts.scheme.lower()
        self._username = unquote(parts.username) if parts.username is not None else None
        self._password = unquote(parts.password) if parts.password is not None else None
        netloc_host = parts.netloc.rpartition("@")[2]
        if netloc_host.startswith("["):
            host = netloc_host[: netloc_host.index("]") + 1] if "]" in netloc_host else netloc_host
        else:
            host = netloc_host.rsplit(":", 1)[0] if ":" in netloc_host else netloc_host
        self._host = _encode_host(host)
        self._port = port
        self._path = quote(parts.path, safe=_PATH_SAFE)
        self._query = quote(parts.query, safe=_QUERY_SAFE)
        self._fragment = parts.fragment
        if self._scheme in DEFAULT_PORTS and not self._host and stripped.startswith(
            self._scheme + ":"
        ):
            raise InvalidURL(f"URL has no host: {self.redacted()!r}")

    # --- components -----------------------------------------------------
    @property
    def scheme(self) -> str:
        return self._scheme

    @property
    def username(self) -> str | None:
        return self._username

    @property
    def password(self) -> str | None:
        return self._password

    @property
    def host(self) -> str:
        """Host name (IDNA-encoded, lower case) or IP address without brackets."""
        h = self._host
        return h[1:-1] if h.startswith("[") else h

    @property
    def port(self) -> int | None:
        """The port to connect to: explicit, else the scheme's default."""
        if self._port is not None:
            return self._port
        return DEFAULT_PORTS.get(self._scheme)

    @property
    def explicit_port(self) -> int | None:
        return self._port

    @property
    def path(self) -> str:
        return self._path or "/"

    @property
    def query(self) -> str:
        return self._query

    @property
    def fragment(self) -> str:
        return self._fragment

    @property
    def target(self) -> str:
        """Path and query as sent on the request line."""
        path = self._path or "/"
        return f"{path}?{self._query}" if self._query else path

    def wire_parts(self) -> tuple[tuple[str, str, int, str], str, str]:
        """(pool key `(scheme, host, port, "")`, request target, Host value),
        worked out once per URL object: a URL is never changed once made
        (`copy_with` changes only its own fresh copy, before any use), and
        the Client reuses the object for a string it has seen."""
        try:
            return self._wire
        except AttributeError:
            wire = ((self._scheme, self.host, self.port or 0, ""), self.target, self.netloc)
            self._wire = wire
            return wire

    @property
    def netloc(self) -> str:
        """`host[:port]` for the Host header: the default port is left out."""
        host = self._host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if self._port is not None and self._port != DEFAULT_PORTS.get(self._scheme):
            return f"{host}:{self._port}"
        return host

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): the key connections are pooled by."""
        return (self._scheme, self.host, self.port or 0)

    @property
    def is_absolute(self) -> bool:
        return bool(self._scheme) and bool(self._host)

    @property
    def is_relative(self) -> bool:
        return not self.is_absolute

    # --- derived URLs ---------------------------------------------------
    def copy_with(self, **changes: Any) -> URL:
        """A copy with some components replaced: scheme, username, password,
        host, port, path, query, fragment, params (merged into the query)."""
        new = URL(self)
        params = changes.pop("params", None)
        for key, value in changes.items():
            if key == "host":
                new._host = _encode_host(value)
            elif key == "path":
                new._path = quote(value, safe=_PATH_SAFE)
            elif key == "query":
                new._query = quote(value, safe=_QUERY_SAFE)
            elif key in ("scheme", "username", "password", "port", "fragment"):
                setattr(new, "_" + key, value.lower() if key == "scheme" else value)
            else:
                raise TypeError(f"copy_with() got an unexpected argument {key!r}")
        if params:
            extra = encode_params(params)
            new._query = f"{new._query}&{extra}" if new._query else extra
        return new

    def join(self, url: str | URL) -> URL:
        """Resolve `url` against this one, as a browser resolves a link.

        Raises `InvalidURL` when `url` cannot be parsed, or when it has `//`
        but no host after it: urljoin would quietly keep this URL's host,
        where RFC 3986 resolves to an empty host, which for http is no URL
        at all (a redirect there would loop back here).
        """
        reference = str(url)
        try:
            text = urljoin(str(self), reference)
        except ValueError as exc:  # e.g. an unbalanced "[": urlsplit's own error
            raise InvalidURL(_split_failure(exc)) from None
        joined = URL(text)
        probe = reference.lstrip(_C0_OR_SPACE).translate(_URLSPLIT_DROPS)
        if joined._scheme in DEFAULT_PORTS and _EMPTY_AUTHORITY.match(probe):
            raise InvalidURL("URL has '//' but no host after it")
        return joined

    def without_credentials(self) -> URL:
        if self._username is None and self._password is None:
            return self
        return self.copy_with(username=None, password=None)

    def redacted(self) -> str:
        """The URL as text with any password replaced by `[secure]`, and a
        user name given without a password too (it is then usually a token)."""
        return self._render(redact=True)

    def _render(self, *, redact: bool) -> str:
        out = []
        if self._scheme:
            out.append(self._scheme + ":")
        if self._host or self._scheme in DEFAULT_PORTS:
            out.append("//")
            if redact:
                out.append(redacted_userinfo(self._username, self._password))
            elif self._username is not None:
                out.append(quote(self._username, safe=""))
                if self._password is not None:
                    out.append(":" + quote(self._password, safe=""))
                out.append("@")
            host = self._host
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            out.append(host)
            if self._port is not None:
                out.append(f":{self._port}")
        out.append(self._path)
        if self._query:
            out.append("?" + self._query)
        if self._fragment:
            out.append("#" + self._fragment)
        return "".join(out)

    def __str__(self) -> str:
        return self._render(redact=False)

    def __repr__(self) -> str:
        return f"URL({self._render(redact=True)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = URL(other)
        if not isinstance(other, URL):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))
