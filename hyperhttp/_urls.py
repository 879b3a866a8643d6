"""URLs: parsing, normalising, joining and query parameters.

A `URL` is an immutable value. Parsing is strict where a lax parser would
let a request go somewhere other than where it looks like it goes: control
characters, whitespace, bad ports, empty hosts and text after an IPv6
literal are refused with `InvalidURL`. Host names are lower-cased, and
international ones encoded as browsers do (IDNA 2008 with UTS #46
mapping); an IPv6 zone (`[fe80::1%25eth0]`, RFC 6874) is kept for
connecting and left out of the Host header. Paths and queries are
percent-encoded where they hold characters that may not go on the wire (a
`%` not followed by two hex digits becomes `%25`), and the dot segments of
an absolute URL's path are resolved (RFC 3986 section 5.2.4), so what is
sent is what `URL.join` would give.

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
_HOST_FORBIDDEN = " /\\@?#[]<>^|{}\"`%"
_BARE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Text made only of characters quote() keeps and without '%': the common
# case, which then needs no quote() (about three times the cost of the match).
_is_plain_path = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*").fullmatch
_is_plain_query = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*").fullmatch
# RFC 6874 writes a zone as unreserved characters or percent-escapes; decoded,
# interface names and numbers need no more than the unreserved ones.
_ZONE = re.compile(r"[A-Za-z0-9._~-]+")

PrimitiveValue: TypeAlias = str | bytes | int | float | bool | None
QueryParams: TypeAlias = (
    Mapping[str, PrimitiveValue | Sequence[PrimitiveValue]]
    | Sequence[tuple[str, PrimitiveValue]]
    | str
    | bytes
)


def _param_str(key: str | bytes, value: object) -> str | bytes:
    """A query (or form) value as text; bytes stay bytes, which urlencode
    percent-encodes as they are (UTF-8 text comes out as if decoded)."""
    if isinstance(value, str | bytes):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    # Anything else would go out as its repr ("b'..'", "{'a': 1}").
    raise TypeError(
        f"query parameter {key!r} has a value of type {type(value).__name__}; "
        "give str, bytes, int, float, bool, None or a list of those"
    )


def _quote_query(query: str | bytes) -> str:
    """`query` made fit for the request line: what may not go there is
    percent-encoded, escapes already written are kept."""
    if isinstance(query, str) and _is_plain_query(query):
        return query
    quoted = quote(query, safe=_QUERY_SAFE)
    return _BARE_PERCENT.sub("%25", quoted) if "%" in quoted else quoted


def encode_params(params: QueryParams | None) -> str:
    """Render `params` as a query string (no leading '?').

    A str or bytes is a query written out already: it is percent-encoded
    like a URL's own query. Mapping and pair values are checked (see
    `_param_str`) and form-encoded.
    """
    if not params:
        return ""
    if isinstance(params, bytes):
        return _quote_query(params.lstrip(b"?"))
    if isinstance(params, str):
        return _quote_query(params.lstrip("?"))
    pairs: list[tuple[str | bytes, str | bytes]] = []
    items: Iterable[tuple[Any, Any]]
    items = params.items() if isinstance(params, Mapping) else params
    for raw_key, value in items:
        key = raw_key if isinstance(raw_key, bytes) else str(raw_key)
        if isinstance(value, list | tuple):
            pairs.extend((key, _param_str(key, v)) for v in value)
        else:
            pairs.append((key, _param_str(key, value)))
    return urlencode(pairs)


def _encode_host(host: str) -> str:
    """The host as kept: lower-case ASCII, or an IPv6 address without
    brackets and with any zone decoded (`fe80::1%eth0`)."""
    if not host:
        return host
    if host.startswith("[") and host.endswith("]"):
        return _encode_ipv6(host[1:-1])
    if host.isascii():
        host = host.lower()
        if any(c in host for c in _HOST_FORBIDDEN):
            raise InvalidURL(f"invalid character in host {host!r}")
        return host
    return _encode_idna(host)


def _encode_ipv6(inner: str) -> str:
    address, percent, zone = inner.partition("%")
    try:
        text = str(ipaddress.IPv6Address(address))
    except ValueError:
        raise InvalidURL(f"invalid IPv6 address in URL: {'[' + inner + ']'!r}") from None
    if not percent:
        return text
    # RFC 6874: in a URL the zone follows "%25" (an escaped "%"). A bare "%"
    # (how the address is written outside URLs) is taken too when what
    # follows cannot be read as "%25".
    zone = unquote(zone[2:]) if zone.startswith("25") else zone
    if not _ZONE.fullmatch(zone):
        raise InvalidURL(f"invalid IPv6 zone in URL: {'[' + inner + ']'!r}")
    return f"{text}%{zone}"


def _encode_idna(host: str) -> str:
    # IDNA 2008 with UTS #46 mapping, as browsers, curl and httpx encode
    # names: Python's "idna" codec (IDNA 2003) maps "faß.de" to "fass.de",
    # another domain. Imported here so ASCII-only programs never load it.
    import idna

    try:
        encoded = idna.encode(host, uts46=True).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError is one
        raise InvalidURL(f"invalid international host name {host!r}: {exc}") from None
    if any(c in encoded for c in _HOST_FORBIDDEN):  # UTS #46 maps some to ASCII
        raise InvalidURL(f"invalid character in host {host!r}")
    return encoded


def remove_dot_segments(path: str) -> str:
    """`path` (absolute: it starts with "/") without "." and ".." segments,
    as RFC 3986 section 5.2.4 resolves them; ".." never climbs above "/"."""
    segments = path.split("/")
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if len(out) > 1:  # out[0] is the "" before the leading "/"
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/.." is the directory "/"
    return "/".join(out)


def _clean_path(path: str, has_host: bool) -> str:
    """`path` percent-encoded for the request line; in a URL with a host,
    with a leading "/" and its dot segments resolved (a relative URL keeps
    them until it is joined to a base)."""
    if (
        isinstance(path, str)
        and _is_plain_path(path)
        and "/." not in path
        and (path[:1] == "/" or not has_host or not path)
    ):
        return path
    quoted = quote(path, safe=_PATH_SAFE)
    if "%" in quoted:
        quoted = _BARE_PERCENT.sub("%25", quoted)
    if has_host and quoted:
        if not quoted.startswith("/"):
            quoted = "/" + quoted
        if "/." in quoted:
            quoted = remove_dot_segments(quoted)
    return quoted


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


def scheme_without_host_error(url: URL) -> InvalidURL:
    """The error for a request URL with a scheme but no host. urlsplit takes
    whatever comes before the first ':' for a scheme: "users:123/profile"
    and "localhost:8080/x" have one, and so has "user:pw@host/x", whose
    password this message hides like every other."""
    text = url.redacted()
    cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=len(text))
    at = text.rfind("@", 0, cut)
    if at < 0:
        shown, scheme = text, f" {url.scheme!r}"
    else:  # the "scheme" may be a user name, and what follows its ':' a secret
        name, _, secret = text[:at].partition(":")
        shown, scheme = redacted_userinfo(name, secret) + text[at + 1 :], ""
    return InvalidURL(
        f"URL {shown!r} has a scheme{scheme} and no host; only http and https "
        f"URLs can be sent. For a path under base_url that holds ':', write "
        f"'./{shown}'; for a host, write 'http://{shown}'"
    )


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
            host, bracket, rest = netloc_host.partition("]")
            host += bracket
            # urlsplit reads "[::1].evil.example" as host "::1": only a port
            # may follow the literal (RFC 3986 section 3.2.2).
            if rest and not rest.startswith(":"):
                raise InvalidURL(
                    f"unexpected text after the IPv6 address in URL: {netloc_host!r}"
                )
        else:
            host = netloc_host.rsplit(":", 1)[0] if ":" in netloc_host else netloc_host
        self._host = _encode_host(host)
        self._port = port
        self._path = _clean_path(parts.path, bool(self._host))
        self._query = _quote_query(parts.query)
        self._fragment = parts.fragment
        if (
            self._scheme in DEFAULT_PORTS
            and not self._host
            and stripped[: len(self._scheme) + 1].lower() == self._scheme + ":"
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
        """`host[:port]` for the Host header: the default port is left out,
        and so is an IPv6 zone, which means nothing off this machine
        (RFC 6874 section 4)."""
        host = self._host
        if ":" in host:
            host = f"[{host.partition('%')[0]}]"
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
                new._path = value  # cleaned below, once the host is known
            elif key == "query":
                new._query = _quote_query(value)
            elif key in ("scheme", "username", "password", "port", "fragment"):
                setattr(new, "_" + key, value.lower() if key == "scheme" else value)
            else:
                raise TypeError(f"copy_with() got an unexpected argument {key!r}")
        if "path" in changes or "host" in changes:
            new._path = _clean_path(new._path, bool(new._host))
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
            if ":" in host:  # IPv6; a zone is written "%25" + zone (RFC 6874)
                host = "[" + host.replace("%", "%25") + "]"
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
