"""Redirects and cookies through the Client, against a real HTTP/1.1 server.

`http://127.0.0.1:PORT` and `http://localhost:PORT` reach the same server but
are different origins, which is how cross-origin redirects are tested on one
server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest

import hyperhttp
from tests.support.servers import ServerHandle

CREDENTIALS = {
    "Authorization": "Bearer secret-token",
    "Proxy-Authorization": "Basic cHJveHk6cGFzcw==",
    "Cookie": "session=abc",
}


def seen_headers(response: hyperhttp.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


def redirect_to(server: ServerHandle, target: str, status: int = 302) -> str:
    return f"{server.url}/redirect-to?url={quote(target, safe='')}&status={status}"


def other_origin(server: ServerHandle) -> str:
    """The same server under another origin (localhost instead of 127.0.0.1)."""
    return server.url.replace("127.0.0.1", "localhost")


def nothing_in_use(client: hyperhttp.Client) -> bool:
    return all(entry.get("in_use", 0) == 0 for entry in client.get_pool_stats().values())


# --- following ----------------------------------------------------------------


async def test_redirects_not_followed_by_default(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + "/redirect/2")
        assert response.status_code == 302
        assert response.is_redirect
        assert response.headers["location"] == "/redirect/1"
        assert response.history == []
        assert nothing_in_use(client)
    assert http_server.stats.requests == 1


async def test_follow_redirects_on_client(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.get(http_server.url + "/redirect/3?x=1")
        assert response.status_code == 200
        assert response.json()["path"] == "/echo"
        assert response.json()["query"] == "x=1"
        assert str(response.url) == http_server.url + "/echo?x=1"
        assert [r.status_code for r in response.history] == [302, 302, 302]
        assert [r.url.path for r in response.history] == [
            "/redirect/3", "/redirect/2", "/redirect/1"
        ]
        assert nothing_in_use(client)
        # Per request, following can be turned off again.
        single = await client.get(http_server.url + "/redirect/1", follow_redirects=False)
        assert single.status_code == 302
    assert http_server.stats.connection_count == 1


async def test_follow_redirects_per_request(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + "/redirect/2", follow_redirects=True)
    assert response.status_code == 200
    assert len(response.history) == 2


# RFC 9110 section 15.4: fields about the content, which a GET without a body
# must not carry (Content-Digest is the RFC 9530 successor of Digest).
CONTENT_FIELDS = {
    "Content-Encoding": "gzip",
    "Content-Language": "de",
    "Content-Location": "/form/draft",
    "Digest": "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
    "Content-Digest": "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
    "Last-Modified": "Tue, 15 Nov 1994 12:45:26 GMT",
}


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_change_to_get_drops_every_content_field(
    loop_name: str, http_server: ServerHandle, status: int
) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.post(
            redirect_to(http_server, "/echo", status), content=b"\x1f\x8b not really gzip",
            headers={**CONTENT_FIELDS, "Content-Type": "application/json", "X-Kept": "yes"},
        )
    seen = response.json()
    assert seen["method"] == "GET"
    assert seen["body_length"] == 0
    headers = seen_headers(response)
    assert sorted({name.lower() for name in CONTENT_FIELDS} & headers.keys()) == []
    for framing in ("content-type", "content-length", "transfer-encoding"):
        assert framing not in headers
    assert headers["x-kept"] == ["yes"]  # only the content's own fields go


async def test_307_keeps_the_content_fields(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.post(
            redirect_to(http_server, "/echo", 307), content=b"payload", headers=CONTENT_FIELDS
        )
    headers = seen_headers(response)
    assert response.json()["body"] == "payload"
    for name, value in CONTENT_FIELDS.items():
        assert headers[name.lower()] == [value]


async def test_302_keeps_put(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.put(redirect_to(http_server, "/echo", 302), content=b"body")
    assert response.json()["method"] == "PUT"
    assert response.json()["body"] == "body"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_303_turns_into_get(loop_name: str, http_server: ServerHandle, method: str) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.request(method, redirect_to(http_server, "/echo", 303),
                                        content=b"payload")
    assert response.json()["method"] == "GET"
    assert response.json()["body_length"] == 0


@pytest.mark.parametrize("status", [307, 308])
async def test_307_308_keep_method_and_body(
    loop_name: str, http_server: ServerHandle, status: int
) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.post(
            redirect_to(http_server, "/echo", status), json={"keep": "me"}
        )
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["body"] == '{"keep":"me"}'
    headers = seen_headers(response)
    assert headers["content-type"] == ["application/json"]
    assert headers["content-length"] == [str(len('{"keep":"me"}'))]
    assert response.history[0].status_code == status


async def test_relative_location(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.get(redirect_to(http_server, "echo/rel?q=2"))
        assert response.json()["path"] == "/echo/rel"
        assert response.json()["query"] == "q=2"
        response = await client.get(redirect_to(http_server, "../echo/up"))
        assert response.json()["path"] == "/echo/up"


@pytest.mark.parametrize(
    "location",
    [
        "http://[::1/next",  # urllib cannot split these (unbalanced brackets)
        "//[zz/",
        "http://a]b/",
        "http://",  # '//' but no host: must not fall back to this host and loop
        "//",
        "http:///next",
    ],
)
async def test_unusable_location_is_reported_at_once(
    loop_name: str, http_server: ServerHandle, location: str
) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True, max_redirects=5) as client:
        with pytest.raises(hyperhttp.RemoteProtocolError, match="has an invalid Location"):
            await client.get(redirect_to(http_server, location))
        assert nothing_in_use(client)
    assert http_server.stats.requests == 1


async def test_credentials_in_a_location_are_dropped(
    loop_name: str, http_server: ServerHandle
) -> None:
    # Hop 1 names user:password in its Location; hop 2 is relative to it.
    planted = http_server.url.replace("http://", "http://planted:s3cr3t@")
    hop = planted + "/redirect-to?url=" + quote("echo?x=1", safe="")
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.get(redirect_to(http_server, hop))
    assert str(response.url) == http_server.url + "/echo?x=1"
    for r in [*response.history[1:], response]:
        assert r.url.username is None and r.url.password is None
        assert "s3cr3t" not in str(r.url) and "planted" not in str(r.url)
    headers = seen_headers(response)
    assert "authorization" not in headers  # never turned into credentials
    assert headers["host"] == [http_server.url.split("/")[2]]


async def test_max_redirects(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True, max_redirects=2) as client:
        ok = await client.get(http_server.url + "/redirect/2")
        assert ok.status_code == 200
        with pytest.raises(hyperhttp.TooManyRedirects) as caught:
            await client.get(http_server.url + "/redirect/5")
        assert "127.0.0.1" in str(caught.value)
        assert nothing_in_use(client)
        assert (await client.get(http_server.url + "/echo")).status_code == 200


async def test_max_redirects_zero_refuses_any_redirect(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True, max_redirects=0) as client:
        with pytest.raises(hyperhttp.TooManyRedirects):
            await client.get(http_server.url + "/redirect/1")


# --- credentials across origins ------------------------------------------------


async def test_cross_origin_redirect_drops_credentials(
    loop_name: str, http_server: ServerHandle
) -> None:
    target = other_origin(http_server) + "/echo"
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.get(redirect_to(http_server, target), headers=CREDENTIALS)
    assert str(response.url) == target
    headers = seen_headers(response)
    assert "authorization" not in headers
    assert "proxy-authorization" not in headers
    assert "cookie" not in headers
    assert headers["host"] == [target.split("/")[2]]


async def test_cross_origin_redirect_drops_auth_argument(
    loop_name: str, http_server: ServerHandle
) -> None:
    target = other_origin(http_server) + "/echo"
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.get(
            redirect_to(http_server, target), auth=hyperhttp.BasicAuth("user", "pass")
        )
        assert "authorization" not in seen_headers(response)
        same = await client.get(
            redirect_to(http_server, "/echo"), auth=hyperhttp.BasicAuth("user", "pass")
        )
        assert seen_headers(same)["authorization"] == ["Basic dXNlcjpwYXNz"]


async def test_same_origin_redirect_keeps_credentials(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.get(redirect_to(http_server, "/echo"), headers=CREDENTIALS)
    headers = seen_headers(response)
    assert headers["authorization"] == [CREDENTIALS["Authorization"]]
    assert headers["proxy-authorization"] == [CREDENTIALS["Proxy-Authorization"]]
    assert headers["cookie"] == [CREDENTIALS["Cookie"]]


async def test_307_with_single_use_body_raises_stream_consumed(
    loop_name: str, http_server: ServerHandle
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"only "
        yield b"once"

    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        with pytest.raises(hyperhttp.StreamConsumed):
            await client.post(redirect_to(http_server, "/echo", 307), content=body())
        assert nothing_in_use(client)
        assert (await client.get(http_server.url + "/echo")).status_code == 200
    # Only the first request reached the server: no short body went to /echo.
    assert http_server.stats.requests == 2


# --- cookies --------------------------------------------------------------------


async def test_client_cookies_are_sent(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, cookies={"a": "1", "b": "2"}) as client:
        response = await client.get(http_server.url + "/cookies")
    assert response.json()["cookies"] == {"a": "1", "b": "2"}
    assert len(response.json()["cookie_headers"]) == 1


async def test_set_cookie_is_stored_and_sent_back(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        first = await client.get(http_server.url + "/cookies/set", params={"k": "v", "n": "42"})
        assert first.headers.get_list("set-cookie") == ["k=v; Path=/", "n=42; Path=/"]
        assert client.cookies.get("k") == "v"
        second = await client.get(http_server.url + "/cookies")
        assert second.json()["cookies"] == {"k": "v", "n": "42"}
        await client.get(http_server.url + "/cookies/delete", params={"k": ""})
        third = await client.get(http_server.url + "/cookies")
        assert third.json()["cookies"] == {"n": "42"}


async def test_cookie_set_during_redirect_is_sent_on_next_hop(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        response = await client.get(
            http_server.url + "/cookies/set", params={"hop": "yes", "redirect": "1"}
        )
    assert response.url.path == "/cookies"
    assert response.json()["cookies"] == {"hop": "yes"}


async def test_per_request_cookies(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, cookies={"jar": "1"}) as client:
        response = await client.get(http_server.url + "/cookies", cookies={"extra": "2"})
        assert response.json()["cookies"] == {"jar": "1", "extra": "2"}
        # Per-request cookies are not stored.
        later = await client.get(http_server.url + "/cookies")
        assert later.json()["cookies"] == {"jar": "1"}


async def test_cookies_not_sent_to_another_host(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        await client.get(http_server.url + "/cookies/set", params={"host_only": "1"})
        here = await client.get(http_server.url + "/cookies")
        assert here.json()["cookies"] == {"host_only": "1"}
        there = await client.get(other_origin(http_server) + "/cookies")
        assert there.json()["cookies"] == {}
        assert there.json()["cookie_headers"] == []


async def test_cross_origin_redirect_sends_only_target_cookies(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False, follow_redirects=True) as client:
        await client.get(http_server.url + "/cookies/set", params={"ip": "1"})
        await client.get(other_origin(http_server) + "/cookies/set", params={"name": "2"})
        response = await client.get(redirect_to(http_server, other_origin(http_server)
                                                 + "/cookies"))
    assert response.json()["cookies"] == {"name": "2"}
