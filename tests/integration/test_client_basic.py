"""The core Client against a real HTTP/1.1 server (hypercorn on loopback).

What the server saw is asserted through `/echo` (method, target, headers and
body as received) and the server's `stats` (distinct TCP connections), so a
client that only looks right from its own side fails here.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import pytest

import hyperhttp
from tests.support.app import FIXED_JSON, TEXT_SAMPLE, pattern_bytes
from tests.support.servers import ServerHandle

VERBS = ["GET", "HEAD", "OPTIONS", "DELETE", "POST", "PUT", "PATCH"]


def seen_headers(response: hyperhttp.Response) -> dict[str, list[str]]:
    """The request headers the echo endpoint received, by lower-case name."""
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


def nothing_in_use(client: hyperhttp.Client) -> bool:
    return all(entry.get("in_use", 0) == 0 for entry in client.get_pool_stats().values())


# --- verbs and URLs ------------------------------------------------------------


@pytest.mark.parametrize("method", VERBS)
async def test_every_verb_reaches_the_server(
    loop_name: str, http_server: ServerHandle, method: str
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        verb = getattr(client, method.lower())
        response = await verb(http_server.url + "/echo/verb")
        assert response.status_code == 200
        assert response.request.method == method
        if method == "HEAD":
            assert response.content == b""
            assert int(response.headers["content-length"]) > 0
        else:
            assert response.json()["method"] == method
            assert response.json()["path"] == "/echo/verb"
    assert http_server.stats.requests == 1


async def test_request_with_custom_method(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.request("propfind", http_server.url + "/echo")
    assert response.json()["method"] == "PROPFIND"


async def test_params_merge_client_request_and_url(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False, params={"c": "1"}) as client:
        response = await client.get(
            http_server.url + "/echo?u=0", params=[("r", "a"), ("r", "b"), ("sp", "x y&z")]
        )
    query = response.json()["query"]
    pairs = parse_qsl(query, keep_blank_values=True)
    assert pairs == [("u", "0"), ("c", "1"), ("r", "a"), ("r", "b"), ("sp", "x y&z")]
    assert response.request.url.query == query


async def test_params_mapping_with_list_values(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(
            http_server.url + "/echo", params={"k": ["1", "2"], "flag": True, "n": 3}
        )
    pairs = parse_qsl(response.json()["query"], keep_blank_values=True)
    assert pairs == [("k", "1"), ("k", "2"), ("flag", "true"), ("n", "3")]


@pytest.mark.parametrize(
    ("base_path", "request_path", "expected"),
    [
        ("/echo", "sub", "/echo/sub"),
        ("/echo/", "sub", "/echo/sub"),
        ("/echo", "/sub", "/echo/sub"),
        ("/echo/", "/sub/leaf?q=1", "/echo/sub/leaf"),
    ],
)
async def test_base_url_joining(
    loop_name: str, http_server: ServerHandle, base_path: str, request_path: str, expected: str
) -> None:
    async with hyperhttp.Client(http2=False, base_url=http_server.url + base_path) as client:
        response = await client.get(request_path)
    assert response.json()["path"] == expected
    if "?" in request_path:
        assert response.json()["query"] == "q=1"


async def test_absolute_url_overrides_base_url(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False, base_url="http://127.0.0.1:9/unused/") as client:
        response = await client.get(http_server.url + "/echo/abs")
    assert response.json()["path"] == "/echo/abs"


async def test_relative_url_without_base_url_is_invalid(loop_name: str) -> None:
    async with hyperhttp.Client(http2=False) as client:
        with pytest.raises(hyperhttp.InvalidURL):
            await client.get("/echo")


# --- headers -------------------------------------------------------------------


async def test_default_headers(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + "/echo")
    headers = seen_headers(response)
    assert headers["user-agent"] == [f"hyperhttp/{hyperhttp.__version__}"]
    encodings = {e.strip() for e in headers["accept-encoding"][0].split(",")}
    assert {"gzip", "deflate", "br", "zstd"} <= encodings
    assert headers["host"] == [http_server.url.removeprefix("http://")]


async def test_user_agent_and_header_overrides(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(
        http2=False, user_agent="my-service/1.2.3", headers={"X-Client": "c", "X-Both": "client"}
    ) as client:
        response = await client.get(
            http_server.url + "/echo", headers=[("X-Both", "request"), ("X-Multi", "1"),
                                                ("X-Multi", "2")]
        )
    headers = seen_headers(response)
    assert headers["user-agent"] == ["my-service/1.2.3"]
    assert headers["x-client"] == ["c"]
    assert headers["x-both"] == ["request"]
    assert headers["x-multi"] == ["1", "2"]


async def test_settings_assigned_on_a_live_client_reach_the_server(
    loop_name: str, http_server: ServerHandle
) -> None:
    """Plain values assigned to a live client (as the docs allow) used to
    fail the next request with an AttributeError."""
    async with hyperhttp.Client(http2=False, user_agent="svc/1") as client:
        client.base_url = http_server.url + "/echo"
        client.headers = {"X-A": "1"}
        client.auth = ("user", "pw")
        client.cookies = {"session": "abc"}
        client.timeout = 5.0
        response = await client.get("live")
    assert response.json()["path"] == "/echo/live"
    headers = seen_headers(response)
    assert headers["x-a"] == ["1"]
    assert headers["user-agent"] == ["svc/1"]  # the defaults stay under the new headers
    assert headers["accept"] == ["*/*"]
    assert headers["authorization"] == ["Basic dXNlcjpwdw=="]
    assert headers["cookie"] == ["session=abc"]
    assert response.request.extensions["timeout"] == hyperhttp.Timeout(5.0)


@pytest.mark.parametrize("value", [5, None])
async def test_header_value_of_another_type_names_the_header(
    loop_name: str, http_server: ServerHandle, value: object
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        with pytest.raises(TypeError, match="header 'X-N' value must be str or bytes"):
            await client.get(http_server.url + "/echo", headers={"X-N": value})
    assert http_server.stats.requests == 0


async def test_response_headers_case_insensitive_and_multi_valued(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(
            http_server.url + "/headers", params=[("X-Multi", "a"), ("X-Multi", "b")]
        )
    assert response.headers["X-MULTI"] == "a, b"
    assert response.headers.get_list("x-multi") == ["a", "b"]
    assert "x-Multi" in response.headers
    assert response.headers["content-type"] == response.headers["Content-Type"]


# --- request bodies ------------------------------------------------------------


async def test_json_body(loop_name: str, http_server: ServerHandle) -> None:
    payload = {"a": [1, 2, {"b": None}], "s": "snow ☃"}
    async with hyperhttp.Client(http2=False) as client:
        response = await client.post(http_server.url + "/echo", json=payload)
    seen = response.json()
    assert msgspec.json.decode(seen["body"].encode("latin-1")) == payload
    headers = seen_headers(response)
    assert headers["content-type"] == ["application/json"]
    assert headers["content-length"] == [str(seen["body_length"])]


async def test_form_data_body(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.post(
            http_server.url + "/echo", data={"a": "1", "b": "x y&z", "m": ["p", "q"]}
        )
    seen = response.json()
    assert parse_qsl(seen["body"]) == [("a", "1"), ("b", "x y&z"), ("m", "p"), ("m", "q")]
    assert seen_headers(response)["content-type"] == ["application/x-www-form-urlencoded"]


@pytest.mark.parametrize("content", [b"raw \x00\xff bytes", "text é ☃"])
async def test_content_bytes_and_str(
    loop_name: str, http_server: ServerHandle, content: bytes | str
) -> None:
    expected = content.encode("utf-8") if isinstance(content, str) else content
    async with hyperhttp.Client(http2=False) as client:
        response = await client.put(http_server.url + "/echo", content=content)
    seen = response.json()
    assert seen["body"].encode("latin-1") == expected
    headers = seen_headers(response)
    assert headers["content-length"] == [str(len(expected))]
    assert "transfer-encoding" not in headers


async def test_content_sync_iterable_is_chunked(loop_name: str, http_server: ServerHandle) -> None:
    def parts() -> Iterator[bytes]:
        yield b"first,"
        yield b""
        yield b"second,"
        yield b"third"

    async with hyperhttp.Client(http2=False) as client:
        response = await client.post(http_server.url + "/echo", content=parts())
    seen = response.json()
    assert seen["body"] == "first,second,third"
    headers = seen_headers(response)
    assert headers["transfer-encoding"] == ["chunked"]
    assert "content-length" not in headers


async def test_content_async_iterable_is_chunked(loop_name: str, http_server: ServerHandle) -> None:
    big = pattern_bytes(200_000)

    async def parts() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 50_000):
            await asyncio.sleep(0)
            yield big[i : i + 50_000]

    async with hyperhttp.Client(http2=False) as client:
        response = await client.post(http_server.url + "/echo", content=parts())
    seen = response.json()
    assert seen["body_length"] == len(big)
    import hashlib

    assert seen["body_sha256"] == hashlib.sha256(big).hexdigest()
    assert seen_headers(response)["transfer-encoding"] == ["chunked"]


# --- response bodies and metadata ------------------------------------------------


async def test_response_json_and_metadata(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + "/json")
    assert response.json() == FIXED_JSON
    assert response.http_version == "HTTP/1.1"
    assert response.elapsed.total_seconds() > 0
    assert str(response.url) == http_server.url + "/json"
    assert response.is_success and not response.is_redirect and not response.is_error
    assert response.raise_for_status() is response


@pytest.mark.parametrize(
    ("charset", "expected_encoding"),
    [("latin-1", "latin-1"), ("cp1252", "cp1252"), ("utf-16", "utf-16"), (None, "utf-8")],
)
async def test_text_uses_charset(
    loop_name: str, http_server: ServerHandle, charset: str | None, expected_encoding: str
) -> None:
    params = {"charset": charset} if charset else {}
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + "/text", params=params)
    assert response.encoding == expected_encoding
    assert response.text == TEXT_SAMPLE
    assert response.content == TEXT_SAMPLE.encode(charset or "utf-8")


@pytest.mark.parametrize(
    ("path", "success", "redirect", "error"),
    [
        ("/status/200", True, False, False),
        ("/status/204", True, False, False),
        ("/redirect/1", False, True, False),
        ("/status/404", False, False, True),
        ("/status/503", False, False, True),
    ],
)
async def test_status_predicates(
    loop_name: str, http_server: ServerHandle, path: str, success: bool, redirect: bool,
    error: bool,
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + path)
    assert response.is_success is success
    assert response.is_redirect is redirect
    assert response.is_error is error


@pytest.mark.parametrize("code", [404, 500])
async def test_raise_for_status_carries_request_and_response(
    loop_name: str, http_server: ServerHandle, code: int
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + f"/status/{code}")
    with pytest.raises(hyperhttp.HTTPStatusError) as caught:
        response.raise_for_status()
    assert caught.value.response is response
    assert caught.value.request is response.request
    assert str(code) in str(caught.value)
    assert f"/status/{code}" in str(caught.value)


async def test_aread_twice(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + "/bytes/3000")
        assert await response.aread() == pattern_bytes(3000)
        assert await response.aread() == pattern_bytes(3000)
        async with client.stream("GET", http_server.url + "/stream-bytes/5000") as streamed:
            first = await streamed.aread()
            assert first == pattern_bytes(5000)
            assert await streamed.aread() is first
            assert streamed.content == first


# --- streaming -------------------------------------------------------------------


async def test_stream_aiter_bytes(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client, client.stream(
        "GET", http_server.url + "/stream-bytes/300000", params={"chunk": 7000}
    ) as response:
        assert response.status_code == 200
        chunks = [chunk async for chunk in response.aiter_bytes()]
    assert len(chunks) > 1
    assert b"".join(chunks) == pattern_bytes(300_000)


async def test_stream_aiter_text_and_lines(loop_name: str, http_server: ServerHandle) -> None:
    text = "alpha\nbeta\r\ngamma café\n\ndelta"
    async with hyperhttp.Client(http2=False) as client:
        async with client.stream("GET", http_server.url + "/text",
                                 params={"text": text, "charset": "utf-8"}) as response:
            assert "".join([t async for t in response.aiter_text()]) == text
        async with client.stream("GET", http_server.url + "/text",
                                 params={"text": text, "charset": "utf-8"}) as response:
            lines = [line async for line in response.aiter_lines()]
    assert lines == ["alpha", "beta", "gamma café", "", "delta"]


async def test_stream_aiter_raw_is_not_decoded(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client, client.stream(
        "GET", http_server.url + "/gzip"
    ) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert raw[:2] == b"\x1f\x8b"
    assert msgspec.json.decode(gzip.decompress(raw))["encoding"] == "gzip"


async def test_stream_early_exit_closes_connection(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        async with client.stream(
            "GET", http_server.url + "/stream-bytes/2000000", params={"chunk": 1000}
        ) as response:
            async for _chunk in response.aiter_bytes():
                break
            assert client.get_pool_stats()[http_server.url[7:]]["in_use"] == 1
        assert nothing_in_use(client)
        # The half-read connection cannot be reused: the next request dials anew.
        second = await client.get(http_server.url + "/echo")
        assert second.status_code == 200
        assert nothing_in_use(client)
    assert http_server.stats.connection_count == 2


async def test_stream_unread_body_then_exit(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        async with client.stream("GET", http_server.url + "/bytes/500000") as response:
            assert response.status_code == 200
        assert nothing_in_use(client)
        assert (await client.get(http_server.url + "/json")).json() == FIXED_JSON


async def test_verbs_release_the_connection(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        await client.get(http_server.url + "/bytes/100000")
        origin = http_server.url[len("http://"):]
        assert client.get_pool_stats() == {origin: {"idle": 1, "in_use": 0, "total": 1}}
        await client.post(http_server.url + "/echo", content=b"x" * 1000)
        assert client.get_pool_stats() == {origin: {"idle": 1, "in_use": 0, "total": 1}}


async def test_keep_alive_reuses_one_connection(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        clients = set()
        for i in range(5):
            response = await client.post(http_server.url + "/echo", content=b"n" * i)
            clients.add(response.json()["client"])
    assert len(clients) == 1
    assert http_server.stats.connection_count == 1
    assert http_server.stats.requests == 5


# --- limits and decoding ---------------------------------------------------------


async def test_max_response_size_on_content_length(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False, max_response_size=1000) as client:
        ok = await client.get(http_server.url + "/bytes/1000")
        assert ok.content == pattern_bytes(1000)
        with pytest.raises(hyperhttp.ResponseTooLarge, match=r"127\.0\.0\.1"):
            await client.get(http_server.url + "/bytes/1001")
        assert nothing_in_use(client)


async def test_max_response_size_on_streamed_body(
    loop_name: str, http_server: ServerHandle
) -> None:
    async with hyperhttp.Client(http2=False, max_response_size=50_000) as client:
        with pytest.raises(hyperhttp.ResponseTooLarge):
            await client.get(http_server.url + "/stream-bytes/200000", params={"chunk": 10000})
        assert nothing_in_use(client)
        async with client.stream("GET", http_server.url + "/stream-bytes/200000") as response:
            with pytest.raises(hyperhttp.ResponseTooLarge):
                async for _ in response.aiter_bytes():
                    pass
        assert nothing_in_use(client)
        assert (await client.get(http_server.url + "/bytes/10")).status_code == 200


async def test_max_response_size_counts_decoded_bytes(
    loop_name: str, http_server: ServerHandle
) -> None:
    # A small gzip body that inflates past the limit (a decompression bomb).
    async with hyperhttp.Client(http2=False, max_response_size=10_000) as client:
        with pytest.raises(hyperhttp.ResponseTooLarge):
            await client.get(http_server.url + "/gzip", params={"pad": 200_000})


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("stream", ["0", "1"])
async def test_content_decoding(
    loop_name: str, http_server: ServerHandle, encoding: str, stream: str
) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(
            http_server.url + f"/{encoding}", params={"stream": stream, "pad": 5000}
        )
    assert response.headers["content-encoding"] == encoding
    body = response.json()
    assert body["encoding"] == encoding
    assert body["pad"] == "x" * 5000


async def test_raw_deflate_is_decoded(loop_name: str, http_server: ServerHandle) -> None:
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server.url + "/deflate", params={"raw": 1})
    assert response.json()["encoding"] == "deflate"


# --- lifecycle, URLs, mock transport ----------------------------------------------


async def test_request_on_closed_client(loop_name: str, http_server: ServerHandle) -> None:
    client = hyperhttp.Client(http2=False)
    await client.get(http_server.url + "/echo")
    await client.aclose()
    assert client.is_closed
    with pytest.raises(hyperhttp.PoolClosed):
        await client.get(http_server.url + "/echo")
    with pytest.raises(hyperhttp.PoolClosed):
        async with client.stream("GET", http_server.url + "/echo"):
            pass
    assert http_server.stats.requests == 1


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:1/a\r\nX-Injected: 1", "http://127.0.0.1:1/a\x00b",
     "http://127.0.0.1:1/\tb", "http://exa mple.com/", "http://127.0.0.1:99999/",
     "http:///no-host"],
)
async def test_invalid_urls_are_refused(loop_name: str, url: str) -> None:
    # A transport that records calls: an invalid URL must never reach one (and a
    # wrong implementation must not send a lookup for a bogus name to real DNS).
    sent: list[hyperhttp.Request] = []

    def handler(request: hyperhttp.Request) -> hyperhttp.Response:
        sent.append(request)
        return hyperhttp.Response(200)

    async with hyperhttp.Client(transport=hyperhttp.MockTransport(handler)) as client:
        with pytest.raises(hyperhttp.InvalidURL):
            await client.get(url)
    assert sent == []


async def test_ipv6_literal(loop_name: str, http_server_ipv6: ServerHandle) -> None:
    assert http_server_ipv6.url.startswith("http://[::1]:")
    async with hyperhttp.Client(http2=False) as client:
        response = await client.get(http_server_ipv6.url + "/echo")
    seen = response.json()
    assert seen["client"].startswith("[::1]:")
    assert seen_headers(response)["host"] == [http_server_ipv6.url.removeprefix("http://")]


async def test_mock_transport_as_a_user_writes_it(loop_name: str) -> None:
    seen: list[hyperhttp.Request] = []

    async def handler(request: hyperhttp.Request) -> hyperhttp.Response:
        seen.append(request)
        if request.url.path == "/users/1":
            return hyperhttp.Response(200, json={"id": 1, "q": request.url.query})
        return hyperhttp.Response(404, text="nope")

    async with hyperhttp.Client(
        transport=hyperhttp.MockTransport(handler), base_url="https://api.example.test"
    ) as client:
        found = await client.get("/users/1", params={"x": "y"})
        missing = await client.post("/users/2", json={"a": 1})
    assert found.json() == {"id": 1, "q": "x=y"}
    assert found.request is seen[0]
    assert str(found.url) == "https://api.example.test/users/1?x=y"
    assert missing.status_code == 404 and missing.text == "nope"
    with pytest.raises(hyperhttp.HTTPStatusError):
        missing.raise_for_status()
    assert seen[1].method == "POST"
    assert seen[1].content == b'{"a":1}'
    assert seen[1].headers["user-agent"].startswith("hyperhttp/")


async def test_sync_mock_handler_and_stream(loop_name: str) -> None:
    def handler(request: hyperhttp.Request) -> hyperhttp.Response:
        return hyperhttp.Response(200, content=b"line1\nline2\n")

    async with hyperhttp.Client(transport=hyperhttp.MockTransport(handler)) as client, \
            client.stream("GET", "http://mock.test/") as response:
        lines: list[Any] = [line async for line in response.aiter_lines()]
    assert lines == ["line1", "line2"]
