"""The cookie jar: RFC 6265 parsing, matching, expiry, ordering and limits."""

from __future__ import annotations

import calendar

import pytest

from hyperhttp._cookies import (
    CookieJar,
    default_path,
    domain_matches,
    parse_cookie_date,
    parse_set_cookie,
    path_matches,
)
from hyperhttp._exceptions import LocalProtocolError
from hyperhttp._urls import URL

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def jar_at(now: float = T0) -> tuple[CookieJar, Clock]:
    clock = Clock(now)
    return CookieJar(clock=clock), clock


def store(jar: CookieJar, url: str, *headers: str) -> int:
    return jar.extract(URL(url), list(headers))


def header(jar: CookieJar, url: str) -> str | None:
    return jar.header_for(URL(url))


# --- matching helpers ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("host", "domain", "expected"),
    [
        ("example.com", "example.com", True),
        ("www.example.com", "example.com", True),
        ("a.b.example.com", "example.com", True),
        ("badexample.com", "example.com", False),  # suffix, but not at a dot
        ("example.com", "www.example.com", False),
        ("example.com", "com", True),
        ("example.org", "example.com", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("10.0.0.1", "0.0.1", False),  # never suffix-match an IP address
        ("::1", "::1", True),
        ("localhost", "localhost", True),
        ("example.com", "", False),
    ],
)
def test_domain_matches(host: str, domain: str, expected: bool) -> None:
    assert domain_matches(host, domain) is expected


@pytest.mark.parametrize(
    ("request_path", "cookie_path", "expected"),
    [
        ("/", "/", True),
        ("/foo", "/", True),
        ("/foo", "/foo", True),
        ("/foo/", "/foo", True),
        ("/foo/bar", "/foo", True),
        ("/foo/bar", "/foo/", True),
        ("/foobar", "/foo", False),
        ("/fo", "/foo", False),
        ("/", "/foo", False),
        ("/Foo", "/foo", False),  # case-sensitive
        ("/foo/bar/baz", "/foo/bar", True),
    ],
)
def test_path_matches(request_path: str, cookie_path: str, expected: bool) -> None:
    assert path_matches(request_path, cookie_path) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("", "/"), ("/", "/"), ("/foo", "/"), ("/foo/", "/foo"), ("/foo/bar", "/foo"),
     ("/a/b/c.html", "/a/b"), ("relative", "/")],
)
def test_default_path(path: str, expected: str) -> None:
    assert default_path(path) == expected


# --- cookie dates -------------------------------------------------------------------

def _ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> float:
    return float(calendar.timegm((y, mo, d, h, mi, s)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Wed, 21 Oct 2015 07:28:00 GMT", _ts(2015, 10, 21, 7, 28)),
        ("Wednesday, 21-Oct-15 07:28:00 GMT", _ts(2015, 10, 21, 7, 28)),  # RFC 850
        ("Wed Oct 21 07:28:00 2015", _ts(2015, 10, 21, 7, 28)),  # asctime
        ("21 October 2015 7:8:9", _ts(2015, 10, 21, 7, 8, 9)),
        ("Thu, 01 Jan 70 00:00:01 GMT", _ts(1970, 1, 1, 0, 0, 1)),
        ("Sat, 01 Jan 69 00:00:00 GMT", _ts(2069, 1, 1)),
        ("Sun, 29 Feb 2032 12:00:00 GMT", _ts(2032, 2, 29, 12)),
    ],
)
def test_cookie_dates(text: str, expected: float) -> None:
    assert parse_cookie_date(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tomorrow",
        "Wed, 21 Oct 2015",  # no time
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Foo 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 24:00:00 GMT",
        "Wed, 21 Oct 2015 07:60:00 GMT",
        "Wed, 30 Feb 2015 07:28:00 GMT",
        "Wed, 21 Oct 1600 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28 GMT",
    ],
)
def test_bad_cookie_dates(text: str) -> None:
    assert parse_cookie_date(text) is None


# --- parsing ------------------------------------------------------------------------

def test_parse_attributes_case_insensitive_last_wins() -> None:
    c = parse_set_cookie(
        'sid="a b"; PATH=/x; path=/y; DOMAIN=.Example.COM; secure; HttpOnly; SameSite=LAX;'
        " unknown=1; Max-Age=60"
    )
    assert c is not None
    assert (c.name, c.value) == ("sid", '"a b"')
    assert c.path == "/y"
    assert c.domain == "example.com"
    assert c.secure and c.http_only
    assert c.same_site == "lax"
    assert c.max_age == 60


@pytest.mark.parametrize(
    "value",
    ["novalue", "=value", " =value", "a\x00b=1", "a=b\x01c", "a=b\x7f", "a=\nb", "x" * 5000 + "=1"],
)
def test_parse_refuses_invalid(value: str) -> None:
    assert parse_set_cookie(value) is None


def test_parse_ignores_bad_attribute_values() -> None:
    c = parse_set_cookie("a=1; Max-Age=12x; Max-Age=+5; Expires=soon; Domain=; Path=rel")
    assert c is not None
    assert c.max_age is None and c.expires is None and c.domain is None and c.path is None
    neg = parse_set_cookie("a=1; Max-Age=-10")
    assert neg is not None and neg.max_age == 0


def test_value_may_be_empty_and_keeps_inner_equals() -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/", "empty=", "b64=YWJj==")
    assert header(jar, "http://example.com/") == "empty=; b64=YWJj=="


# --- domains ------------------------------------------------------------------------

def test_host_only_cookie_not_sent_to_subdomains_or_parents() -> None:
    jar, _ = jar_at()
    store(jar, "http://www.example.com/", "a=1")
    assert header(jar, "http://www.example.com/") == "a=1"
    assert header(jar, "http://sub.www.example.com/") is None
    assert header(jar, "http://example.com/") is None
    assert header(jar, "http://other.example.com/") is None


def test_domain_cookie_sent_to_domain_and_subdomains() -> None:
    jar, _ = jar_at()
    store(jar, "http://a.example.com/", "d=1; Domain=.example.com")
    assert header(jar, "http://example.com/") == "d=1"
    assert header(jar, "http://b.example.com/") == "d=1"
    assert header(jar, "http://x.y.example.com/") == "d=1"
    assert header(jar, "http://badexample.com/") is None
    assert header(jar, "http://example.org/") is None


def test_domain_equal_to_host_makes_domain_cookie() -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/", "d=1; Domain=example.com")
    assert header(jar, "http://www.example.com/") == "d=1"


@pytest.mark.parametrize(
    "cookie",
    [
        "x=1; Domain=evil.com",  # third party
        "x=1; Domain=b.example.com",  # sibling
        "x=1; Domain=sub.a.example.com",  # below the host
        "x=1; Domain=com",  # public suffix
        "x=1; Domain=.com",
        "x=1; Domain=ample.com",
    ],
)
def test_foreign_domains_refused(cookie: str) -> None:
    jar, _ = jar_at()
    assert store(jar, "http://a.example.com/", cookie) == 0
    assert len(jar) == 0
    for host in ("evil.com", "b.example.com", "a.example.com", "sub.a.example.com", "com"):
        assert header(jar, f"http://{host}/") is None


def test_ip_host_cookies_are_host_only() -> None:
    jar, _ = jar_at()
    assert store(jar, "http://127.0.0.1:8000/", "a=1", "b=2; Domain=127.0.0.1") == 2
    assert store(jar, "http://127.0.0.1/", "c=3; Domain=0.0.1") == 0
    assert header(jar, "http://127.0.0.1:9000/") == "a=1; b=2"  # ports do not matter
    assert header(jar, "http://127.0.0.2/") is None
    assert all(c.host_only for c in jar)


def test_ipv6_host() -> None:
    jar, _ = jar_at()
    store(jar, "http://[::1]:8080/", "v6=1")
    assert header(jar, "http://[::1]/") == "v6=1"
    assert header(jar, "http://127.0.0.1/") is None


def test_localhost_without_dots() -> None:
    jar, _ = jar_at()
    assert store(jar, "http://localhost:8000/", "a=1", "b=2; Domain=localhost") == 2
    assert header(jar, "http://localhost:8001/") == "a=1; b=2"
    # Domain=localhost is a single label: host-only, not sent to sub.localhost
    assert header(jar, "http://sub.localhost/") is None
    assert store(jar, "http://app.localhost/", "c=3; Domain=localhost") == 0


def test_host_case_is_ignored() -> None:
    jar, _ = jar_at()
    store(jar, "http://WWW.Example.COM/", "a=1; Domain=EXAMPLE.com")
    assert header(jar, "http://www.example.com/") == "a=1"


# --- paths --------------------------------------------------------------------------

def test_default_path_from_request_url() -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/docs/page.html", "a=1")
    assert header(jar, "http://example.com/docs/other") == "a=1"
    assert header(jar, "http://example.com/docs") == "a=1"
    assert header(jar, "http://example.com/") is None
    assert header(jar, "http://example.com/docsx") is None


def test_explicit_path() -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/", "a=1; Path=/api")
    assert header(jar, "http://example.com/api/v1?x=1") == "a=1"
    assert header(jar, "http://example.com/apix") is None
    assert header(jar, "http://example.com/") is None


def test_same_name_different_paths_are_distinct() -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/", "a=root; Path=/", "a=deep; Path=/x")
    assert len(jar) == 2
    assert header(jar, "http://example.com/x/y") == "a=deep; a=root"
    assert jar.get("a") == "deep"
    assert jar.get("a", path="/") == "root"


# --- expiry -------------------------------------------------------------------------

def test_max_age_expiry_with_injected_clock() -> None:
    jar, clock = jar_at()
    store(jar, "http://example.com/", "a=1; Max-Age=60", "s=session")
    clock.now = T0 + 59
    assert header(jar, "http://example.com/") == "a=1; s=session"
    clock.now = T0 + 60
    assert header(jar, "http://example.com/") == "s=session"
    assert len(jar) == 1  # evicted, not just hidden


def test_expires_attribute() -> None:
    jar, clock = jar_at(_ts(2030, 1, 1))
    store(jar, "http://example.com/", "a=1; Expires=Wed, 02 Jan 2030 00:00:00 GMT")
    assert header(jar, "http://example.com/") == "a=1"
    clock.now = _ts(2030, 1, 2)
    assert header(jar, "http://example.com/") is None


def test_max_age_wins_over_expires_either_order() -> None:
    jar, clock = jar_at(_ts(2030, 1, 1))
    store(
        jar, "http://example.com/",
        "a=1; Max-Age=10; Expires=Fri, 01 Jan 2031 00:00:00 GMT",
        "b=2; Expires=Tue, 01 Jan 2019 00:00:00 GMT; Max-Age=1000",
    )
    assert header(jar, "http://example.com/") == "a=1; b=2"
    clock.now += 11
    assert header(jar, "http://example.com/") == "b=2"


def test_explicit_now_argument_overrides_clock() -> None:
    jar, _ = jar_at()
    jar.extract(URL("http://example.com/"), ["a=1; Max-Age=5"], now=100.0)
    assert jar.header_for(URL("http://example.com/"), now=104.0) == "a=1"
    assert jar.header_for(URL("http://example.com/"), now=105.0) is None


@pytest.mark.parametrize("deleter", ["a=; Max-Age=0", "a=x; Max-Age=-1",
                                     "a=; Expires=Thu, 01 Jan 1970 00:00:00 GMT"])
def test_expired_set_cookie_deletes(deleter: str) -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/", "a=1", "b=2")
    assert store(jar, "http://example.com/", deleter) == 0
    assert header(jar, "http://example.com/") == "b=2"


def test_expiry_capped_at_400_days() -> None:
    jar, clock = jar_at()
    store(jar, "http://example.com/", "a=1; Max-Age=999999999999999999999",
          "b=1; Expires=Fri, 01 Jan 9999 00:00:00 GMT")
    clock.now = T0 + 400 * 86400 - 1
    assert header(jar, "http://example.com/") == "a=1; b=1"
    clock.now = T0 + 400 * 86400
    assert header(jar, "http://example.com/") is None


# --- secure -------------------------------------------------------------------------

def test_secure_cookie_only_sent_over_https() -> None:
    jar, _ = jar_at()
    assert store(jar, "https://example.com/", "s=1; Secure", "p=2") == 2
    assert header(jar, "https://example.com/") == "s=1; p=2"
    assert header(jar, "http://example.com/") == "p=2"
    assert header(jar, "wss://example.com/") == "s=1; p=2"


def test_insecure_origin_cannot_set_secure_cookie() -> None:
    jar, _ = jar_at()
    assert store(jar, "http://example.com/", "s=1; Secure") == 0
    assert len(jar) == 0


def test_insecure_origin_cannot_overwrite_or_delete_secure_cookie() -> None:
    jar, _ = jar_at()
    store(jar, "https://example.com/", "s=secret; Secure; Domain=example.com")
    assert store(jar, "http://example.com/", "s=evil") == 0
    assert store(jar, "http://www.example.com/", "s=evil; Domain=example.com") == 0
    assert store(jar, "http://example.com/", "s=; Max-Age=0") == 0
    assert header(jar, "https://example.com/") == "s=secret"
    # other names are fine
    assert store(jar, "http://example.com/", "t=1") == 1


def test_loopback_counts_as_secure() -> None:
    jar, _ = jar_at()
    assert store(jar, "http://localhost:8000/", "s=1; Secure") == 1
    assert store(jar, "http://127.0.0.1:8000/", "s=1; Secure") == 1
    assert header(jar, "http://localhost:8000/") == "s=1"
    # a name that only looks like loopback does not
    assert store(jar, "http://127.example.com/", "s=1; Secure") == 0


def test_cookie_name_prefixes() -> None:
    jar, _ = jar_at()
    url = "https://a.example.com/"
    assert store(jar, url, "__Secure-a=1") == 0
    assert store(jar, url, "__Secure-a=1; Secure") == 1
    assert store(jar, url, "__Host-b=1; Secure; Path=/; Domain=example.com") == 0
    assert store(jar, url, "__Host-b=1; Secure") == 0  # Path=/ required
    assert store(jar, url, "__host-b=1; Secure; Path=/") == 1


def test_http_only_and_same_site_stored() -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/", "a=1; HttpOnly; SameSite=Strict", "b=2; SameSite=weird")
    by_name = {c.name: c for c in jar}
    assert by_name["a"].http_only and by_name["a"].same_site == "strict"
    assert by_name["b"].same_site == "default" and not by_name["b"].http_only


# --- ordering and replacement -------------------------------------------------------

def test_order_longer_paths_first_then_creation_time() -> None:
    jar, clock = jar_at()
    store(jar, "http://example.com/", "first=1; Path=/")
    clock.now += 1
    store(jar, "http://example.com/", "deep=1; Path=/a/b")
    clock.now += 1
    store(jar, "http://example.com/", "mid=1; Path=/a")
    clock.now += 1
    store(jar, "http://example.com/", "later=1; Path=/")
    assert header(jar, "http://example.com/a/b/c") == "deep=1; mid=1; first=1; later=1"


def test_same_creation_time_keeps_arrival_order() -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/", "z=1", "a=2", "m=3")
    assert header(jar, "http://example.com/") == "z=1; a=2; m=3"


def test_replacement_keeps_creation_time() -> None:
    jar, clock = jar_at()
    store(jar, "http://example.com/", "a=1")
    clock.now += 1
    store(jar, "http://example.com/", "b=1")
    clock.now += 1
    store(jar, "http://example.com/", "a=updated")
    assert header(jar, "http://example.com/") == "a=updated; b=1"
    assert len(jar) == 2


# --- limits -------------------------------------------------------------------------

def test_per_domain_limit_drops_oldest() -> None:
    jar, clock = jar_at()
    for i in range(55):
        clock.now += 1
        store(jar, "http://example.com/", f"c{i}=1")
    assert len(jar) == 50
    names = {c.name for c in jar}
    assert "c0" not in names and "c4" not in names
    assert "c5" in names and "c54" in names


def test_per_domain_limit_drops_expired_first() -> None:
    # the jar's clock stays at T0, so only the eviction itself can drop "short"
    jar = CookieJar(clock=Clock(), max_per_domain=3)
    jar.extract(URL("http://example.com/"), ["old=1", "short=1; Max-Age=1", "mid=1"], now=T0)
    jar.extract(URL("http://example.com/"), ["new=1"], now=T0 + 5)
    assert {c.name for c in jar} == {"old", "mid", "new"}


def test_a_refreshed_cookie_counts_as_just_set_for_eviction() -> None:
    """RFC 6265 5.3: evict the oldest *last access* first. A session cookie
    the server had just refreshed was the first to go, being set first."""
    jar, clock = jar_at()
    jar.max_per_domain = 3
    for name in ("session", "pref0", "pref1"):
        clock.now += 1
        store(jar, "http://example.com/", f"{name}=1")
    clock.now += 1
    store(jar, "http://example.com/", "session=2")  # refreshed
    clock.now += 1
    store(jar, "http://example.com/", "pref2=1")
    assert {c.name for c in jar} == {"session", "pref1", "pref2"}
    # The header order still goes by creation (5.4): session was first.
    assert header(jar, "http://example.com/") == "session=2; pref1=1; pref2=1"


@pytest.mark.parametrize(
    ("name", "value"), [("a", "1; admin=true"), ("a", "1\r\nX-Evil: 1"), ("a=b", "1"), ("", "1")]
)
def test_per_request_cookies_are_checked_like_jar_cookies(name: str, value: str) -> None:
    """`cookies={"a": "1; admin=true"}` went out as two cookies. Refused
    before anything is sent, as other bad request fields are."""
    jar, _ = jar_at()
    with pytest.raises(LocalProtocolError, match="invalid"):
        jar.cookie_header(URL("http://example.com/"), {name: value})


def test_total_limit_drops_globally_oldest() -> None:
    jar, clock = jar_at()
    jar.max_total = 10
    for i in range(12):
        clock.now += 1
        store(jar, f"http://host{i}.example/", "c=1")
    assert len(jar) == 10
    assert header(jar, "http://host0.example/") is None
    assert header(jar, "http://host1.example/") is None
    assert header(jar, "http://host2.example/") == "c=1"
    assert header(jar, "http://host11.example/") == "c=1"


def test_oversize_set_cookie_ignored() -> None:
    jar, _ = jar_at()
    assert store(jar, "http://example.com/", "big=" + "x" * 4093) == 0
    assert store(jar, "http://example.com/", "ok=" + "x" * 4093) == 1


def test_invalid_headers_never_raise() -> None:
    jar, _ = jar_at()
    junk = [
        "", ";", "=", "  ;  ; ", "a", "\x00=\x00", "a=1; Expires=\x00\xff", "a=1; Domain=\xff.com",
        "a=1; Max-Age=" + "9" * 5000, "a=1;;;;Path", "ÿ=ÿ", "a=1; Domain=..", "a=1; Domain=.",
    ]
    # Accepted: "a=1" with a bad Expires, with stray semicolons and with
    # "Domain=." (host-only), and the latin-1 name. The 5000-digit Max-Age
    # makes its header too long.
    assert store(jar, "http://example.com/", *junk) == 4
    assert store(jar, "http://example.com/", "m=1; Max-Age=" + "9" * 4000) == 1
    assert sorted(c.name for c in jar) == ["a", "m", "ÿ"]
    assert jar.extract(URL("/relative"), ["a=1"]) == 0


# --- the mapping surface and per-request cookies ------------------------------------

def test_from_dict_sent_everywhere() -> None:
    jar = CookieJar({"token": "abc", "lang": "en"})
    assert len(jar) == 2
    assert header(jar, "http://example.com/deep/path") == "token=abc; lang=en"
    assert header(jar, "https://other.org/") == "token=abc; lang=en"
    assert jar.get("token") == "abc"
    assert "lang" in jar and "nope" not in jar


def test_set_get_delete_clear() -> None:
    jar, _ = jar_at()
    jar.set("a", "1", domain=".Example.com", path="/x")
    jar.set("a", "2", domain="other.org")
    assert header(jar, "http://www.example.com/x") == "a=1"
    assert header(jar, "http://example.com/") is None
    assert jar.get("a", domain="other.org") == "2"
    assert jar.get("missing", default="d") == "d"
    jar.delete("a", domain="example.com")
    assert [c.domain for c in jar] == ["other.org"]
    jar.set("b", "3")
    jar.clear(domain="other.org")
    assert [c.name for c in jar] == ["b"]
    jar.clear()
    assert len(jar) == 0 and not jar
    assert header(jar, "http://example.com/") is None


@pytest.mark.parametrize(("name", "value"), [("", "v"), ("a;b", "v"), ("a=b", "v"),
                                               ("a", "v;w"), ("a", "v\r\n")])
def test_set_refuses_invalid(name: str, value: str) -> None:
    jar, _ = jar_at()
    with pytest.raises(ValueError):
        jar.set(name, value)


def test_update_from_another_jar() -> None:
    src, _ = jar_at()
    store(src, "https://example.com/", "s=1; Secure; Path=/p")
    dst = CookieJar({"x": "y"})
    dst.update(src)
    assert header(dst, "https://example.com/p") == "s=1; x=y"
    assert header(dst, "http://example.com/p") == "x=y"


def test_per_request_cookies_merge_and_override() -> None:
    jar, _ = jar_at()
    store(jar, "http://example.com/", "a=jar", "b=jar")
    url = URL("http://example.com/")
    assert jar.cookie_header(url, {"b": "req", "c": "req"}) == "a=jar; b=req; c=req"
    assert jar.cookie_header(url, None) == "a=jar; b=jar"
    assert CookieJar().cookie_header(url, {"only": "1"}) == "only=1"
    assert CookieJar().cookie_header(url) is None


def test_repr_hides_values() -> None:
    jar, _ = jar_at()
    store(jar, "https://example.com/", "session=s3cr3t; Secure")
    assert "s3cr3t" not in repr(jar)
    assert "s3cr3t" not in repr(list(jar))
    assert "session" in repr(list(jar))
    assert "cookies=1" in repr(jar)
