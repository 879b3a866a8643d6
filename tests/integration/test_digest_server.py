"""DigestAuth against independent servers on loopback.

Two servers check the client's computation: httpbin (a published
implementation; MD5 and SHA-256, qop auth) and `tests.support.digest_server`
(written from RFC 7616 for everything httpbin lacks: SHA-512-256, -sess,
userhash, username*, nonce-count replay checks). hyperhttp's own transport is
not used here: httpx carries the requests and the auth flow is driven by hand
the way the client drives it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import httpbin  # type: ignore[import-untyped]
import httpx
import pytest
from werkzeug.serving import make_server

from hyperhttp._auth import Auth, DigestAuth
from hyperhttp._models import Request, Response
from tests.support.digest_server import DigestServer

ALGORITHMS = ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"]
USER, PASSWORD = "Mufasa", "Circle of Life"


@pytest.fixture(scope="module")
def server() -> Iterator[DigestServer]:
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


@dataclass
class Attempt:
    """One network attempt: what was sent and what came back."""

    authorization: str  # "" when none was sent
    status_code: int
    www_authenticate: list[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _step(flow: Generator[Request, Response, None], sent: Request, r: httpx.Response) -> Any:
    """Record an attempt and hand its response to the flow: the next
    request, or None when the flow is done."""
    response = Response(r.status_code, headers=r.headers.multi_items(), request=sent)
    try:
        return flow.send(response)
    except StopIteration:
        return None


def _attempt(sent: Request, r: httpx.Response) -> Attempt:
    return Attempt(
        sent.headers.get("Authorization") or "",
        r.status_code,
        r.headers.get_list("www-authenticate"),
        r.content,
    )


def run(auth: Auth, url: str, client: httpx.Client, method: str = "GET") -> list[Attempt]:
    """Drive one auth flow over httpx; every attempt, in order."""
    flow = auth.auth_flow(Request(method, url))
    sent: Request | None = next(flow)
    attempts: list[Attempt] = []
    for _ in range(5):
        assert sent is not None
        r = client.request(sent.method, str(sent.url), headers=sent.headers.multi_items())
        attempts.append(_attempt(sent, r))
        sent = _step(flow, sent, r)
        if sent is None:
            return attempts
    raise AssertionError("flow did not end")


@pytest.mark.parametrize("userhash", [False, True])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm(server: DigestServer, algorithm: str, userhash: bool) -> None:
    auth = DigestAuth(USER, PASSWORD)
    query = f"alg={algorithm}&userhash={int(userhash)}"
    with httpx.Client(timeout=10) as client:
        first = run(auth, f"{server.url}/dir/index.html?{query}", client)
        assert [r.status_code for r in first] == [401, 200]
        body = first[-1].json()
        assert (body["user"], body["algorithm"], body["nc"]) == (USER, algorithm, 1)
        # The next request goes pre-emptively with nc=2 on the same nonce.
        second = run(auth, f"{server.url}/other?{query}", client, method="POST")
        assert [r.status_code for r in second] == [200]
        assert second[0].json()["nc"] == 2
        assert second[0].json()["nonce"] == body["nonce"]
    sent = second[0].authorization
    assert ("userhash=true" in sent) is userhash
    assert (f'username="{USER}"' in sent) is not userhash


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "none"])
def test_rfc2069_server_without_qop(server: DigestServer, algorithm: str) -> None:
    auth = DigestAuth(USER, PASSWORD)
    with httpx.Client(timeout=10) as client:
        responses = run(auth, f"{server.url}/x?alg={algorithm}&qop=none", client)
    assert [r.status_code for r in responses] == [401, 200]
    assert "nc=" not in responses[-1].authorization


@pytest.mark.parametrize("combine", ["0", "1"])
def test_strongest_of_several_challenges(server: DigestServer, combine: str) -> None:
    auth = DigestAuth(USER, PASSWORD)
    url = f"{server.url}/x?alg=MD5,SHA-512-256-sess,SHA-256&combine={combine}"
    with httpx.Client(timeout=10) as client:
        responses = run(auth, url, client)
    assert len(responses[0].www_authenticate) == (1 if combine == "1" else 3)
    assert [r.status_code for r in responses] == [401, 200]
    assert responses[-1].json()["algorithm"] == "SHA-512-256-sess"


def test_non_ascii_username(server: DigestServer) -> None:
    user, password = "J\u00e4s\u00f8n Doe", "Secret, or not?"
    with httpx.Client(timeout=10) as client:
        plain = run(DigestAuth(user, password), f"{server.url}/doe.json?alg=SHA-256", client)
        hashed = run(
            DigestAuth(user, password), f"{server.url}/doe.json?alg=SHA-256&userhash=1", client
        )
    assert plain[-1].status_code == 200 and plain[-1].json()["user"] == user
    assert "username*=UTF-8''J%C3%A4s%C3%B8n%20Doe" in plain[-1].authorization
    assert hashed[-1].status_code == 200 and hashed[-1].json()["user"] == user


def test_stale_nonce_is_renewed_once(server: DigestServer) -> None:
    auth = DigestAuth(USER, PASSWORD)
    url = f"{server.url}/s?alg=SHA-256&stale_after=1"
    with httpx.Client(timeout=10) as client:
        assert [r.status_code for r in run(auth, url, client)] == [401, 200]
        renewed = run(auth, url, client)
    assert [r.status_code for r in renewed] == [401, 200]
    assert "stale=true" in renewed[0].www_authenticate[0]
    assert renewed[-1].json()["nc"] == 1  # fresh nonce, count reset


def test_auth_int_only_and_wrong_password(server: DigestServer) -> None:
    with httpx.Client(timeout=10) as client:
        only_int = run(DigestAuth(USER, PASSWORD), f"{server.url}/i?qop=auth-int", client)
        both = run(DigestAuth(USER, PASSWORD), f"{server.url}/i?qop=auth,auth-int", client)
        wrong = run(DigestAuth(USER, "nope"), f"{server.url}/w?alg=SHA-256", client)
    assert [r.status_code for r in only_int] == [401]
    assert [r.status_code for r in both] == [401, 200]
    assert [r.status_code for r in wrong] == [401, 401]
    assert wrong[-1].json()["reason"] == "wrong response"


async def test_concurrent_requests_share_one_instance(server: DigestServer, loop_name: str) -> None:
    auth = DigestAuth(USER, PASSWORD)
    url = f"{server.url}/c?alg=SHA-512-256"

    async def one(client: httpx.AsyncClient, i: int) -> list[Any]:
        flow = auth.auth_flow(Request("GET", f"{url}&i={i}"))
        sent: Request | None = next(flow)
        statuses: list[Any] = []
        for _ in range(5):
            assert sent is not None
            r = await client.get(str(sent.url), headers=sent.headers.multi_items())
            statuses.append(r.status_code)
            sent = _step(flow, sent, r)
            if sent is None:
                return [*statuses, r.json()]
        raise AssertionError("flow did not end")

    async with httpx.AsyncClient(timeout=10) as client:
        primed = await one(client, 0)
        assert primed[:-1] == [401, 200]
        results = await asyncio.wait_for(
            asyncio.gather(*(one(client, i) for i in range(1, 41))), timeout=60
        )
    # Every request went pre-emptively, each with its own nc, none replayed.
    assert all(r[:-1] == [200] for r in results)
    assert sorted(r[-1]["nc"] for r in results) == list(range(2, 42))


# --- httpbin: a published server implementation ------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_httpbin_digest(httpbin_url: str, algorithm: str) -> None:
    auth = DigestAuth("user", "passwd")
    with httpx.Client(timeout=10) as client:
        responses = run(auth, f"{httpbin_url}/digest-auth/auth/user/passwd/{algorithm}", client)
        again = run(auth, f"{httpbin_url}/digest-auth/auth/user/passwd/{algorithm}", client)
    assert [r.status_code for r in responses] == [401, 200]
    assert responses[-1].json() == {"authenticated": True, "user": "user"}
    assert [r.status_code for r in again] == [200]
    assert "nc=00000002" in again[0].authorization


def test_httpbin_auth_int_is_not_answered(httpbin_url: str) -> None:
    with httpx.Client(timeout=10) as client:
        responses = run(
            DigestAuth("user", "passwd"), f"{httpbin_url}/digest-auth/auth-int/user/passwd", client
        )
    assert [r.status_code for r in responses] == [401]


def test_httpbin_always_stale_is_retried_once(httpbin_url: str) -> None:
    # stale_after=0 makes httpbin answer every authorized request with
    # stale=true (it tracks this in a cookie, which httpx's jar carries).
    with httpx.Client(timeout=10) as client:
        responses = run(
            DigestAuth("user", "passwd"),
            f"{httpbin_url}/digest-auth/auth/user/passwd/MD5/0",
            client,
        )
    assert [r.status_code for r in responses] == [401, 401, 401]
    assert "stale=true" in responses[-1].www_authenticate[0].lower()
    assert responses[1].authorization != responses[2].authorization  # new nonce
