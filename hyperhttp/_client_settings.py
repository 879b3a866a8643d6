"""The settings of a `Client` that can be changed on a live client.

Assigning one converts and checks it as the constructor does (the
constructor assigns through the same setters); code on the request path
reads the underscored attributes, so a request pays no property call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._auth import Auth, build_auth
from ._config import Timeout, TimeoutTypes
from ._cookies import CookieJar
from ._decoders import accept_encoding
from ._headers import Headers, HeaderTypes
from ._hooks import Hook, checked_hooks
from ._urls import URL

__all__ = ["ClientSettings"]


class ClientSettings:
    """base_url, headers, cookies, auth, timeout and event_hooks of a `Client`."""

    connect_timeout: float | None
    _user_agent: str
    _base_url: URL | None
    _headers: Headers
    _cookies: CookieJar
    _auth: Auth | None
    _timeout: Timeout
    _hooks: dict[str, list[Hook]]

    @property
    def base_url(self) -> URL | None:
        return self._base_url

    @base_url.setter
    def base_url(self, url: str | URL | None) -> None:
        self._base_url = URL(url) if url is not None else None

    @property
    def headers(self) -> Headers:
        """Sent with every request; change it in place, or assign a mapping
        or list of pairs, which replaces the defaults (User-Agent, Accept,
        Accept-Encoding) only where it names them."""
        return self._headers

    @headers.setter
    def headers(self, headers: HeaderTypes | None) -> None:
        merged = Headers(
            {
                "User-Agent": self._user_agent,
                "Accept": "*/*",
                "Accept-Encoding": accept_encoding(),
            }
        )
        if headers:
            merged.update(headers)
        self._headers = merged

    @property
    def cookies(self) -> CookieJar:
        """The cookie jar; assigning `{name: value}` starts a new jar."""
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Mapping[str, str] | CookieJar | None) -> None:
        self._cookies = cookies if isinstance(cookies, CookieJar) else CookieJar(cookies)

    @property
    def auth(self) -> Auth | None:
        """Takes what `auth=` takes: `(user, password)`, an `Auth`, a callable or None."""
        return self._auth

    @auth.setter
    def auth(self, auth: Any) -> None:
        self._auth = build_auth(auth)

    @property
    def timeout(self) -> Timeout:
        """Takes seconds, None or a `Timeout`, combined with `connect_timeout`
        as `timeout=` is."""
        return self._timeout

    @timeout.setter
    def timeout(self, timeout: TimeoutTypes) -> None:
        self._timeout = self._as_timeout(timeout)

    @property
    def event_hooks(self) -> dict[str, list[Hook]]:
        """The hooks, {"request": [...], "response": [...]}: a live dict of
        lists, read on every attempt. Assigning a new mapping checks it and
        fills in a missing kind with no hooks."""
        return self._hooks

    @event_hooks.setter
    def event_hooks(self, hooks: Mapping[str, Sequence[Hook]] | None) -> None:
        self._hooks = checked_hooks(hooks)

    def _as_timeout(self, value: TimeoutTypes) -> Timeout:
        """A number bounds all four phases; `connect_timeout` is an upper
        bound on connecting, so the connect phase gets the smaller of the
        two. The same rule holds for the client default and per request. A
        `Timeout` is taken as given."""
        if isinstance(value, Timeout):
            return value
        cap = self.connect_timeout
        if value is None:
            return Timeout(None, connect=cap)
        connect = value if cap is None else min(float(value), cap)
        return Timeout(value, connect=connect)
