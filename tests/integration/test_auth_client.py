"""Authentication through the Client, checked at real servers on loopback.

`/echo` on the `http_server` fixture reports the headers it received, so
every credential claim is checked where it matters: at the server.
`DigestServer` (tests/support/digest_server.py) and httpbin check Digest.
`http://127.0.0.1:PORT` and `http://localhost:PORT` reach one server under
two origins, which is how cross-origin redirects are tested.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote
from urllib.request import parse_http_list, parse_keqv_list

import httpbin  # type: ignore[import-untyped]
import pytest
from werkzeug.serving import make_server

import hyperhttp
from hyperhttp import Auth, BasicAuth, BearerAuth, DigestAuth, Request, Response
from hyperhttp._auth import AuthFlow
from hyperhttp.errors.retry import RetryPolicy
from hyperhttp.utils.backoff import ExponentialBackoff
from tests.support.digest_server import DigestServer
from tests.support.fixtures import RawServerFactory
from tests.support.raw import read_head
from tests.support.servers import ServerHandle

USER, PASSWORD = "Mufasa", "Circle of Life"
ALGORITHMS = ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"]
BASIC_ALICE = "Basic YWxpY2U6czNjcmV0"  # alice:s3cret


@pytest.fixture(scope="module")
def digest_server() -> Iterator[DigestServer]:
    with DigestServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def httpbin_url() -> Iterator[str]:
    wsgi = make_server("127.0.0.1", 0, httpbin.app, threaded=True)
    thread = threading.Thread(target=wsgi.serve_forever, name="httpbin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{wsgi.server_port}"
    finally:
        wsgi.shutdown()
        thread.join(10)


def seen(response: Response) -> dict[str, list[str]]:
    """The request headers /echo received, by lower-cased name."""
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


def authorization(response: Response) -> str | None:
    values = seen(response).get("authorization")
    assert values is None or len(values) == 1
    return None if values is None else values[0]


def other_origin(server: ServerHandle) -> str:
    return server.url.replace("127.0.0.1", "localhost")


def redirect_to(server: ServerHandle, target: str, status: int = 302) -> str:
    return f"{server.url}/redirect-to?url={quote(target, safe='')}&status={status}"


def pool_is_idle(client: hyperhttp.Client) -> bool:
    return all(entry.get("in_use", 0) == 0 for entry in client.get_pool_stats().values())


# --- Basic and Bearer, on the client and per request ------------------------------


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (("alice", "s3cret"), BASIC_ALICE),
        ((b"alice", b"s3cret"), BASIC_ALICE),
        (BasicAuth("alice", "s3cret"), BASIC_ALICE),
        (BasicAuth("j\u00f6rg", "p\u00e4ss"), "Basic asO2cmc6cMOkc3M="),  # "jörg:päss" as UTF-8
        # Bytes in another encoding go out as given: "jörg:päss" as latin-1.
        ((b"j\xf6rg", b"p\xe4ss"), "Basic avZyZzpw5HNz"),
        (BearerAuth("abc.def.ghi"), "Bearer abc.def.ghi"),
    ],
    ids=["tuple", "bytes-tuple", "basic", "basic-utf8", "latin1-bytes-tuple", "bearer"],
)
async def test_client_default_auth_reaches_the_server(
    loop_name: str, http_server: ServerHandle, auth: Any, expected: str
) -> None:
    async with hyperhttp.Client(auth=auth, http2=False) as client:
        first = await client.get(http_server.url + "/echo")
        second = await client.post(http_server.url + "/echo", content=b"x")
    assert authorization(first) == expected
    assert authorization(second) == expected


async def test_per_request_none_and_override(loop_name: str, http_server: ServerHandle) -> None:
    url = http_server.url + "/echo"
    async with hyperhttp.Client(auth=BasicAuth("u", "p"), http2=False) as client:
        assert authorization(await client.get(url)) == "Basic dTpw"
        assert authorization(await client.get(url, auth=None)) is None
        assert authorization(await client.get(url, auth=("x", "y"))) == "Basic eDp5"
        assert authorization(await client.get(url, auth=BearerAuth("t0k"))) == "Bearer t0k"
        async with client.stream("GET", url, auth=None) as streamed:
            await streamed.aread()
        assert authorization(streamed) is None
        # The overrides were for one call only.
        assert authorization(await client.get(url)) == "Basic dTpw"
        assert isinstance(client.auth, BasicAuth)


async def test_per_request_auth_without_client_default(
    loop_name: str, http_server: ServerHandle
) -> None:
    url = http_server.url + "/echo"
    async with hyperhttp.Client(http2=False) as client:
        assert authorization(await client.get(url)) is None
        assert authorization(await client.get(url, auth=("alice", "s3cret"))) == BASIC_ALICE
        assert authorization(await client.get(url)) is None


async def test_basic_auth_over_http2(loop_name: str, https_server: ServerHandle,
                                     client_ssl_context: Any) -> None:
    async with hyperhttp.Client(auth=("alice", "s3cret"), ssl_context=client_ssl_context) as c:
        response = await c.get(https_server.url + "/echo")
    assert response.http_version == "HTTP/2"
    assert authorization(response) == BASIC_ALICE


# --- Digest through the client ------------------------------------------------------


@pytest.mark.parametrize("userhash", [False, True])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_digest_every_algorithm(
    loop_name: str, digest_server: DigestServer, algorithm: str, userhash: bool
) -> None:
    query = f"alg={algorithm}&userhash={int(userhash)}"
    log = digest_server.app.log
    async with hyperhttp.Client(auth=DigestAuth(USER, PASSWORD)) as client:
        start = len(log)
        first = await client.get(f"{digest_server.url}/dir/index.html?{query}")
        assert first.status_code == 200, log[-1].reason
        body = first.json()
        assert (body["user"], body["algorithm"], body["nc"]) == (USER, algorithm, 1)
        assert [e.status for e in log[start:]] == [401, 200]
        assert log[start].authorization is None
        # Later requests answer the remembered challenge straight away.
        start = len(log)
        second = await client.post(f"{digest_server.url}/other?{query}", content=b"payload")
        assert second.status_code == 200, log[-1].reason
        assert (second.json()["nc"], second.json()["nonce"]) == (2, body["nonce"])
        assert [e.status for e in log[start:]] == [200]
    sent = log[-1].authorization or ""
    assert ("userhash=true" in sent) is userhash
    assert (f'username="{USER}"' in sent) is not userhash
    # The 401 went back to the pool only after its body was read.
    assert first.history == []


async def test_digest_per_request(loop_name: str, digest_server: DigestServer) -> None:
    async with hyperhttp.Client() as client:
        denied = await client.get(f"{digest_server.url}/x")
        allowed = await client.get(f"{digest_server.url}/x", auth=DigestAuth(USER, PASSWORD))
    assert denied.status_code == 401
    assert "Digest" in (denied.headers.get("www-authenticate") or "")
    assert allowed.status_code == 200
    assert allowed.json()["user"] == USER


async def test_digest_wrong_password_surfaces_the_401(
    loop_name: str, digest_server: DigestServer
) -> None:
    log = digest_server.app.log
    async with hyperhttp.Client(auth=DigestAuth(USER, "wrong")) as client:
        start = len(log)
        response = await client.get(f"{digest_server.url}/x")
        assert response.status_code == 401
        assert [e.status for e in log[start:]] == [401, 401]
        assert log[-1].reason == "wrong response"
        assert pool_is_idle(client)


async def test_digest_stale_nonce_is_retried_once(
    loop_name: str, digest_server: DigestServer
) -> None:
    log = digest_server.app.log
    url = f"{digest_server.url}/x?alg=SHA-256&stale_after=1"
    async with hyperhttp.Client(auth=DigestAuth(USER, PASSWORD)) as client:
        start = len(log)
        first = await client.get(url)
        assert first.status_code == 200
        assert [e.status for e in log[start:]] == [401, 200]
        # The remembered nonce has served its one request: stale=true, and the
        # client answers the new nonce without asking the caller.
        start = len(log)
        second = await client.get(url)
        assert second.status_code == 200
        assert [(e.status, e.reason) for e in log[start:]] == [
            (401, "nonce expired"), (200, "ok"),
        ]
        assert "stale=true" in log[start].challenges[0]
        assert second.json()["nonce"] != first.json()["nonce"]
        assert second.json()["nc"] == 1


async def test_digest_stale_twice_gives_up(loop_name: str, digest_server: DigestServer) -> None:
    log = digest_server.app.log
    async with hyperhttp.Client(auth=DigestAuth(USER, PASSWORD)) as client:
        start = len(log)
        # stale_after=0: every nonce is stale at once; the client answers the
        # first challenge, retries one stale answer, then hands back the 401.
        response = await client.get(f"{digest_server.url}/x?stale_after=0")
        assert response.status_code == 401
        assert [e.reason for e in log[start:]] == [
            "no credentials", "nonce expired", "nonce expired",
        ]
        assert pool_is_idle(client)


async def test_digest_concurrent_requests_share_one_instance(
    loop_name: str, digest_server: DigestServer
) -> None:
    log = digest_server.app.log
    auth = DigestAuth(USER, PASSWORD)
    url = f"{digest_server.url}/x?alg=SHA-512-256"
    async with hyperhttp.Client(auth=auth, http2=False) as client:
        warm = await client.get(url)
        assert warm.status_code == 200
        nonce = warm.json()["nonce"]
        start = len(log)
        responses = await asyncio.gather(*(client.get(f"{url}&i={i}") for i in range(12)))
        assert [r.status_code for r in responses] == [200] * 12
        # All pre-emptive on the shared nonce, each with its own nonce-count
        # (the server rejects a replayed nc).
        assert [e.status for e in log[start:]] == [200] * 12
        counts = sorted(r.json()["nc"] for r in responses)
        assert counts == list(range(2, 14))
        assert {r.json()["nonce"] for r in responses} == {nonce}
        assert pool_is_idle(client)


async def test_digest_concurrent_first_contact(
    loop_name: str, digest_server: DigestServer
) -> None:
    auth = DigestAuth(USER, PASSWORD)
    async with hyperhttp.Client(auth=auth) as client:
        responses = await asyncio.gather(
            *(client.get(f"{digest_server.url}/y?alg=MD5-sess&i={i}") for i in range(8))
        )
        assert [r.status_code for r in responses] == [200] * 8
        assert pool_is_idle(client)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_digest_against_httpbin(loop_name: str, httpbin_url: str, algorithm: str) -> None:
    url = f"{httpbin_url}/digest-auth/auth/user/passwd/{algorithm}"
    async with hyperhttp.Client(auth=DigestAuth("user", "passwd")) as client:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        assert response.json() == {"authenticated": True, "user": "user"}


REALM_UTF8 = "B\u00fcro M\u00fcnchen".encode()  # as the server sends it: UTF-8 bytes


def _raw_digest_answer(head: bytes, password: bytes) -> bytes:
    """The status line and fields for one request to a Digest server whose
    realm is UTF-8 on the wire; the answer is checked over the raw bytes."""
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].split(b" ", 2)
    values = [v.strip() for n, _, v in (ln.partition(b":") for ln in lines[1:])
              if n.strip().lower() == b"authorization"]
    challenge = (b'WWW-Authenticate: Digest realm="' + REALM_UTF8
                 + b'", nonce="n0", qop="auth", algorithm=SHA-256\r\n')
    if not values:
        return b"HTTP/1.1 401 Unauthorized\r\n" + challenge
    text = values[0].decode("latin-1").removeprefix("Digest ")
    p = {k: v.encode("latin-1") for k, v in parse_keqv_list(parse_http_list(text)).items()}

    def h(*fields: bytes) -> bytes:
        return hashlib.sha256(b":".join(fields)).hexdigest().encode()

    ha1 = h(p["username"], REALM_UTF8, password)
    ha2 = h(method, target)
    expected = h(ha1, b"n0", p["nc"], p["cnonce"], b"auth", ha2)
    if p["realm"] == REALM_UTF8 and p["uri"] == target and p["response"] == expected:
        return b"HTTP/1.1 200 OK\r\n"
    return b"HTTP/1.1 403 Forbidden\r\n"


async def test_digest_non_ascii_realm_at_a_raw_server(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    """The realm's UTF-8 bytes reach the client latin-1-decoded; the hash must
    cover the bytes themselves, and the header must echo them unchanged."""
    password = "p\u00e4ss w\u00f6rd"
    statuses: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await read_head(reader):
            answer = _raw_digest_answer(head, password.encode())
            statuses.append(answer.split(b" ", 2)[1])
            writer.write(answer + b"Content-Length: 0\r\n\r\n")
            await writer.drain()

    server = raw_server(handler)
    async with hyperhttp.Client(auth=DigestAuth("u", password), http2=False) as client:
        first = await client.get(server.url + "/x?q=1")
        second = await client.get(server.url + "/y")  # pre-emptive, nc=2
    assert (first.status_code, second.status_code) == (200, 200)
    assert statuses == [b"401", b"200", b"200"]
    assert server.handler_errors == []


# --- custom schemes -----------------------------------------------------------------


class ApiKeyAuth(Auth):
    def __init__(self, key: str) -> None:
        self._key = key
        self.flows = 0

    def auth_flow(self, request: Request) -> AuthFlow:
        self.flows += 1
        request.headers["X-API-Key"] = self._key
        yield request


class TokenChallengeAuth(Auth):
    """Sends nothing first; on a 401 reads a token from the response body
    (hence `requires_response_body`) and retries against /echo."""

    requires_response = True
    requires_response_body = True

    def __init__(self) -> None:
        self.seen_bodies: list[bytes] = []

    def auth_flow(self, request: Request) -> AuthFlow:
        response = yield request
        self.seen_bodies.append(response.content)
        if response.status_code == 401:
            request.headers["Authorization"] = "Token " + response.text.split()[0]
            request.url = request.url.copy_with(path="/echo")
            yield request


class HeadOnlyAuth(Auth):
    """requires_response but not the body: the flow gets the head only."""

    requires_response = True

    def __init__(self) -> None:
        self.body_was_read: list[bool] = []

    def auth_flow(self, request: Request) -> AuthFlow:
        response = yield request
        self.body_was_read.append(has_body(response))


def has_body(response: Response) -> bool:
    """Whether the response body has been read into memory."""
    try:
        return response.content is not None
    except hyperhttp.StreamConsumed:
        return False


class BodySigningAuth(Auth):
    """HMAC over the body: needs `requires_request_body`."""

    requires_request_body = True

    def auth_flow(self, request: Request) -> AuthFlow:
        mac = hmac.new(b"key", request.content, hashlib.sha256).hexdigest()
        request.headers["X-Body-MAC"] = mac
        yield request


async def test_custom_one_shot_scheme(loop_name: str, http_server: ServerHandle) -> None:
    auth = ApiKeyAuth("k-123")
    async with hyperhttp.Client(auth=auth, http2=False) as client:
        response = await client.get(http_server.url + "/echo")
        bare = await client.get(http_server.url + "/echo", auth=None)
    assert seen(response)["x-api-key"] == ["k-123"]
    assert "x-api-key" not in seen(bare)
    assert auth.flows == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_challenge_scheme_with_response_body(
    loop_name: str, http_server: ServerHandle, stream: bool
) -> None:
    auth = TokenChallengeAuth()
    async with hyperhttp.Client(auth=auth, http2=False) as client:
        if stream:
            async with client.stream("GET", http_server.url + "/status/401") as response:
                await response.aread()
        else:
            response = await client.get(http_server.url + "/status/401")
        assert pool_is_idle(client)
    assert response.status_code == 200
    # /status/401 answers "401 Unauthorized\n"; its first word became the token.
    assert authorization(response) == "Token 401"
    # The flow read the 401's body, and the connection still went back idle.
    assert auth.seen_bodies == [b"401 Unauthorized\n"]


async def test_flow_without_requires_response_body_gets_the_head(
    loop_name: str, http_server: ServerHandle
) -> None:
    auth = HeadOnlyAuth()
    url = http_server.url + "/bytes/100"
    async with hyperhttp.Client(auth=auth, http2=False) as client, \
            client.stream("GET", url) as response:
        body = await response.aread()
    assert auth.body_was_read == [False]
    assert len(body) == 100


async def test_requires_request_body_reads_a_streamed_body(
    loop_name: str, http_server: ServerHandle
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"signed ", b"world"):
            yield part

    async with hyperhttp.Client(auth=BodySigningAuth(), http2=False) as client:
        response = await client.post(http_server.url + "/echo", content=chunks())
    assert response.status_code == 200
    body = response.json()
    assert body["body"] == "hello signed world"
    expected = hmac.new(b"key", b"hello signed world", hashlib.sha256).hexdigest()
    assert seen(response)["x-body-mac"] == [expected]


# --- redirects never carry credentials to another origin -----------------------------


@pytest.mark.parametrize(
    "auth",
    [("alice", "s3cret"), BearerAuth("abc"), DigestAuth(USER, PASSWORD)],
    ids=["basic", "bearer", "digest"],
)
@pytest.mark.parametrize("status", [302, 307])
async def test_cross_origin_redirect_drops_client_auth(
    loop_name: str, http_server: ServerHandle, auth: Any, status: int
) -> None:
    target = other_origin(http_server) + "/echo"
    async with hyperhttp.Client(auth=auth, follow_redirects=True, http2=False) as client:
        response = await client.get(redirect_to(http_server, target, status))
        assert str(response.url) == target
        assert authorization(response) is None
        assert [r.status_code for r in response.history] == [status]
        # Same-origin redirect: credentials do follow (Basic and Bearer are
        # pre-emptive; Digest has no challenge from /echo to answer).
        same = await client.get(redirect_to(http_server, "/echo", status))
        if not isinstance(auth, DigestAuth):
            assert authorization(same) is not None


async def test_cross_origin_redirect_does_not_run_the_flow(
    loop_name: str, http_server: ServerHandle
) -> None:
    auth = ApiKeyAuth("k-secret")
    target = other_origin(http_server) + "/echo"
    async with hyperhttp.Client(auth=auth, follow_redirects=True, http2=False) as client:
        response = await client.get(redirect_to(http_server, target))
    assert auth.flows == 1  # the first hop only
    assert "x-api-key" not in seen(response)


async def test_cross_origin_redirect_drops_url_credentials(
    loop_name: str, http_server: ServerHandle
) -> None:
    target = other_origin(http_server) + "/echo"
    url = redirect_to(http_server, target).replace("http://", "http://alice:s3cret@")
    async with hyperhttp.Client(follow_redirects=True, http2=False) as client:
        response = await client.get(url)
    assert authorization(response) is None


# --- credentials in the URL -----------------------------------------------------------


async def test_url_credentials_become_basic_auth(
    loop_name: str, http_server: ServerHandle
) -> None:
    url = http_server.url.replace("http://", "http://alice:s3cret@") + "/echo"
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(url)
        encoded = await client.get(
            http_server.url.replace("http://", "http://al%20ice:p%40ss%3A@") + "/echo"
        )
    assert authorization(response) == BASIC_ALICE
    assert authorization(encoded) == "Basic YWwgaWNlOnBAc3M6"  # "al ice:p@ss:"
    for r in (response, encoded):
        assert r.url.username is None and r.url.password is None
        assert "s3cret" not in str(r.url) and "p%40ss" not in str(r.url)
        assert "@" not in r.json()["headers"][0][1]  # Host carries no userinfo


async def test_url_credentials_from_base_url(loop_name: str, http_server: ServerHandle) -> None:
    base = http_server.url.replace("http://", "http://alice:s3cret@")
    async with hyperhttp.Client(base_url=base, http2=False) as client:
        assert "s3cret" not in repr(client)
        response = await client.get("/echo")
    assert authorization(response) == BASIC_ALICE


async def test_explicit_auth_wins_over_url_credentials(
    loop_name: str, http_server: ServerHandle
) -> None:
    url = http_server.url.replace("http://", "http://alice:s3cret@") + "/echo"
    async with hyperhttp.Client(auth=BearerAuth("tok"), http2=False) as client:
        response = await client.get(url)
    assert authorization(response) == "Bearer tok"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_url_password_never_in_errors_reprs_or_logs(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "pw-Zx81Qq"
    url = f"http://alice:{secret}@127.0.0.1:{_closed_port()}/path"
    caplog.set_level(logging.DEBUG)
    request = hyperhttp.Request("GET", url)
    assert secret not in repr(request) and secret not in repr(request.url)
    policy = RetryPolicy(
        max_retries=1,
        backoff_strategy=ExponentialBackoff(base=0.001, max_backoff=0.001, jitter=False),
    )
    async with hyperhttp.Client(retry=policy) as client:
        with pytest.raises(hyperhttp.RetryError) as retried:
            await client.get(url)
        with pytest.raises(hyperhttp.ConnectError) as single:
            await client.get(url, retry=False)
    for exc in (retried.value, retried.value.original_exception, single.value):
        assert exc is not None
        assert secret not in str(exc) and secret not in repr(exc)
        if isinstance(exc, hyperhttp.HyperHTTPError) and exc.has_request:
            assert secret not in str(exc.request.url)
    assert secret not in caplog.text
    assert all(secret not in str(record.args) for record in caplog.records)


# --- an auth flow that stops must give its connection back -----------------------


class FailsAfterResponseAuth(Auth):
    """A flow that raises on the first response (a token endpoint down, say)."""

    requires_response = True

    def auth_flow(self, request: Request) -> AuthFlow:
        yield request
        raise ValueError("no token for this response")


async def _one_shot_body() -> AsyncIterator[bytes]:
    yield b"sent once, cannot be sent again"


async def test_stream_with_digest_and_one_shot_body_gives_its_connection_back(
    loop_name: str, digest_server: DigestServer
) -> None:
    """Digest needs the request sent twice; a generator body cannot be. The
    flow refuses with StreamConsumed, and the 401 it was answering must not
    keep the only connection: the next request gets it at once."""
    timeout = hyperhttp.Timeout(5.0, pool=1.0)
    async with hyperhttp.Client(max_connections=1, timeout=timeout) as client:
        with pytest.raises(hyperhttp.StreamConsumed):
            async with client.stream("POST", f"{digest_server.url}/x", content=_one_shot_body(),
                                     auth=DigestAuth(USER, PASSWORD)):
                pytest.fail("the flow should have refused before any response was given out")
        assert pool_is_idle(client)
        again = await client.get(f"{digest_server.url}/x", auth=DigestAuth(USER, PASSWORD))
        assert again.status_code == 200


@pytest.mark.parametrize("streamed", [True, False])
async def test_failing_auth_flow_gives_its_connection_back(
    loop_name: str, http_server: ServerHandle, streamed: bool
) -> None:
    timeout = hyperhttp.Timeout(5.0, pool=1.0)
    url = f"{http_server.url}/echo"
    async with hyperhttp.Client(max_connections=1, timeout=timeout) as client:
        with pytest.raises(ValueError, match="no token"):
            if streamed:
                async with client.stream("GET", url, auth=FailsAfterResponseAuth()):
                    pytest.fail("the flow raised: no response should be given out")
            else:
                await client.get(url, auth=FailsAfterResponseAuth())
        assert pool_is_idle(client)
        assert (await client.get(url)).status_code == 200
