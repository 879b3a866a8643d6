"""Authentication schemes: Basic (RFC 7617), Bearer (RFC 6750), Digest (RFC 7616).

Every scheme is an `Auth` whose `auth_flow` is a generator: it yields the
request to send and receives each response back through ``.send()``. A flow
that yields once is a one-shot scheme (Basic, Bearer); a flow that yields
again after a 401 is a challenge-response scheme (Digest). The client drives
the generator; nothing here does I/O, and Digest's randomness (the cnonce) is
injected so tests can fix it.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import quote

from ._exceptions import StreamConsumed
from ._models import Request, Response

__all__ = [
    "Auth",
    "AuthTypes",
    "BasicAuth",
    "BearerAuth",
    "DigestAuth",
    "FunctionAuth",
    "basic_auth_header",
    "build_auth",
    "parse_challenges",
]

AuthFlow = Generator[Request, Response, None]


class Auth:
    """Base class of authentication schemes.

    Subclass it and implement `auth_flow`, a generator that yields the
    request to send and receives the response back through ``.send()``::

        class ApiKeyAuth(Auth):
            def __init__(self, key: str) -> None:
                self._key = key

            def auth_flow(self, request):
                request.headers["X-API-Key"] = self._key
                yield request

    The client drives the flow one network attempt at a time: it sends what
    the flow yields, hands the response back, and stops when the generator
    returns; the last response is the caller's. Event hooks fire on every
    attempt. A flow that yields again after inspecting a response (a
    challenge-response scheme) sets ``requires_response = True``.

    ``requires_request_body``: the client reads the request body into memory
    before starting the flow. ``requires_response_body``: the client reads
    each response body before handing it to the flow.
    """

    requires_request_body: bool = False
    requires_response_body: bool = False
    requires_response: bool = False

    def auth_flow(self, request: Request) -> AuthFlow:
        """Yield requests to send; receive each one's response. Default: send as is."""
        yield request


AuthTypes: TypeAlias = (
    Auth | tuple[str | bytes, str | bytes] | Callable[[Request], Request | None] | None
)
"""What ``auth=`` accepts; `build_auth` turns it into an `Auth` or None."""


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _display(value: str | bytes) -> str:
    """A credential as text for a `repr`: bytes in any encoding, never failing."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def basic_auth_header(username: str | bytes, password: str | bytes) -> str:
    """The ``Basic ...`` credentials for an Authorization or Proxy-Authorization header.

    Text is encoded as UTF-8 (RFC 7617 section 2.1, ``charset="UTF-8"``).
    """
    userpass = _to_bytes(username) + b":" + _to_bytes(password)
    return "Basic " + base64.b64encode(userpass).decode("ascii")


class BasicAuth(Auth):
    """HTTP Basic authentication (RFC 7617), credentials encoded as UTF-8
    (bytes are sent as given).

    ``BasicAuth("alice", "s3cret")`` sends
    ``Authorization: Basic YWxpY2U6czNjcmV0`` on every request.
    """

    def __init__(self, username: str | bytes, password: str | bytes) -> None:
        if b":" in _to_bytes(username):
            # RFC 7617 section 2: the first colon separates user-id from password.
            raise ValueError("a Basic auth username cannot contain ':'")
        self.username = _display(username)
        # Built once: the header is the same for every request.
        self._header = basic_auth_header(username, password)

    def auth_flow(self, request: Request) -> AuthFlow:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=[secure])"


class BearerAuth(Auth):
    """A static bearer token (RFC 6750): ``Authorization: Bearer <token>``.

    There is no refresh handling; rotate tokens by building a new `BearerAuth`.
    """

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: Request) -> AuthFlow:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(token=[secure])"


class FunctionAuth(Auth):
    """Wraps a plain function ``func(request)`` that sets credentials on the
    request (in place, returning None, or returning the request to send)."""

    def __init__(self, func: Callable[[Request], Request | None]) -> None:
        if inspect.iscoroutinefunction(func):
            raise TypeError(
                "auth= takes a synchronous function; use an event hook for async signing"
            )
        self._func = func

    def auth_flow(self, request: Request) -> AuthFlow:
        result = self._func(request)
        yield request if result is None else result

    def __repr__(self) -> str:
        name = getattr(self._func, "__qualname__", None) or type(self._func).__name__
        return f"FunctionAuth({name})"


def build_auth(value: Any) -> Auth | None:
    """Turn what callers pass as ``auth=`` into an `Auth`, or None for no auth.

    Accepts an `Auth`, a ``(username, password)`` tuple (Basic), a callable
    taking the request, or None.
    """
    if value is None or isinstance(value, Auth):
        return value
    if isinstance(value, tuple | list):
        if len(value) != 2 or not all(isinstance(v, str | bytes) for v in value):
            raise TypeError("auth= as a tuple must be (username, password)")
        return BasicAuth(value[0], value[1])
    if callable(value):
        return FunctionAuth(value)
    raise TypeError(
        f"auth= must be an Auth, a (username, password) tuple, a callable or None; "
        f"got {type(value).__name__}"
    )


# --- WWW-Authenticate parsing (RFC 9110 section 11.6.1) ----------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Unquoted values are read leniently (base64 nonces often go unquoted).
_BARE_VALUE = re.compile(r"[^\s,\"]+")
_OWS = re.compile(r"[ \t]*")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge: the scheme (lower-cased), its parameters (names
    lower-cased, first occurrence wins) or its token68."""

    scheme: str
    params: dict[str, str]
    token68: str | None = None


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; unescape ``\\x``.

    An unterminated string runs to the end of the text.
    """
    out: list[str] = []
    i = pos + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), n


def _skip_ows(text: str, pos: int) -> int:
    m = _OWS.match(text, pos)
    return m.end() if m else pos


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Parse WWW-Authenticate header values into challenges, in order.

    Handles several challenges in one value, quoted strings with escapes,
    empty list elements and case-insensitive names. Text that fits no rule
    is skipped rather than raising: a server's oddity must not break the
    request.
    """
    challenges: list[Challenge] = []
    for text in values:
        current: Challenge | None = None
        pos, n = 0, len(text)
        while pos < n:
            c = text[pos]
            if c in ", \t":
                pos += 1
                continue
            m = _TOKEN.match(text, pos)
            if m is None:
                pos += 1  # stray character: skip it, always advancing
                continue
            name, after = m.group(), _skip_ows(text, m.end())
            if after < n and text[after] == "=":
                pos = _skip_ows(text, after + 1)
                if pos < n and text[pos] == '"':
                    value, pos = _read_quoted(text, pos)
                else:
                    vm = _BARE_VALUE.match(text, pos)
                    value, pos = (vm.group(), vm.end()) if vm else ("", pos)
                if current is not None:
                    current.params.setdefault(name.lower(), value)
                continue
            # A token not followed by "=": the scheme of a new challenge.
            current = Challenge(name.lower(), {})
            challenges.append(current)
            pos = _skip_ows(text, m.end())
            t68 = _TOKEN68.match(text, pos)
            if t68 is not None and _is_token68_end(text, pos):
                challenges[-1] = current = Challenge(current.scheme, {}, t68.group())
                pos = t68.end()
    return challenges


def _is_token68_end(text: str, pos: int) -> bool:
    """Whether a token68 starting at `pos` ends the list element (so it is
    not the name of an auth-param)."""
    m = _TOKEN68.match(text, pos)
    if m is None or "=" not in m.group():
        return False
    end = _skip_ows(text, m.end())
    return end >= len(text) or text[end] == ","


# --- Digest (RFC 7616) -------------------------------------------------------

# Canonical algorithm name -> (hashlib name, strength rank).
_DIGEST_HASHES: dict[str, tuple[str, int]] = {
    "MD5": ("md5", 1),
    "SHA-256": ("sha256", 2),
    # FIPS 180-4 SHA-512/256: its own initial hash value, not SHA-512 cut short.
    "SHA-512-256": ("sha512_256", 3),
}
if "sha512_256" not in hashlib.algorithms_available:  # pragma: no cover - OpenSSL without it
    del _DIGEST_HASHES["SHA-512-256"]

_MAX_ORIGINS = 64
_MAX_NONCES = 256
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 8187 attr-char: everything else is percent-encoded in username*.
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"


@dataclass(frozen=True, slots=True)
class _DigestChallenge:
    realm: str  # header text, echoed as it came (latin-1 decoded from the wire)
    nonce: str
    realm_raw: bytes  # the bytes the server sent: what the hashes cover
    nonce_raw: bytes
    opaque: str | None
    algorithm: str  # canonical, e.g. "SHA-256-sess"
    send_algorithm: bool  # the server named it, so we echo it
    hash_name: str
    session: bool
    qop: str | None  # "auth", or None for RFC 2069 compatibility
    userhash: bool
    stale: bool
    rank: tuple[int, int]


def _digest_challenge(challenge: Challenge) -> _DigestChallenge | None:
    """The Digest challenge we can answer, or None (unknown algorithm,
    qop without "auth", missing realm or nonce, control characters)."""
    p = challenge.params
    if challenge.scheme != "digest" or "realm" not in p or "nonce" not in p:
        return None
    if any(_CTL.search(v) for v in p.values()):
        return None
    given = p.get("algorithm")
    algorithm = (given or "MD5").upper()
    session = algorithm.endswith("-SESS")
    base = algorithm[: -len("-SESS")] if session else algorithm
    if base not in _DIGEST_HASHES:
        return None
    hash_name, strength = _DIGEST_HASHES[base]
    qop: str | None = None
    if "qop" in p:
        offered = {q.strip().lower() for q in p["qop"].split(",")}
        if "auth" not in offered:
            return None  # auth-int only: not supported, the 401 surfaces
        qop = "auth"
    return _DigestChallenge(
        realm=p["realm"],
        nonce=p["nonce"],
        realm_raw=_wire_bytes(p["realm"]),
        nonce_raw=_wire_bytes(p["nonce"]),
        opaque=p.get("opaque"),
        algorithm=base + ("-sess" if session else ""),
        send_algorithm=given is not None,
        hash_name=hash_name,
        session=session,
        qop=qop,
        userhash=p.get("userhash", "").lower() == "true",
        stale=p.get("stale", "").lower() == "true",
        rank=(strength, qop is not None),
    )


def _select_digest_challenge(response: Response) -> _DigestChallenge | None:
    """The strongest Digest challenge in a 401 we can answer: SHA-512-256 >
    SHA-256 > MD5, qop=auth over none; ties go to the server's order."""
    best: _DigestChallenge | None = None
    for raw in parse_challenges(response.headers.get_list("www-authenticate")):
        candidate = _digest_challenge(raw)
        if candidate is not None and (best is None or candidate.rank > best.rank):
            best = candidate
    return best


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wire_bytes(text: str) -> bytes:
    """The bytes `text` stands for in a header: field values are decoded from
    (and sent as) latin-1. Text beyond latin-1 can only have been written in
    code (a MockTransport response), and is read as UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _username_param(username: bytes) -> str:
    """``username="..."``, or RFC 8187 ``username*=`` when it is not plain
    ASCII: UTF-8 when the bytes are UTF-8, else ISO-8859-1, the other charset
    RFC 8187 requires (any bytes are valid in it). Percent-decoding gives the
    server the exact bytes either way."""
    if username.isascii() and _CTL.search(username.decode("ascii")) is None:
        return "username=" + _quote(username.decode("ascii"))
    try:
        username.decode("utf-8")
        charset = "UTF-8"
    except UnicodeDecodeError:
        charset = "ISO-8859-1"
    return f"username*={charset}''" + quote(username, safe=_ATTR_CHAR_SAFE)


class DigestAuth(Auth):
    """HTTP Digest authentication (RFC 7616).

    Answers a 401 ``WWW-Authenticate: Digest`` challenge and retries.
    Algorithms MD5, SHA-256 and SHA-512-256, each also as ``-sess``;
    ``qop=auth`` or no qop (RFC 2069 servers); ``userhash`` when the server
    asks. A challenge that offers only ``qop=auth-int`` is not answered, so
    its 401 reaches the caller. After the first challenge, later requests to
    the same origin send credentials straight away with the next nonce-count;
    a ``stale=true`` answer is retried once with the new nonce.

    Text credentials are hashed as UTF-8, bytes as given. Everything echoed
    from the challenge (realm, nonce) is hashed as the exact bytes the server
    sent, so a non-ASCII realm works whatever its encoding.

    ``cnonce_factory`` returns the client nonce for each request (random by
    default; fix it in tests).
    """

    requires_response = True

    def __init__(
        self,
        username: str | bytes,
        password: str | bytes,
        *,
        cnonce_factory: Callable[[], str] | None = None,
    ) -> None:
        self.username = _display(username)
        self._username = _to_bytes(username)
        self._password = _to_bytes(password)
        self._user_param = _username_param(self._username)  # when not userhash
        self._cnonce_factory = cnonce_factory or (lambda: secrets.token_hex(16))
        # The last challenge per origin, reused pre-emptively.
        self._challenges: OrderedDict[tuple[str, str, int], _DigestChallenge] = OrderedDict()
        # Nonce-counts per (origin, nonce). Kept for several nonces, not just
        # the latest, so flows racing on different nonces never reuse a count.
        self._counts: OrderedDict[tuple[tuple[str, str, int], str], int] = OrderedDict()

    def __repr__(self) -> str:
        return f"DigestAuth(username={self.username!r}, password=[secure])"

    def auth_flow(self, request: Request) -> AuthFlow:
        origin = request.url.origin
        used = self._challenges.get(origin)
        if used is not None:
            request.headers["Authorization"] = self._authorization(request, used, origin)
        answered_fresh = stale_retried = False
        # At most three sends: pre-emptive, fresh challenge, one stale retry.
        for _ in range(3):
            response = yield request
            if response.status_code != 401:
                return
            challenge = _select_digest_challenge(response)
            if challenge is None:
                self._forget(origin, used)
                return
            if not request.stream.is_replayable and request.stream.content_length != 0:
                raise StreamConsumed(
                    f"{request.url.host} asked for Digest authentication, which needs the "
                    "request sent again, but its body is a single-use stream that was "
                    "already sent; pass bytes or a file path so it can be sent again"
                )
            if used is None or (not challenge.stale and not answered_fresh):
                answered_fresh = True
            elif challenge.stale and not stale_retried:
                stale_retried = True
            else:
                self._forget(origin, used)
                return  # credentials rejected: the 401 is the answer
            self._remember(origin, challenge)
            request.headers["Authorization"] = self._authorization(request, challenge, origin)
            used = challenge

    # --- state -------------------------------------------------------------
    def _remember(self, origin: tuple[str, str, int], challenge: _DigestChallenge) -> None:
        self._challenges[origin] = challenge
        self._challenges.move_to_end(origin)
        while len(self._challenges) > _MAX_ORIGINS:
            self._challenges.popitem(last=False)

    def _forget(self, origin: tuple[str, str, int], used: _DigestChallenge | None) -> None:
        # Only the challenge this flow used: a concurrent flow may have
        # installed a newer one meanwhile.
        if used is not None and self._challenges.get(origin) is used:
            del self._challenges[origin]

    def _next_count(self, origin: tuple[str, str, int], nonce: str) -> int:
        # Synchronous by design: the count is taken when the header is built,
        # so concurrent flows on one event loop each get their own.
        key = (origin, nonce)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        self._counts.move_to_end(key)
        while len(self._counts) > _MAX_NONCES:
            self._counts.popitem(last=False)
        return count

    # --- computation -------------------------------------------------------
    def _authorization(
        self, request: Request, challenge: _DigestChallenge, origin: tuple[str, str, int]
    ) -> str:
        nc = self._next_count(origin, challenge.nonce)
        cnonce = self._cnonce_factory()
        uri = request.url.target
        response = _digest_response(
            challenge,
            username=self._username,
            password=self._password,
            method=request.method,
            uri=uri,
            nc=nc,
            cnonce=cnonce,
        )
        if challenge.userhash:
            user_param = "username=" + _quote(
                _hash(challenge.hash_name, self._username, challenge.realm_raw)
            )
        else:
            user_param = self._user_param
        parts = [
            user_param,
            "realm=" + _quote(challenge.realm),
            "nonce=" + _quote(challenge.nonce),
            "uri=" + _quote(uri),
            "response=" + _quote(response),
        ]
        if challenge.send_algorithm:
            parts.append("algorithm=" + challenge.algorithm)
        if challenge.opaque is not None:
            parts.append("opaque=" + _quote(challenge.opaque))
        if challenge.qop is not None or challenge.session:
            parts.append("cnonce=" + _quote(cnonce))
        if challenge.qop is not None:
            parts.append(f"qop={challenge.qop}")
            parts.append(f"nc={nc:08x}")
        if challenge.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def _hash(hash_name: str, *fields: bytes) -> str:
    """H() of the fields joined by ":"; the hex digest is ASCII text."""
    return hashlib.new(hash_name, b":".join(fields)).hexdigest()


def _digest_response(
    challenge: _DigestChallenge,
    *,
    username: bytes,
    password: bytes,
    method: str,
    uri: str,
    nc: int,
    cnonce: str,
) -> str:
    """The ``response=`` value of RFC 7616 section 3.4.1 (qop=auth or none).

    Each field is hashed as the bytes that travel for it: the header's (the
    realm and nonce as the server sent them; cnonce, uri and method as this
    request sends them), and for the credentials, which never travel, UTF-8
    or the bytes the caller gave."""
    h = challenge.hash_name
    nonce = challenge.nonce_raw
    cn = _wire_bytes(cnonce)
    ha1 = _hash(h, username, challenge.realm_raw, password).encode("ascii")
    if challenge.session:
        ha1 = _hash(h, ha1, nonce, cn).encode("ascii")
    ha2 = _hash(h, _wire_bytes(method), _wire_bytes(uri)).encode("ascii")
    if challenge.qop is None:
        return _hash(h, ha1, nonce, ha2)
    return _hash(h, ha1, nonce, b"%08x" % nc, cn, challenge.qop.encode("ascii"), ha2)
