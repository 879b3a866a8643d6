"""What a URL turns into on the wire: international hosts, IPv6 literals and
zones, dot segments, stray '%' and query parameters (no network)."""

from __future__ import annotations

import re
import string
import sys
from decimal import Decimal
from urllib.parse import urljoin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperhttp
from hyperhttp import URL, Request, _urls

# --- international hosts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "encoded"),
    [
        # IDNA 2003 (Python's "idna" codec) sends these to other domains:
        ("faß.de", "xn--fa-hia.de"),  # not fass.de
        ("βόλος.com", "xn--nxasmm1c.com"),  # final sigma kept
        ("\u0dc1\u0dca\u200d\u0dbb\u0dd3.com", "xn--10cl1a0b660p.com"),  # ZWJ kept
        # UTS #46 mapping, as browsers do it:
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\uff0e\uff43\uff4f\uff4d", "example.com"),  # full-width
    ],
)
def test_international_hosts_are_encoded_as_browsers_do(host: str, encoded: str) -> None:
    url = URL(f"https://{host}/p")
    assert url.host == encoded
    assert url.wire_parts() == (("https", encoded, 443, ""), "/p", encoded)
    assert URL("https://h/").copy_with(host=host).host == encoded


@pytest.mark.parametrize(
    "host",
    [
        "a\u200db.de",  # IDNA 2003 drops the joiner: "ab.de", someone else's domain
        "\u2488.com",  # IDNA 2003 maps it to "1..com"
        "-ß.de",
        "ß..de",
    ],
)
def test_host_names_idna_2008_refuses_are_invalid_urls_naming_the_host(host: str) -> None:
    with pytest.raises(hyperhttp.InvalidURL) as caught:
        URL(f"https://{host}/")
    assert repr(host) in str(caught.value)


def test_ascii_hosts_never_load_idna(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a non-ASCII name pays for the idna package."""
    monkeypatch.setitem(sys.modules, "idna", None)  # any import of it now fails
    assert URL("http://Ascii-Only.Example:81/idna-free").host == "ascii-only.example"
    with pytest.raises(ImportError):
        URL("http://bücher.idna-free.example/")


# --- IPv6 literals ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "http://[fe80::1%25eth0]:8080/x",  # RFC 6874: "%25" then the zone
        "http://[FE80::1%25eth0]:8080/x",
        "http://[fe80::1%eth0]:8080/x",  # the bare "%" of a plain address, taken too
    ],
)
def test_ipv6_zone_is_kept_for_connecting_and_left_out_of_host(text: str) -> None:
    url = URL(text)
    assert url.host == "fe80::1%eth0"  # what the dialer resolves
    assert url.netloc == "[fe80::1]:8080"  # the Host header (RFC 6874 section 4)
    assert url.wire_parts() == (("http", "fe80::1%eth0", 8080, ""), "/x", "[fe80::1]:8080")
    assert str(url) == "http://[fe80::1%25eth0]:8080/x"
    assert URL(str(url)) == url
    assert url.join("/y").host == "fe80::1%eth0"


@pytest.mark.parametrize(
    "text",
    ["http://[fe80::1%25]/", "http://[fe80::1%]/", "http://[fe80::1%25a%2Fb]/", "http://[fe80::1%25%25]/"],
)
def test_bad_ipv6_zones_are_refused(text: str) -> None:
    with pytest.raises(hyperhttp.InvalidURL):
        URL(text)


@pytest.mark.parametrize(
    "text",
    [
        "http://[::1].internal.example.com/admin",
        "http://[::1]evil.com:8080/",
        "http://user:pw@[::1]x/",
    ],
)
def test_only_a_port_may_follow_an_ipv6_literal(text: str) -> None:
    """urlsplit keeps the literal and drops the rest: a name an allow-list
    reads as *.example.com would go to ::1."""
    with pytest.raises(hyperhttp.InvalidURL, match="after the IPv6 address"):
        URL(text)
    assert URL("http://[::1]:8080/").origin == ("http", "::1", 8080)
    assert URL("http://[::1]:/").origin == ("http", "::1", 80)


# --- paths: dot segments and '%' --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target"),
    [
        # RFC 3986 section 5.4 results, written out as absolute URLs
        ("http://a/b/c/./../../g", "/g"),
        ("http://a/b/c/../../../g", "/g"),
        ("http://a/./g", "/g"),
        ("http://a/b/c/g.", "/b/c/g."),
        ("http://a/b/c/.g", "/b/c/.g"),
        ("http://a/b/c/..g", "/b/c/..g"),
        ("http://a/b/c/./g/.", "/b/c/g/"),
        ("http://a/b/c/g/..", "/b/c/"),
        ("http://a/b/c/./g?y/./x", "/b/c/g?y/./x"),  # the query is left alone
        ("http://a/.well-known/x", "/.well-known/x"),
        ("http://a/100%", "/100%25"),
        ("http://a/%zz/%4", "/%25zz/%254"),
        ("http://a/%41%2f%2F", "/%41%2f%2F"),  # escapes are kept as written
        ("http://a/p?rate=5%&x=%zz&y=%41", "/p?rate=5%25&x=%25zz&y=%41"),
    ],
)
def test_dot_segments_and_bare_percent_in_urls_with_a_host(text: str, target: str) -> None:
    assert URL(text).target == target


def test_copy_with_path_is_cleaned_like_a_parsed_one() -> None:
    base = URL("https://h/api/v1/?k=1")
    assert base.copy_with(path="/api/v1/../../admin").path == "/admin"
    assert base.copy_with(path="discount/100%").path == "/discount/100%25"  # "/" added
    assert str(base.copy_with(path="x")) == "https://h/x?k=1"  # not "https://hx"
    assert base.copy_with(query="rate=5%").query == "rate=5%25"
    # A relative URL keeps its dots: they resolve against the base it is joined to.
    assert URL("../../x").path == "../../x"
    assert URL("../../x", params={"a": "%"}).query == "a=%25"


def test_a_scheme_without_a_host_is_refused_in_any_case() -> None:
    for text in ("http:foo", "HTTP:foo", "Https:/foo"):
        with pytest.raises(hyperhttp.InvalidURL, match="no host"):
            URL(text)


def _rfc3986_remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, step by step, as the reference."""
    source, output = path, ""
    while source:
        if source.startswith("../"):
            source = source[3:]
        elif source.startswith(("./", "/./")):
            source = source[2:]
        elif source == "/.":
            source = "/"
        elif source.startswith("/../") or source == "/..":
            source = "/" + source[4:]
            output = output[: max(output.rfind("/"), 0)]
        elif source in (".", ".."):
            source = ""
        else:
            end = source.find("/", 1)
            end = len(source) if end < 0 else end
            output, source = output + source[:end], source[end:]
    return output


_SEGMENTS = st.lists(st.sampled_from(["a", "b.", ".c", "..", ".", "", "%41", "x y"]), max_size=8)


@settings(max_examples=300, deadline=None)
@given(_SEGMENTS)
def test_remove_dot_segments_is_rfc_3986(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    assert _urls.remove_dot_segments(path) == _rfc3986_remove_dot_segments(path)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b.", "..", ".", "%41"]), min_size=1, max_size=8))
def test_urls_resolve_dots_as_urljoin_does(segments: list[str]) -> None:
    # No empty segments: urljoin drops them, RFC 3986 keeps them.
    path = "/" + "/".join(segments)
    expected = urljoin("http://h/base/", path)
    assert str(URL("http://h" + path)) == expected
    assert str(URL("http://h/base/").join(path)) == expected
    assert str(URL("http://h/").copy_with(path=path)) == expected


_WIRE_SAFE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="#"), max_size=30))
def test_request_targets_are_always_percent_clean(text: str) -> None:
    try:
        url = URL("http://h/" + text)
    except hyperhttp.InvalidURL:
        return  # control characters and the like are refused, not sent
    assert _WIRE_SAFE.fullmatch(url.target), url.target
    assert URL(str(url)).target == url.target  # clean text parses to itself
    for part in url.path.split("/"):
        assert part not in (".", "..")


# --- query parameters -------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ("q=hello world", "q=hello%20world"),
        ("?city=Zürich", "city=Z%C3%BCrich"),
        ("rate=5%&x=%41", "rate=5%25&x=%41"),
        ("a=1#2", "a=1%232"),  # a '#' in a query string given as text is data
        (b"q=a b&r=\xc3\xa9", "q=a%20b&r=%C3%A9"),
        (b"?raw=\xff", "raw=%FF"),
        ({"q": "hello world", "e": "é"}, "q=hello+world&e=%C3%A9"),
        ({"sig": b"\x01ab", "u": "é".encode()}, "sig=%01ab&u=%C3%A9"),
        ({"n": [1, 2.5, True, None, b"b"]}, "n=1&n=2.5&n=true&n=&n=b"),
        ([("k", False), (b"bk", "v")], "k=false&bk=v"),
    ],
)
def test_params_are_percent_encoded(params: hyperhttp.QueryParams, query: str) -> None:
    url = URL("http://h/p", params=params)
    assert url.query == query
    assert URL("http://h/p").copy_with(params=params).query == query


@pytest.mark.parametrize(
    "value",
    [{"a": 1}, {1, 2}, object(), bytearray(b"x"), Decimal("1.5"), [[1]], [{"a": 1}]],
)
def test_param_values_of_other_types_raise_type_error_naming_the_key(value: object) -> None:
    """Their repr ("{'a': 1}", "b'...'") would otherwise go out as the value."""
    with pytest.raises(TypeError, match="'field'"):
        URL("http://h/", params={"field": value})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="'field'"):
        Request("POST", "http://h/", data={"field": value})


def test_form_bodies_share_the_value_rules() -> None:
    request = Request("POST", "http://h/", data={"token": b"abc", "n": [1, None], "t": True})
    assert request.content == b"token=abc&n=1&n=&t=true"


_PRINTABLE = st.text(alphabet=string.printable + "éß€", max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_PRINTABLE, _PRINTABLE.map(str.encode)))
def test_string_params_are_always_percent_clean(params: str | bytes) -> None:
    url = URL("http://h/p", params=params)
    assert _WIRE_SAFE.fullmatch(url.target), url.target
