"""A Digest-auth server (RFC 7616 server side) for integration tests.

Written from the RFC text, separately from `hyperhttp/_auth.py` and sharing
no code with it: the Authorization header is split with the standard
library's `urllib.request.parse_http_list` / `parse_keqv_list`, and the
hashes are computed here from the RFC 7616 section 3.4 formulas. No
published server implements SHA-512-256, the ``-sess`` variants beyond MD5,
or ``userhash`` (httpbin does MD5 and SHA-256; Flask-DigestAuth MD5 and
MD5-sess), which is why this one exists; the tests also check the client
against httpbin where httpbin can.

Every path answers. The challenge is configured by the query string:

=====================  ====================================================
``alg=SHA-256,MD5``    one challenge per algorithm, in that order (default
                       MD5); any may end in ``-sess``; ``alg=none`` leaves the
                       algorithm parameter out (RFC 2069 servers)
``qop=auth``           the qop offered: ``auth``, ``auth-int``,
                       ``auth,auth-int`` or ``none`` (no qop, RFC 2069)
``userhash=1``         offer ``userhash=true``
``combine=1``          all challenges in one WWW-Authenticate header
``stale_after=N``      a nonce serves N authorized requests, then answers
                       ``stale=true`` with a fresh nonce
=====================  ====================================================

A valid request gets 200 and JSON ``{"user", "algorithm", "nc", "nonce"}``.
Every request is appended to `DigestServerApp.log` as a `LogEntry`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote
from urllib.request import parse_http_list, parse_keqv_list

from hypercorn.asyncio import serve
from hypercorn.config import Config

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

DEFAULT_USERS: dict[str, str] = {"Mufasa": "Circle of Life", "Jäsøn Doe": "Secret, or not?"}
DEFAULT_REALM = "digest@hyperhttp.test"

# RFC 7616 section 6.1 algorithm names -> hashlib names.
HASHES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def hex_hash(algorithm: str, text: str) -> str:
    """H(data) for an RFC 7616 algorithm name (``-sess`` ignored here)."""
    base = algorithm.upper().removesuffix("-SESS")
    return hashlib.new(HASHES[base], text.encode("utf-8")).hexdigest()


@dataclass
class LogEntry:
    """One request as the server saw it."""

    status: int
    reason: str
    authorization: str | None
    params: dict[str, str]
    challenges: list[str]


@dataclass
class _Nonce:
    algorithm: str | None  # None: the challenge named no algorithm (means MD5)
    qop: str | None
    userhash: bool
    opaque: str
    stale_after: int | None
    uses: int = 0
    seen_nc: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class _Config:
    algorithms: list[str | None]
    qop: str | None
    userhash: bool
    combine: bool
    stale_after: int | None


def _config(query: str) -> _Config:
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    algs: list[str | None] = []
    for name in q.get("alg", "MD5").split(","):
        if name.lower() == "none":
            algs.append(None)
            continue
        if name.upper().removesuffix("-SESS") not in HASHES:
            raise ValueError(f"unknown algorithm {name!r}")
        algs.append(name)
    qop = q.get("qop", "auth")
    stale = q.get("stale_after")
    return _Config(
        algorithms=algs,
        qop=None if qop == "none" else qop,
        userhash=q.get("userhash") == "1",
        combine=q.get("combine") == "1",
        stale_after=int(stale) if stale is not None else None,
    )


class DigestServerApp:
    """ASGI app answering every path with Digest authentication."""

    def __init__(
        self, users: Mapping[str, str] | None = None, *, realm: str = DEFAULT_REALM
    ) -> None:
        self.users = dict(users if users is not None else DEFAULT_USERS)
        self.realm = realm
        self.log: list[LogEntry] = []
        self._nonces: dict[str, _Nonce] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass  # the body plays no part (auth-int is never accepted)
        query = scope.get("query_string", b"").decode("latin-1")
        config = _config(query)
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        uri = raw_path.decode("latin-1") + (f"?{query}" if query else "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorization = headers.get("authorization")
        status, reason, params, stale, body = self._check(scope["method"], uri, authorization)
        challenges: list[str] = []
        if status == 401:
            challenges = self._challenges(config, stale=stale)
        self.log.append(LogEntry(status, reason, authorization, params, challenges))
        out = [(b"content-type", b"application/json")]
        if config.combine and challenges:
            out.append((b"www-authenticate", ", ".join(challenges).encode("utf-8")))
        else:
            out.extend((b"www-authenticate", c.encode("utf-8")) for c in challenges)
        payload = json.dumps(body if status == 200 else {"reason": reason}).encode()
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})

    # --- challenge -----------------------------------------------------------
    def _challenges(self, config: _Config, *, stale: bool) -> list[str]:
        out = []
        for algorithm in config.algorithms:
            nonce = base64.b64encode(os.urandom(24)).decode("ascii")
            opaque = base64.b64encode(os.urandom(12)).decode("ascii")
            self._nonces[nonce] = _Nonce(
                algorithm, config.qop, config.userhash, opaque, config.stale_after
            )
            parts = [f'realm="{self.realm}"']
            if config.qop is not None:
                parts.append(f'qop="{config.qop}"')
            if algorithm is not None:
                parts.append(f"algorithm={algorithm}")
            parts += [f'nonce="{nonce}"', f'opaque="{opaque}"', "charset=UTF-8"]
            if config.userhash:
                parts.append("userhash=true")
            if stale:
                parts.append("stale=true")
            out.append("Digest " + ", ".join(parts))
        return out

    # --- verification (RFC 7616 section 3.4) ---------------------------------
    def _check(
        self, method: str, uri: str, authorization: str | None
    ) -> tuple[int, str, dict[str, str], bool, dict[str, Any]]:
        if authorization is None:
            return 401, "no credentials", {}, False, {}
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "digest":
            return 401, f"scheme {scheme}", {}, False, {}
        params = {k.lower(): v for k, v in parse_keqv_list(parse_http_list(rest)).items()}

        def reject(
            reason: str, stale: bool = False
        ) -> tuple[int, str, dict[str, str], bool, dict[str, Any]]:
            return 401, reason, params, stale, {}

        record = self._nonces.get(params.get("nonce", ""))
        if record is None:
            return reject("unknown nonce")
        algorithm = record.algorithm or "MD5"
        if record.algorithm is not None and params.get("algorithm", "").upper() != (
            algorithm.upper()
        ):
            return reject(f"algorithm {params.get('algorithm')!r} is not {algorithm}")
        if params.get("realm") != self.realm:
            return reject("wrong realm")
        if params.get("opaque") != record.opaque:
            return reject("opaque not echoed")
        if params.get("uri") != uri:
            return reject(f"uri {params.get('uri')!r} is not {uri!r}")
        user = self._user(params, record, algorithm)
        if user is None:
            return reject("unknown user")
        qop = params.get("qop")
        nc = 0
        if record.qop is None:
            if qop is not None:
                return reject("qop sent but none offered")
        else:
            offered = [q.strip() for q in record.qop.split(",")]
            if qop != "auth" or "auth" not in offered:
                return reject(f"qop {qop!r} not acceptable")
            try:
                nc = int(params.get("nc", ""), 16)
            except ValueError:
                return reject("bad nc")
            if len(params.get("nc", "")) != 8 or nc in record.seen_nc:
                return reject(f"nc {params.get('nc')} replayed or malformed")
        expected = self._expected(method, uri, user, algorithm, params)
        if expected is None or not hmac.compare_digest(expected, params.get("response", "")):
            return reject("wrong response")
        if record.stale_after is not None and record.uses >= record.stale_after:
            return reject("nonce expired", stale=True)
        record.uses += 1
        if record.qop is not None:
            record.seen_nc.add(nc)
        body = {"user": user, "algorithm": algorithm, "nc": nc, "nonce": params["nonce"]}
        return 200, "ok", params, False, body

    def _user(self, params: dict[str, str], record: _Nonce, algorithm: str) -> str | None:
        if params.get("userhash", "false").lower() == "true":
            if not record.userhash:
                return None
            for name in self.users:
                if params.get("username") == hex_hash(algorithm, f"{name}:{self.realm}"):
                    return name
            return None
        if "username*" in params:
            if "username" in params:
                return None  # RFC 7616 section 3.4: never both
            charset, _, encoded = params["username*"].partition("''")
            if charset.upper() != "UTF-8":
                return None
            name = unquote(encoded, encoding="utf-8", errors="strict")
        else:
            name = params.get("username", "")
        return name if name in self.users else None

    def _expected(
        self, method: str, uri: str, user: str, algorithm: str, params: dict[str, str]
    ) -> str | None:
        password = self.users[user]
        nonce = params["nonce"]
        a1 = hex_hash(algorithm, f"{user}:{self.realm}:{password}")
        if algorithm.upper().endswith("-SESS"):
            if "cnonce" not in params:
                return None
            a1 = hex_hash(algorithm, f"{a1}:{nonce}:{params['cnonce']}")
        a2 = hex_hash(algorithm, f"{method}:{uri}")
        if "qop" not in params:
            return hex_hash(algorithm, f"{a1}:{nonce}:{a2}")
        if "cnonce" not in params:
            return None
        fields = [a1, nonce, params["nc"], params["cnonce"], params["qop"], a2]
        return hex_hash(algorithm, ":".join(fields))


class DigestServer:
    """`DigestServerApp` under hypercorn in a background thread on loopback."""

    def __init__(self, app: DigestServerApp | None = None, *, host: str = "127.0.0.1") -> None:
        self.app = app or DigestServerApp()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.bind((host, 0))
        sock.listen(128)  # connections wait in the backlog until hypercorn runs
        self.port: int = sock.getsockname()[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("tests.support.digest_server")
        config.graceful_timeout = 1.0
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="digest-server", daemon=True)
        self._thread.start()
        if not self._started.wait(10.0):
            raise RuntimeError("digest server did not start")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by close()
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        await serve(self.app, self._config, shutdown_trigger=self._stop.wait, mode="asgi")  # type: ignore[arg-type]

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10.0)
        if self._thread.is_alive():
            raise RuntimeError("digest server did not stop")
        if self._error is not None:
            raise RuntimeError("digest server failed") from self._error

    def __enter__(self) -> DigestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
