"""URL, Headers, Timeout, Request and Response as values (no network)."""

from __future__ import annotations

import pytest

import hyperhttp
from hyperhttp import URL, Headers, Request, Response, Timeout
from hyperhttp._cookies import CookieJar
from tests.support.doubles import ChunkStream

# --- URL -----------------------------------------------------------------------


def test_url_components() -> None:
    url = URL("HTTPS://User:p%40ss@Example.COM:8443/a/b?x=1&y=2#frag")
    assert url.scheme == "https"
    assert url.username == "User"
    assert url.password == "p@ss"
    assert url.host == "example.com"
    assert url.port == 8443
    assert url.path == "/a/b"
    assert url.query == "x=1&y=2"
    assert url.fragment == "frag"
    assert url.target == "/a/b?x=1&y=2"
    assert url.netloc == "example.com:8443"
    assert url.origin == ("https", "example.com", 8443)
    assert url.is_absolute and not url.is_relative


@pytest.mark.parametrize(
    ("text", "port", "netloc"),
    [
        ("http://h/", 80, "h"),
        ("http://h:80/", 80, "h"),
        ("https://h/", 443, "h"),
        ("https://h:443/", 443, "h"),
        ("http://h:8080/", 8080, "h:8080"),
    ],
)
def test_default_ports(text: str, port: int, netloc: str) -> None:
    url = URL(text)
    assert url.port == port
    assert url.netloc == netloc


def test_empty_path_is_slash() -> None:
    assert URL("http://h").target == "/"
    assert URL("http://h?q=1").target == "/?q=1"


def test_idna_host() -> None:
    url = URL("http://Bücher.example/")
    assert url.host == "xn--bcher-kva.example"
    assert url.netloc == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("text", "host", "netloc"),
    [
        ("http://[::1]:8080/", "::1", "[::1]:8080"),
        ("http://[::1]/", "::1", "[::1]"),
        ("http://[0:0:0:0:0:0:0:1]:80/", "::1", "[::1]"),
        ("http://[::ffff:127.0.0.1]:81/", "::ffff:7f00:1", "[::ffff:7f00:1]:81"),
    ],
)
def test_ipv6_literal(text: str, host: str, netloc: str) -> None:
    url = URL(text)
    assert url.host == host
    assert url.netloc == netloc
    assert URL(str(url)) == url


@pytest.mark.parametrize(
    "text",
    [
        "http://h/a\r\nHost: evil",
        "http://h/a\nb",
        "http://h/a\rb",
        "http://h/a\x00b",
        "http://h/a\tb",
        "http://h/a\x7fb",
        "http://h\r\n/",
        "http://h:99999/",
        "http://h:abc/",
        "http://h:-1/",
        "http://[::g]/",
        "http://[::1/",
        "http:///path",
        "http://exa mple.com/",
        "http://a<b>/",
    ],
)
def test_invalid_urls(text: str) -> None:
    with pytest.raises(hyperhttp.InvalidURL):
        URL(text)


def test_path_and_query_are_percent_encoded() -> None:
    url = URL("http://h/a b/ü?q=x y&r=é")
    assert url.path == "/a%20b/%C3%BC"
    assert " " not in url.target
    assert url.target.startswith("/a%20b/%C3%BC?q=x%20y&r=")
    # Already-encoded text is not encoded twice.
    assert URL("http://h/a%20b").path == "/a%20b"


def test_params_merge_into_query() -> None:
    url = URL("http://h/p?a=1", params={"b": "2", "c": ["3", "4"], "d": None})
    assert url.query == "a=1&b=2&c=3&c=4&d="
    assert URL("http://h/", params=[("k", "v w")]).query == "k=v+w"


def test_join() -> None:
    base = URL("http://h/a/b/c?x=1")
    assert str(base.join("d")) == "http://h/a/b/d"
    assert str(base.join("../d")) == "http://h/a/d"
    assert str(base.join("/d?y=2")) == "http://h/d?y=2"
    assert str(base.join("//other:81/e")) == "http://other:81/e"
    assert str(base.join("https://x/")) == "https://x/"


@pytest.mark.parametrize(
    "reference",
    [
        "http://[::1/next",  # unbalanced brackets: urlsplit raises ValueError
        "//[zz/",
        "http://a]b/",
        "http://",  # '//' and nothing after it: urljoin would keep base's host
        "HTTP://",
        "//",
        "http:///next",
        "http:/\t/",  # urlsplit drops the tab, leaving "http://"
    ],
)
def test_join_refuses_what_cannot_be_resolved(reference: str) -> None:
    base = URL("http://h/a/b?x=1")
    with pytest.raises(hyperhttp.InvalidURL):
        base.join(reference)
    # A host after the '//' is still a reference to that host.
    assert str(base.join("//other/next")) == "http://other/next"
    assert str(base.join("http:next")) == "http://h/a/next"


def test_copy_with_and_immutability() -> None:
    url = URL("http://h/a?x=1")
    changed = url.copy_with(scheme="HTTPS", host="Other.Example", port=444, path="/b c")
    assert str(changed) == "https://other.example:444/b%20c?x=1"
    assert str(url) == "http://h/a?x=1"
    with pytest.raises(TypeError):
        url.copy_with(nonsense=1)


def test_password_is_redacted() -> None:
    url = URL("https://user:hunter2@h/p")
    assert "hunter2" not in repr(url)
    assert "hunter2" not in url.redacted()
    assert "hunter2" in str(url)
    assert url.without_credentials().username is None
    assert "hunter2" not in repr(Request("GET", url))


@pytest.mark.parametrize("url", ["https://ghp_T0KEN42@h/p", "https://ghp_T0KEN42:@h/p"])
def test_a_user_name_without_a_password_is_redacted_too(url: str) -> None:
    """`https://TOKEN@host/` is how tokens travel in URLs; shown like a password."""
    parsed = URL(url)
    assert parsed.redacted() == "https://[secure]@h/p"
    assert "T0KEN42" not in repr(parsed)
    assert "T0KEN42" not in repr(Request("GET", parsed))
    assert "T0KEN42" not in repr(hyperhttp.Client(base_url=url, trust_env=False))
    assert parsed.username is not None and "T0KEN42" in str(parsed)


@pytest.mark.parametrize(
    "url",
    [
        "http://bob:Pa55w0rd/x@proxy.corp:3128",  # "/" ends the authority early
        "http://bob:Pa55w0rd?x@proxy.corp:3128",
        "http://bob:Pa55w0rd#x@proxy.corp:3128",
    ],
)
def test_a_password_misread_as_a_port_is_not_quoted(url: str) -> None:
    """urllib takes what follows the last ':' of the cut-short authority for
    the port and quotes it in its error: the password."""
    with pytest.raises(hyperhttp.InvalidURL) as caught:
        URL(url)
    assert "Pa55w0rd" not in str(caught.value)
    assert "invalid port" in str(caught.value)


async def test_a_scheme_relative_url_is_refused_with_or_without_base_url() -> None:
    """`//host/path` has a host: joined to base_url it would either lose it
    or, resolved, let a path from elsewhere choose the server."""
    for base in (None, "https://api.example.com"):
        async with hyperhttp.Client(base_url=base, trust_env=False) as client:
            with pytest.raises(hyperhttp.InvalidURL, match="names a host but no scheme") as caught:
                await client.get("//alice:S3cretPW@other.example/x")
        assert "S3cretPW" not in str(caught.value)


def test_url_equality_and_hash() -> None:
    assert URL("http://H/a") == "http://h/a"
    assert hash(URL("http://h/a")) == hash(URL("http://h/a"))
    assert URL("http://h/a") != URL("http://h/b")


def test_relative_url() -> None:
    url = URL("/path?q=1")
    assert url.is_relative
    assert url.path == "/path"


# --- Headers -----------------------------------------------------------------------


def test_headers_case_insensitive() -> None:
    h = Headers({"Content-Type": "text/plain"})
    assert h["content-type"] == "text/plain"
    assert h["CONTENT-TYPE"] == "text/plain"
    assert "Content-type" in h
    assert h.get("missing") is None
    assert h.get("missing", "d") == "d"
    del h["CONTENT-type"]
    assert "content-type" not in h
    with pytest.raises(KeyError):
        del h["content-type"]


def test_headers_multi_values_keep_order() -> None:
    h = Headers([("Set-Cookie", "a=1"), ("X", "1"), ("set-cookie", "b=2")])
    assert h.get_list("SET-COOKIE") == ["a=1", "b=2"]
    assert h["set-cookie"] == "a=1, b=2"
    assert h.multi_items() == [("Set-Cookie", "a=1"), ("X", "1"), ("set-cookie", "b=2")]
    assert len(h) == 2
    assert list(h) == ["Set-Cookie", "X"]
    h.add("x", "2")
    assert h.get_list("X") == ["1", "2"]


def test_headers_setitem_replaces_every_value() -> None:
    h = Headers([("X", "1"), ("Y", "y"), ("x", "2")])
    h["x"] = "3"
    assert h.get_list("X") == ["3"]
    assert h.multi_items() == [("x", "3"), ("Y", "y")]


def test_headers_update_replaces_by_name() -> None:
    h = Headers([("A", "1"), ("A", "2"), ("B", "b")])
    h.update({"a": "new"})
    assert h.get_list("A") == ["new"]
    assert h["b"] == "b"


def test_headers_from_bytes_are_latin1() -> None:
    h = Headers([(b"X-Bin", b"caf\xe9")])
    assert h["x-bin"] == "café"


def test_headers_copy_is_independent_and_equality() -> None:
    h = Headers({"A": "1"})
    c = h.copy()
    c["A"] = "2"
    assert h["a"] == "1"
    assert Headers([("a", "1"), ("B", "2")]) == Headers([("b", "2"), ("A", "1")])
    assert Headers({"a": "1"}) == {"A": "1"}
    assert Headers({"a": "1"}) != Headers({"a": "2"})


@pytest.mark.parametrize("value", [5, None, 1.5])
@pytest.mark.parametrize("how", ["constructor", "pairs", "setitem", "add", "update"])
def test_headers_refuse_values_that_are_not_text(how: str, value: object) -> None:
    """An int or None failed only when the request was written, with a regex's
    "expected string or bytes-like object" that named no header."""
    expected = f"header 'X-N' value must be str or bytes, not {type(value).__name__}"
    h = Headers({"A": "1"})
    with pytest.raises(TypeError, match=expected):
        if how == "constructor":
            Headers({"X-N": value})  # type: ignore[dict-item]
        elif how == "pairs":
            Headers([("X-N", value)])  # type: ignore[list-item]
        elif how == "setitem":
            h["X-N"] = value  # type: ignore[assignment]
        elif how == "add":
            h.add("X-N", value)  # type: ignore[arg-type]
        else:
            h.update({"X-N": value})  # type: ignore[dict-item]
    assert h.multi_items() == [("A", "1")]  # nothing half-added
    with pytest.raises(TypeError, match="header name must be str or bytes, not int"):
        Headers({5: "v"})  # type: ignore[dict-item]


def test_headers_repr_hides_credentials() -> None:
    h = Headers({"Authorization": "Bearer s3cret", "Cookie": "sid=t0ken", "X": "shown"})
    text = repr(h)
    assert "s3cret" not in text and "t0ken" not in text
    assert "shown" in text


# --- Timeout -------------------------------------------------------------------------


def test_timeout_values() -> None:
    t = Timeout(5)
    assert (t.connect, t.read, t.write, t.pool) == (5.0, 5.0, 5.0, 5.0)
    t = Timeout(5, connect=1, pool=None)
    assert (t.connect, t.read, t.write, t.pool) == (1.0, 5.0, 5.0, None)
    assert Timeout(None).read is None
    assert Timeout(Timeout(2), read=3) == Timeout(2, read=3)
    assert Timeout(connect=1, read=2, write=3, pool=4).write == 3.0


def test_timeout_validation_and_immutability() -> None:
    with pytest.raises(ValueError):
        Timeout()
    with pytest.raises(ValueError):
        Timeout(-1)
    # NaN passes a "< 0" test; a request with it timed out at once ("nans").
    with pytest.raises(ValueError, match="nan"):
        Timeout(float("nan"))
    with pytest.raises(ValueError, match="nan"):
        Timeout(5.0, read=float("nan"))
    with pytest.raises(ValueError, match="happy_eyeballs_delay"):
        hyperhttp.Client(happy_eyeballs_delay=float("nan"))
    with pytest.raises(TypeError):
        Timeout("5")
    t = Timeout(1)
    with pytest.raises(AttributeError):
        t.read = 2


def test_assigning_event_hooks_checks_and_completes_them() -> None:
    """`client.event_hooks = {...}` (as httpx allows) left out "response" and
    every request then failed with a bare KeyError, after it was sent."""
    client = hyperhttp.Client(trust_env=False)

    def hook(request: Request) -> None:
        pass

    client.event_hooks = {"request": [hook]}
    assert client.event_hooks == {"request": [hook], "response": []}
    client.event_hooks["response"].append(hook)  # still a live dict of lists
    assert client.event_hooks["response"] == [hook]
    with pytest.raises(ValueError, match="unknown event hook 'reponse'"):
        client.event_hooks = {"reponse": [hook]}


def test_assigning_client_settings_converts_them() -> None:
    """The docs say these can be changed on a live client, but a plain value
    (`client.timeout = 5.0`, a dict of headers, an auth tuple, a dict of
    cookies) was stored as given and the next request failed with an
    AttributeError. Each now takes what the constructor takes."""
    client = hyperhttp.Client(trust_env=False, user_agent="svc/1", headers={"X-Old": "o"})

    client.timeout = 5.0
    assert client.timeout == Timeout(5.0)
    client.timeout = 60
    assert client.timeout == Timeout(60, connect=10.0)  # connect_timeout still caps it
    client.timeout = None
    assert client.timeout == Timeout(None, connect=10.0)

    client.headers = {"X-New": "n", "accept": "application/json"}
    assert client.headers.multi_items() == [
        ("User-Agent", "svc/1"),  # the client's user_agent, not the library's
        ("Accept-Encoding", client.headers["accept-encoding"]),
        ("X-New", "n"),
        ("accept", "application/json"),
    ]
    client.headers = None
    assert set(client.headers) == {"User-Agent", "Accept", "Accept-Encoding"}

    client.auth = ("user", "pw")
    assert isinstance(client.auth, hyperhttp.BasicAuth)
    client.auth = None
    assert client.auth is None

    client.cookies = {"a": "b"}
    assert isinstance(client.cookies, CookieJar)
    assert client.cookies.get("a") == "b"
    jar = CookieJar()
    client.cookies = jar
    assert client.cookies is jar

    client.base_url = "https://api.example.test/v1"
    assert client.base_url == URL("https://api.example.test/v1")
    request = client.build_request("GET", "items")
    assert str(request.url) == "https://api.example.test/v1/items"
    assert request.extensions["timeout"] == Timeout(None, connect=10.0)

    # Refused when assigned, as the constructor refuses them.
    with pytest.raises(TypeError, match="auth="):
        client.auth = 5
    with pytest.raises(TypeError):
        client.timeout = "5"  # type: ignore[assignment]
    with pytest.raises(TypeError, match="header 'X' value"):
        client.headers = {"X": None}  # type: ignore[dict-item]
    assert client.auth is None and client.headers.get("x") is None  # unchanged


# --- Request -----------------------------------------------------------------------------


def test_request_bodies_set_headers() -> None:
    r = Request("post", "http://h/", json={"a": 1})
    assert r.method == "POST"
    assert r.content == b'{"a":1}'
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == "7"
    r = Request("POST", "http://h/", data={"a": "b c"})
    assert r.content == b"a=b+c"
    assert r.headers["content-type"] == "application/x-www-form-urlencoded"
    r = Request("POST", "http://h/", content=iter([b"a", b"b"]))
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers
    assert not r.stream.is_replayable
    with pytest.raises(hyperhttp.StreamConsumed):
        _ = r.content


def test_request_without_body() -> None:
    assert "content-length" not in Request("GET", "http://h/").headers
    assert Request("POST", "http://h/").headers["content-length"] == "0"


def test_request_params() -> None:
    r = Request("GET", "http://h/p?a=1", params={"b": "2"})
    assert r.url.query == "a=1&b=2"


def test_bad_body_types() -> None:
    with pytest.raises(TypeError):
        Request("POST", "http://h/", content=12345)
    with pytest.raises(TypeError):
        Request("POST", "http://h/", data=b"raw")
    with pytest.raises(TypeError):
        Request("POST", "http://h/", json={"a": object()})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"json": {"id": 7}, "data": {"a": "1"}}, r"only one of .* \(got data= and json=\)"),
        ({"json": {"id": 7}, "content": b"raw"}, r"only one of .* \(got content= and json=\)"),
        ({"data": {"a": "1"}, "content": b"raw"}, r"only one of .* \(got content= and data=\)"),
        ({"files": {"f": b"FILE"}, "content": b"raw"}, "cannot be combined with content="),
        ({"files": {"f": b"FILE"}, "json": {"id": 7}}, "cannot be combined with json="),
        ({"content": {"id": 7, "name": "x"}}, "not dict; use json= .* or data="),
    ],
)
def test_conflicting_bodies_are_refused(kwargs: dict[str, object], message: str) -> None:
    """All but one of the bodies used to be dropped without a word (json= and
    data= sent the form), and content= a dict sent its keys run together."""
    with pytest.raises(TypeError, match=message):
        Request("POST", "http://h/", **kwargs)  # type: ignore[arg-type]
    client = hyperhttp.Client(trust_env=False)
    with pytest.raises(TypeError, match=message):
        client.build_request("POST", "http://h/", **kwargs)  # type: ignore[arg-type]


async def test_data_with_files_is_still_one_multipart_form(loop_name: str) -> None:
    r = Request("POST", "http://h/", data={"field": "v"}, files={"f": ("f.txt", b"FILE")})
    assert r.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = b"".join([c async for c in r.stream])
    assert b'name="field"\r\n\r\nv\r\n' in body
    assert b"FILE" in body


@pytest.mark.parametrize("chunks", [["text"], [b"a", "b"]])
async def test_str_chunks_of_an_iterable_are_refused(loop_name: str, chunks: list[object]) -> None:
    """A str chunk was encoded as UTF-8, so a file opened in text mode went
    out with its line endings and encoding changed."""
    r = Request("POST", "http://h/", content=iter(chunks))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="chunks must be bytes, not str"):
        _ = [c async for c in r.stream]


async def test_single_use_body_cannot_be_sent_twice(loop_name: str) -> None:
    r = Request("POST", "http://h/", content=iter([b"a", b"b"]))
    assert b"".join([c async for c in r.stream]) == b"ab"
    with pytest.raises(hyperhttp.StreamConsumed):
        _ = [c async for c in r.stream]


# --- Response ------------------------------------------------------------------------------


def test_in_memory_response() -> None:
    request = Request("GET", "http://h/x")
    r = Response(200, json={"a": [1]}, request=request)
    assert r.json() == {"a": [1]}
    assert r.headers["content-type"] == "application/json"
    assert r.url == "http://h/x"
    r = Response(201, text="héllo")
    assert r.text == "héllo"
    assert r.encoding == "utf-8"
    assert r.content == "héllo".encode()


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("text/plain; charset=ISO-8859-1", "iso-8859-1"),
        ('text/plain; charset="latin-1"', "latin-1"),
        ("text/plain;charset=utf-16", "utf-16"),
        ("text/plain; charset=no-such-charset", "utf-8"),
        ("application/json", "utf-8"),
    ],
)
def test_response_encoding(content_type: str, encoding: str) -> None:
    r = Response(200, headers={"Content-Type": content_type}, content=b"")
    assert r.encoding == encoding


def test_response_json_error_is_decoding_error() -> None:
    with pytest.raises(hyperhttp.DecodingError):
        Response(200, content=b"{not json").json()


@pytest.mark.parametrize(
    ("code", "informational", "success", "redirect", "client", "server"),
    [
        (101, True, False, False, False, False),
        (200, False, True, False, False, False),
        (299, False, True, False, False, False),
        (302, False, False, True, False, False),
        (404, False, False, False, True, False),
        (599, False, False, False, False, True),
    ],
)
def test_status_predicates(
    code: int, informational: bool, success: bool, redirect: bool, client: bool, server: bool
) -> None:
    headers = {"Location": "/x"} if redirect else {}
    r = Response(code, headers=headers, request=Request("GET", "http://h/"))
    assert r.is_informational is informational
    assert r.is_success is success
    assert r.is_redirect is redirect
    assert r.is_client_error is client
    assert r.is_server_error is server
    assert r.is_error is (client or server)
    if r.is_error:
        with pytest.raises(hyperhttp.HTTPStatusError):
            r.raise_for_status()
    else:
        assert r.raise_for_status() is r


def test_redirect_status_without_location_is_not_a_redirect() -> None:
    assert not Response(302).is_redirect


async def test_streamed_response_read_once_and_closed_once(loop_name: str) -> None:
    stream = ChunkStream([b"ab", b"cd"])
    r = Response(200, stream=stream, request=Request("GET", "http://h/"))
    with pytest.raises(hyperhttp.StreamConsumed):
        _ = r.content
    assert await r.aread() == b"abcd"
    assert await r.aread() == b"abcd"
    assert r.content == b"abcd"
    assert stream.closed == 1
    await r.aclose()
    assert stream.closed == 1
    # After aread the body can still be iterated from memory.
    assert [c async for c in r.aiter_bytes()] == [b"abcd"]


async def test_stream_consumed_twice(loop_name: str) -> None:
    r = Response(200, stream=ChunkStream([b"ab"]))
    assert [c async for c in r.aiter_raw()] == [b"ab"]
    with pytest.raises(hyperhttp.StreamConsumed):
        _ = [c async for c in r.aiter_raw()]


async def test_aiter_text_across_split_characters(loop_name: str) -> None:
    r = Response(200, headers={"Content-Type": "text/plain; charset=utf-8"},
                 stream=ChunkStream([b"caf\xc3", b"\xa9 \xe2\x98", b"\x83"]))
    assert "".join([t async for t in r.aiter_text()]) == "café ☃"


async def test_aiter_lines_across_chunks(loop_name: str) -> None:
    r = Response(200, stream=ChunkStream([b"one\r", b"\ntwo\nthr", b"ee\n\nfour"]))
    assert [line async for line in r.aiter_lines()] == ["one", "two", "three", "", "four"]


async def test_aiter_lines_ends_lines_at_cr_and_lf_only(loop_name: str) -> None:
    """NDJSON may carry U+2028, U+0085, VT or FF raw inside a string:
    str.splitlines() broke the record there (and kept the character)."""
    body = '{"a": "x\u2028y"}\n{"b": "\x0b\x0c\u0085"}\r\n{"c": 3}\r'.encode()
    r = Response(200, headers={"Content-Type": "application/x-ndjson; charset=utf-8"},
                 stream=ChunkStream([body[:7], body[7:]]))
    lines = [line async for line in r.aiter_lines()]
    assert lines == ['{"a": "x\u2028y"}', '{"b": "\x0b\x0c\u0085"}', '{"c": 3}']


@pytest.mark.parametrize("how", ["aread", "aiter_bytes", "aiter_lines"])
async def test_a_closed_stream_is_not_read_as_empty(loop_name: str, how: str) -> None:
    """Read after aclose() (or after its `stream()` block): an empty body with
    no error, or an error blaming the server, hid a caller's mistake."""
    r = Response(200, stream=ChunkStream([b"never read"]))
    await r.aclose()
    with pytest.raises(hyperhttp.StreamConsumed, match="closed before its body was read"):
        if how == "aread":
            await r.aread()
        elif how == "aiter_bytes":
            [chunk async for chunk in r.aiter_bytes()]
        else:
            [line async for line in r.aiter_lines()]


async def test_max_size_on_stream(loop_name: str) -> None:
    stream = ChunkStream([b"x" * 60, b"x" * 60])
    r = Response(200, stream=stream, request=Request("GET", "http://big.example/"))
    r.max_size = 100
    with pytest.raises(hyperhttp.ResponseTooLarge, match=r"big\.example"):
        await r.aread()
    assert stream.closed == 1


async def test_max_size_on_declared_length(loop_name: str) -> None:
    stream = ChunkStream([b"x"])
    r = Response(200, headers={"Content-Length": "1000"}, stream=stream,
                 request=Request("GET", "http://h/"))
    r.max_size = 999
    with pytest.raises(hyperhttp.ResponseTooLarge):
        await r.aread()
    assert stream.closed == 1


async def test_elapsed_is_set_when_closed(loop_name: str) -> None:
    r = Response(200, stream=ChunkStream([b"x"]))
    await r.aread()
    first = r.elapsed
    assert first.total_seconds() >= 0
    assert r.elapsed == first


def test_wire_parts_are_worked_out_once_and_never_stale() -> None:
    url = URL("https://user:pw@Example.COM:8443/a b?q=1#frag")
    parts = url.wire_parts()
    assert parts == (("https", "example.com", 8443, ""), "/a%20b?q=1", "example.com:8443")
    assert url.wire_parts() is parts  # the same object: computed once
    moved = url.copy_with(host="other.test", port=None, path="/x", query="")
    assert moved.wire_parts() == (("https", "other.test", 443, ""), "/x", "other.test")
    assert url.wire_parts() is parts  # the original is unchanged
    assert URL(url).wire_parts() == parts  # a copy works its own out, equal
    v6 = URL("http://[::1]:8080/")
    assert v6.wire_parts() == (("http", "::1", 8080, ""), "/", "[::1]:8080")
