"""What a request URL puts on the wire, read from the bytes a raw loopback
server received (request line and Host), and which URLs never leave the
client: base_url merging, dot segments, stray '%', string params, IPv6
zones and international hosts."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import pytest

import hyperhttp
from hyperhttp._proxy import build_connect_request
from hyperhttp._transport import dial
from hyperhttp._transport.dns import Address
from tests.support.fixtures import RawServerFactory
from tests.support.raw import canned

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def request_line(raw: bytes) -> str:
    return raw.split(b"\r\n", 1)[0].decode("latin-1")


def host_header(raw: bytes) -> str:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"host":
            return value.strip().decode("latin-1")
    raise AssertionError(f"no Host header in {raw!r}")


def recording() -> tuple[list[hyperhttp.Request], hyperhttp.MockTransport]:
    sent: list[hyperhttp.Request] = []

    def handler(request: hyperhttp.Request) -> hyperhttp.Response:
        sent.append(request)
        return hyperhttp.Response(200)

    return sent, hyperhttp.MockTransport(handler)


async def test_dot_segments_and_bare_percent_on_the_wire(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    """Sent as the client's own URL.join resolves them, and '%' not starting
    an escape goes as '%25' (RFC 3986 sections 5.2.4 and 2.1)."""
    handler = canned(OK, close=False, repeat=True)
    server = raw_server(handler)
    base = server.url + "/api/v1/"
    cases = [
        ("../../admin", "/admin"),
        ("files/./../../secret", "/api/secret"),
        ("/../x", "/api/x"),  # a leading '/' is still under base_url's path
        ("./users:123/profile", "/api/v1/users:123/profile"),
        ("discount/100%", "/api/v1/discount/100%25"),
        ("q?rate=5%&x=%zz&y=%41", "/api/v1/q?rate=5%25&x=%25zz&y=%41"),
        (server.url + "/a/b/../c/./d", "/a/c/d"),
    ]
    async with hyperhttp.Client(http2=False, base_url=base, trust_env=False) as client:
        for url, target in cases:
            await client.get(url)
            assert request_line(handler.requests[-1]) == f"GET {target} HTTP/1.1", url
            if not url.startswith("http"):
                assert client.base_url is not None
                assert client.base_url.join(url.lstrip("/")).target == target


async def test_string_and_bytes_params_on_the_wire(
    loop_name: str, raw_server: RawServerFactory
) -> None:
    handler = canned(OK, close=False, repeat=True)
    server = raw_server(handler)
    cases: list[tuple[Any, str]] = [
        ("q=hello world", "q=hello%20world"),
        ("city=Zürich", "city=Z%C3%BCrich"),
        (b"?rate=5%", "rate=5%25"),
        ({"sig": b"\x01ab"}, "sig=%01ab"),
        ({"q": "hello world"}, "q=hello+world"),
    ]
    async with hyperhttp.Client(http2=False, trust_env=False) as client:
        for params, query in cases:
            await client.get(server.url + "/s", params=params)
            assert request_line(handler.requests[-1]) == f"GET /s?{query} HTTP/1.1", params
        await client.post(server.url + "/f", data={"token": b"abc", "n": 1})
        assert handler.requests[-1].endswith(b"\r\n\r\ntoken=abc&n=1")
        sent = len(handler.requests)
        with pytest.raises(TypeError, match="'f'"):
            await client.get(server.url + "/s", params={"f": {"a": 1}})
        with pytest.raises(TypeError, match="'token'"):
            await client.post(server.url + "/f", data={"token": {"a": 1}})
    assert len(handler.requests) == sent


async def test_ipv6_zone_reaches_the_dialer_decoded_and_stays_out_of_host(
    loop_name: str, raw_server: RawServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 6874: "[::1%25lo]" is ::1 on interface lo; the zone is for
    connecting only, never in Host (RFC 6874 section 4, RFC 9844)."""
    zone = socket.if_indextoname(1)  # the loopback interface: "lo" on Linux
    handler = canned(OK)
    server = raw_server(handler, host="::1")
    dialled: list[Sequence[Address]] = []
    real = dial.connect_happy_eyeballs

    async def spy(addresses: Sequence[Address], **kwargs: Any) -> socket.socket:
        dialled.append(list(addresses))
        return await real(addresses, **kwargs)

    monkeypatch.setattr(dial, "connect_happy_eyeballs", spy)
    url = f"http://[::1%25{zone}]:{server.port}/zone"
    async with hyperhttp.Client(http2=False, timeout=5.0, trust_env=False) as client:
        response = await client.get(url)
        assert response.text == "ok"
        assert response.request.url.host == f"::1%{zone}"
        with pytest.raises(hyperhttp.DNSError, match="'no-such-if0'"):
            await client.get(f"http://[::1%25no-such-if0]:{server.port}/")
    assert dialled == [[(socket.AF_INET6, ("::1", server.port, 0, 1))]]
    (raw,) = handler.requests
    assert request_line(raw) == "GET /zone HTTP/1.1"
    assert host_header(raw) == f"[::1]:{server.port}"


async def test_https_to_a_zoned_ipv6_address_checks_the_certificate_without_the_zone(
    loop_name: str, raw_server: RawServerFactory, ca_pem_path: str
) -> None:
    # The zone went into server_hostname, so the certificate for ::1 did
    # not match "::1%lo".
    zone = socket.if_indextoname(1)
    server = raw_server(canned(OK), tls=True, host="::1")
    async with hyperhttp.Client(http2=False, verify=ca_pem_path, timeout=5.0) as client:
        response = await client.get(f"https://[::1%25{zone}]:{server.port}/tls")
    assert response.text == "ok"


def test_a_connect_target_carries_no_ipv6_zone() -> None:
    head = build_connect_request("fe80::1%eth0", 443, None)
    assert head.startswith(b"CONNECT [fe80::1]:443 HTTP/1.1\r\nHost: [fe80::1]:443\r\n")


@pytest.mark.parametrize(
    ("url", "host"),
    [("https://faß.de/", "xn--fa-hia.de"), ("https://βόλος.com/x", "xn--nxasmm1c.com")],
)
async def test_international_hosts_reach_the_transport_as_idna_2008(
    loop_name: str, url: str, host: str
) -> None:
    sent, transport = recording()
    async with hyperhttp.Client(transport=transport, trust_env=False) as client:
        await client.get(url)
    assert sent[0].url.host == host
    assert sent[0].url.netloc == host


@pytest.mark.parametrize(
    "url",
    ["http://[::1].internal.example.com/admin", "http://[::1]evil.com:8080/", "https://a\u200db.de/"],
)
async def test_urls_that_hide_their_host_never_reach_the_transport(
    loop_name: str, url: str
) -> None:
    sent, transport = recording()
    async with hyperhttp.Client(transport=transport, trust_env=False) as client:
        with pytest.raises(hyperhttp.InvalidURL):
            await client.get(url)
    assert sent == []


@pytest.mark.parametrize(
    ("url", "scheme", "hint"),
    [
        ("users:123/profile", "users", "'./users:123/profile'"),
        ("projects:batchGet", "projects", "'./projects:batchGet'"),
        ("localhost:8080/x", "localhost", "'http://localhost:8080/x'"),
        ("file:///etc/passwd", "file", "only http and https"),
        ("mailto:admin@example.com", "", "only http and https"),
    ],
)
@pytest.mark.parametrize("base_url", ["https://api.example.com/v1/", None])
async def test_a_scheme_other_than_http_is_refused_not_joined(
    loop_name: str, url: str, scheme: str, hint: str, base_url: str | None
) -> None:
    """urlsplit reads "users:123/profile" as scheme "users" and path
    "123/profile"; appended to base_url that silently became /v1/123/profile."""
    sent, transport = recording()
    async with hyperhttp.Client(base_url=base_url, transport=transport, trust_env=False) as client:
        with pytest.raises(hyperhttp.InvalidURL) as caught:
            await client.get(url)
    assert hint in str(caught.value)
    if scheme:
        assert f"scheme {scheme!r}" in str(caught.value)
    assert sent == []


async def test_a_path_with_a_colon_is_written_with_dot_slash(loop_name: str) -> None:
    sent, transport = recording()
    base = "https://api.example.com/v1/"
    async with hyperhttp.Client(base_url=base, transport=transport, trust_env=False) as client:
        await client.get("./users:123/profile")
        await client.get("/projects:batchGet")
    assert [str(r.url) for r in sent] == [
        "https://api.example.com/v1/users:123/profile",
        "https://api.example.com/v1/projects:batchGet",
    ]


@pytest.mark.parametrize(
    "url", ["bob:Pa55w0rd@api.example.com/x", "T0KEN42:@api.example.com/x", "u:Pa55w0rd@h?q#f"]
)
async def test_a_password_without_a_scheme_is_not_shown(loop_name: str, url: str) -> None:
    """"user:password@host/x" parses as scheme "user": the message about it
    must hide the password (and a bare token) like every other one."""
    sent, transport = recording()
    async with hyperhttp.Client(
        base_url="https://api.example.com/", transport=transport, trust_env=False
    ) as client:
        with pytest.raises(hyperhttp.InvalidURL) as caught:
            await client.get(url)
    message = str(caught.value)
    assert "Pa55w0rd" not in message and "T0KEN42" not in message
    assert "[secure]@" in message
    assert sent == []

