"""The Client: builds requests and runs each one through its layers.

    send
     └─ redirects      one hop per 3xx, credentials dropped across origins
         └─ retries    RetryPolicy decides; the only place that sleeps
             └─ auth   the auth flow's round trips (digest)
                 └─ attempt   breaker permit, request hooks, transport,
                              cookies, response hooks

Every network attempt goes through `_attempt`, so hooks, auth, the
breaker and telemetry all see each retry, redirect and digest round trip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from . import __version__
from ._auth import Auth, BasicAuth, build_auth
from ._breaker_gate import NOT_SENT, breaker_gate, join_fleet
from ._client_settings import ClientSettings
from ._config import TimeoutTypes, check_limits
from ._content import EMPTY_BODY, BytesBody, RequestBody, encode_request_body
from ._cookies import CookieJar
from ._exceptions import (
    CircuitBreakerOpen,
    HyperHTTPError,
    InvalidURL,
    PoolClosed,
    TooManyRedirects,
)
from ._headers import HeaderTypes
from ._hooks import Hook, HookError, checked_hooks, run_hooks
from ._models import Request, Response
from ._redirects import build_redirect, same_origin
from ._transports import AsyncBaseTransport, HTTPTransport
from ._urls import URL, QueryParams, scheme_without_host_error, shared_url
from .errors.circuit_breaker import DomainCircuitBreakerManager
from .errors.retry import RetryPolicy, RetryReason
from .errors.telemetry import ErrorTelemetry, emit

_UNSET: Any = object()
_NO_RETRY = RetryPolicy(max_retries=0)

class Client(ClientSettings):
    """An async HTTP client with a connection pool. Use it as
    `async with hyperhttp.Client() as client:` and share one per service."""

    def __init__(
        self,
        *,
        base_url: str | URL | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | CookieJar | None = None,
        params: QueryParams | None = None,
        auth: Any = None,
        timeout: TimeoutTypes = 30.0,
        follow_redirects: bool = False,
        max_redirects: int = 20,
        http2: bool = True,
        verify: bool | str = True,
        cert: Any = None,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Any = None,
        trust_env: bool = True,
        max_connections: int | None = 100,
        max_connections_per_host: int | None = None,
        max_keepalive_connections: int | None = 20,
        keepalive_expiry: float | None = 120.0,
        connect_timeout: float | None = 10.0,
        happy_eyeballs_delay: float = 0.25,
        dns_ttl: float = 60.0,
        retry: RetryPolicy | None = None,
        circuit_breaker_manager: DomainCircuitBreakerManager | None = None,
        telemetry: ErrorTelemetry | None = None,
        event_hooks: Mapping[str, Sequence[Hook]] | None = None,
        user_agent: str | None = None,
        max_response_size: int | None = None,
        coordinator: Any = None,
        coordinator_required: bool = False,
        transport: AsyncBaseTransport | None = None,
    ) -> None:
        check_limits(max_connections, max_connections_per_host, max_keepalive_connections,
                     max_redirects, max_response_size, happy_eyeballs_delay)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError("retry= takes a hyperhttp.errors.retry.RetryPolicy or None")
        # base_url, headers, cookies, auth and timeout go through the same
        # setters as a later `client.headers = {...}` (see "settings" below).
        self.base_url = base_url
        self._user_agent = user_agent or f"hyperhttp/{__version__}"
        self.headers = headers
        self.cookies = cookies
        self.params = params
        self.auth = auth
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.retry = retry
        self.circuit_breaker_manager = circuit_breaker_manager
        self.telemetry = telemetry
        self.max_response_size = max_response_size
        self._hooks = checked_hooks(event_hooks)
        self._fleet: Any = join_fleet(
            coordinator, coordinator_required,
            (max_connections, max_connections_per_host), circuit_breaker_manager,
        )
        if transport is None:
            transport = HTTPTransport(
                verify=verify,
                cert=cert,
                ssl_context=ssl_context,
                http2=http2,
                max_connections=max_connections,
                max_connections_per_host=max_connections_per_host,
                max_keepalive_connections=max_keepalive_connections,
                keepalive_expiry=keepalive_expiry,
                happy_eyeballs_delay=happy_eyeballs_delay,
                dns_ttl=dns_ttl,
                proxies=proxies,
                trust_env=trust_env,
                fleet=self._fleet,
            )
        self._transport = transport
        self._closed = False

    # --- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    def close(self) -> None:
        """Close the pool without awaiting (connections are aborted)."""
        if not self._closed:
            self._closed = True
            closer = getattr(self._transport, "close", None)
            if closer is not None:
                closer()

    @property
    def is_closed(self) -> bool:
        return self._closed

    def get_pool_stats(self) -> dict[str, dict[str, int]]:
        """Per origin ("host:port"): idle, in_use and total connections
        (HTTP/2 connections once each, with their active `streams`)."""
        stats = getattr(self._transport, "get_pool_stats", None)
        return stats() if stats is not None else {}

    # --- building ----------------------------------------------------------------
    def _merge_url(self, url: str | URL) -> URL:
        # URLs are immutable: a string seen before maps to a shared object.
        target = shared_url(url) if type(url) is str else URL(url)
        if target.is_relative:
            if target.host:
                # "//host/path": joining it to base_url would either drop its
                # host or let a path from elsewhere pick the server.
                raise InvalidURL(
                    f"URL {target.redacted()!r} names a host but no scheme; "
                    "give a full URL (https://...) or a path"
                )
            if target.scheme:
                # "users:123/profile", "localhost:8080/x", "mailto:a@b": the
                # part before ':' parses as a scheme; appending the rest to
                # base_url would quietly drop it.
                raise scheme_without_host_error(target)
            if self._base_url is None:
                raise InvalidURL(f"relative URL {target.redacted()!r} needs a client base_url")
            base = self._base_url
            base_path = base.path if base.path.endswith("/") else base.path + "/"
            merged = base.copy_with(path=base_path + target.path.lstrip("/"), query=target.query)
            return merged
        return target

    def build_request(
        self,
        method: str,
        url: str | URL,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: QueryParams | None = None,
        headers: HeaderTypes | None = None,
        cookies: Mapping[str, str] | None = None,
        timeout: TimeoutTypes | Any = _UNSET,
        extensions: dict[str, Any] | None = None,
    ) -> Request:
        full = self._merge_url(url)
        if self.params:
            full = URL(full, params=self.params)
        if params:
            full = URL(full, params=params)
        merged = self._headers.copy()
        if headers:
            merged.update(headers)
        body: RequestBody
        if content is None and data is None and files is None and json is None:
            body = EMPTY_BODY
        else:
            body = encode_request_body(
                content=content, data=data, files=files, json=json,
                content_type=merged.get("content-type") if files else None,
            )
        ext = dict(extensions) if extensions else {}
        ext["timeout"] = self._timeout if timeout is _UNSET else self._as_timeout(timeout)
        request = Request._build(
            method.upper() if isinstance(method, str) else method, full, merged, body, ext
        )
        self._set_cookie_header(request, cookies)
        return request

    def _set_cookie_header(self, request: Request, extra: Mapping[str, str] | None) -> None:
        if not extra and not self._cookies.may_have_cookies():
            return  # nothing to send: skip the header scan
        if "cookie" in request.headers:
            return  # written by the caller: sent as is
        value = self._cookies.cookie_header(request.url, extra)
        if value:
            request.headers["Cookie"] = value
            request.extensions["cookie_from_jar"] = True

    # --- verbs --------------------------------------------------------------------
    async def request(self, method: str, url: str | URL, **kwargs: Any) -> Response:
        """Send a request and read its body; the connection is back in the
        pool when this returns."""
        if kwargs:
            send_args = _pop_send_args(kwargs)
            request = self.build_request(method, url, **kwargs)
            return await self.send(request, stream=False, **send_args)
        request = self.build_request(method, url)
        if self._closed or not self._is_plain(request):
            return await self.send(request, stream=False)
        # What send() does for a plain request, without its coroutine layer.
        try:
            response = await self._attempt(request, True)
            if self.follow_redirects and response.is_redirect:
                return await self._follow_from(request, response, True)
            return response
        except HookError as hooked:
            error = hooked.error
        raise error  # as send() does

    @asynccontextmanager
    async def stream(self, method: str, url: str | URL, **kwargs: Any) -> AsyncIterator[Response]:
        """`async with client.stream("GET", url) as response:` reads the body
        as it arrives; leaving the block releases the connection."""
        send_args = _pop_send_args(kwargs)
        request = self.build_request(method, url, **kwargs)
        response = await self.send(request, stream=True, **send_args)
        try:
            yield response
        finally:
            await response.aclose()

    async def get(self, url: str | URL, **kwargs: Any) -> Response:
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str | URL, **kwargs: Any) -> Response:
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: str | URL, **kwargs: Any) -> Response:
        return await self.request("OPTIONS", url, **kwargs)

    async def delete(self, url: str | URL, **kwargs: Any) -> Response:
        return await self.request("DELETE", url, **kwargs)

    async def post(self, url: str | URL, **kwargs: Any) -> Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str | URL, **kwargs: Any) -> Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str | URL, **kwargs: Any) -> Response:
        return await self.request("PATCH", url, **kwargs)

    # --- sending ------------------------------------------------------------------
    async def send(
        self,
        request: Request,
        *,
        stream: bool = False,
        auth: Any = _UNSET,
        follow_redirects: bool | Any = _UNSET,
        retry: RetryPolicy | bool | Any | None = _UNSET,
    ) -> Response:
        if self._closed:
            raise PoolClosed("the client has been closed; create a new Client", request=request)
        try:
            if (
                auth is _UNSET and follow_redirects is _UNSET and retry is _UNSET
                and self._is_plain(request)
            ):
                # No auth, retries or telemetry: one attempt, and the redirect
                # loop only for a redirect.
                response = await self._attempt(request, not stream)
                if self.follow_redirects and response.is_redirect:
                    return await self._follow_from(request, response, not stream)
                return response
            auth_obj = self._auth if auth is _UNSET else build_auth(auth)
            follow = self.follow_redirects if follow_redirects is _UNSET else follow_redirects
            policy = self._policy(retry)
            if request.url.username is not None or request.url.password is not None:
                if auth is _UNSET and self._auth is None:
                    auth_obj = BasicAuth(request.url.username or "", request.url.password or "")
                request.url = request.url.without_credentials()
            response = await self._send_handling_redirects(
                request, auth_obj, follow, policy, read_body=not stream
            )
            if not stream and response._content is None:
                try:
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
            return response
        except HookError as hooked:
            error = hooked.error
        # Raised here, outside the handler: the hook's exception as it was
        # (its traceback and cause), not chained to the carrier.
        raise error

    def _is_plain(self, request: Request) -> bool:
        """True when sending `request` needs no auth flow, retry policy or
        telemetry (the client has none, the URL carries no credentials)."""
        if self._auth is not None or self.retry is not None or self.telemetry is not None:
            return False
        url = request.url
        return url.username is None and url.password is None

    def _follow_from(self, request: Request, response: Response, read_body: bool) -> Awaitable[Response]:
        """The redirect loop of a plain request, from its first response."""
        return self._send_handling_redirects(
            request, None, True, _NO_RETRY, read_body=read_body, first=response
        )

    def _policy(self, retry: Any) -> RetryPolicy:
        if retry is _UNSET:
            return self.retry or _NO_RETRY
        if retry is False or retry is None:
            return _NO_RETRY
        if retry is True:
            return self.retry or RetryPolicy()
        if isinstance(retry, RetryPolicy):
            return retry
        raise TypeError("retry= takes a RetryPolicy, True, False or None")

    async def _send_handling_redirects(
        self, request: Request, auth: Auth | None, follow: bool, policy: RetryPolicy,
        *, read_body: bool = False, first: Response | None = None,
    ) -> Response:
        """Send `request` and follow its redirects; `first`, when given, is
        the response to `request` already received."""
        history: list[Response] = []
        first_url = request.url
        plain = policy is _NO_RETRY and self.telemetry is None
        while True:
            url = request.url
            hop_auth = auth if url is first_url or same_origin(url, first_url) else None
            if first is not None:
                response, first = first, None
            elif plain and hop_auth is None:
                # No retries, telemetry or auth: straight to the attempt.
                response = await self._attempt(request, read_body)
            else:
                response = await self._send_with_retries(request, hop_auth, policy, read_body)
            if history:
                response.history = list(history)
            if not (follow and response.is_redirect):
                return response
            if len(history) >= self.max_redirects:
                await response.aclose()
                raise TooManyRedirects(
                    f"exceeded max_redirects ({self.max_redirects}) at "
                    f"{request.url.redacted()}", request=request
                )
            try:
                next_request = build_redirect(request, response)
            finally:
                await response.aread()
            self._set_cookie_header(next_request, None)
            history.append(response)
            request = next_request

    async def _send_with_retries(
        self, request: Request, auth: Auth | None, policy: RetryPolicy, read_body: bool = False
    ) -> Response:
        if policy is _NO_RETRY and self.telemetry is None:
            # Nothing to decide and nobody to tell: skip the bookkeeping.
            return await self._send_handling_auth(request, auth, read_body)
        state = policy.begin(request.method, request.url.redacted())
        while True:
            try:
                response = await self._send_handling_auth(request, auth, read_body)
            except asyncio.CancelledError:
                raise
            except CircuitBreakerOpen as exc:
                # Refused locally: never retried, but telemetry learns how
                # the request ended (a "retry" may have been reported).
                decision = policy.decide(state, exc, body_replayable=False)
                record = dataclasses.replace(decision.record, outcome="fail", delay=None)
                await emit(self.telemetry, record, "fail")
                raise
            except HyperHTTPError as exc:
                # Only hyperhttp's own failures go to the policy: anything
                # else (a hook's or an auth flow's exception) is the caller's.
                replayable = request.stream.is_replayable or not getattr(
                    request.stream, "has_started", True
                )
                decision = policy.decide(state, exc, body_replayable=replayable)
                await emit(self.telemetry, decision.record, decision.outcome)
                if not decision.retry or decision.next_state is None:
                    final = decision.error_to_raise(exc)
                    if final is exc:
                        raise
                    raise final from exc
                state = decision.next_state
                await asyncio.sleep(decision.delay)
                continue
            except Exception as exc:
                # Not a failure of the exchange (a hook's or an auth flow's
                # own exception): never retried, reported once as the end.
                error = exc.error if isinstance(exc, HookError) else exc
                decision = policy.decide(state, error, body_replayable=False)
                # The policy's reason would say why it was not retried; the
                # honest one is that a hook ended the request.
                reason = RetryReason.HOOK_FAILED if error is not exc else decision.reason
                record = dataclasses.replace(
                    decision.record, outcome="fail", delay=None, reason=reason
                )
                await emit(self.telemetry, record, "fail")
                raise
            try:
                decision = policy.decide(
                    state,
                    response.status_code,
                    body_replayable=request.stream.is_replayable,
                    retry_after=response.headers.get("retry-after"),
                )
                await emit(self.telemetry, decision.record, decision.outcome)
            except BaseException:
                await response.aclose()  # nobody else will: give its connection back
                raise
            if not decision.retry or decision.next_state is None:
                return response
            await response.aclose()
            state = decision.next_state
            await asyncio.sleep(decision.delay)

    async def _send_handling_auth(
        self, request: Request, auth: Auth | None, read_body: bool = False
    ) -> Response:
        if auth is None:
            return await self._attempt(request, read_body)
        if auth.requires_request_body and not isinstance(request.stream, BytesBody):
            data = b"".join([chunk async for chunk in request.stream])
            request.replace_body(BytesBody(data, request.stream.content_type))
        # The flow works on a copy: what it adds (Authorization, an API key
        # header) must not ride along when the request is redirected.
        flow = auth.auth_flow(
            Request(request.method, request.url, headers=request.headers.copy(),
                    stream=request.stream, extensions=request.extensions)
        )
        next_request = next(flow)
        while True:
            response = await self._attempt(next_request, read_body)
            try:
                if getattr(auth, "requires_response_body", False):
                    await response.aread()
                next_request = flow.send(response)
            except StopIteration:
                return response
            except BaseException:
                # The flow gave up (a body it cannot send again, say) or the
                # read failed: this response goes to nobody, so close it here.
                await response.aclose()
                raise
            try:
                await response.aread()  # read to the end: the connection stays usable
            finally:
                await response.aclose()

    async def _attempt(self, request: Request, read_body: bool = False) -> Response:
        """One network attempt; with `read_body` reading the body is part of it,
        so a connection lost mid-body is this attempt's failure (retry, breaker)."""
        breaker = self.circuit_breaker_manager
        gate = None
        if breaker is not None:
            url = request.url
            gate = await breaker_gate(self._fleet, breaker, breaker.key_for(url.host, url.port or 0))
        hooks = self._hooks
        try:
            if hooks["request"]:
                await run_hooks(hooks["request"], request)
            started = time.perf_counter()
            transport = self._transport
            if type(transport) is HTTPTransport:
                origin, timeout = transport.prepare(request)
                response = await transport.pool.handle_request(request, origin, timeout)
            else:
                response = await transport.handle_async_request(request)
            response._started = started
        except BaseException as exc:
            if gate is not None:
                gate(NOT_SENT if isinstance(exc, HookError) else exc)
            raise
        response._request = request
        response.max_size = self.max_response_size
        set_cookies = response.headers.get_list("set-cookie")
        if set_cookies:
            self._cookies.extract(request.url, set_cookies)
        try:
            if hooks["response"]:
                await run_hooks(hooks["response"], response)
            if read_body and response._read_now() is None:
                await response.aread()
        except BaseException as exc:
            try:
                await response.aclose()
            finally:
                if gate is not None:
                    # A response hook's verdict is the caller's: the host answered.
                    gate(response.status_code if isinstance(exc, HookError) else exc)
            raise
        if gate is not None:
            try:
                gate(response.status_code)
            except BaseException:
                await response.aclose()  # nobody else will: give its connection back
                raise
        return response

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<hyperhttp.Client {state} base_url={self.base_url!r}>"


def _pop_send_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in ("auth", "follow_redirects", "retry") if k in kwargs}
