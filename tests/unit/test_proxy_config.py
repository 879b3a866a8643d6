"""Proxy configuration, NO_PROXY matching, routing and the CONNECT head."""

from __future__ import annotations

import base64
import ipaddress
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperhttp
from hyperhttp._exceptions import InvalidURL, LocalProtocolError, ProxyError
from hyperhttp._proxy import (
    NoProxy,
    Proxy,
    ProxyConfig,
    Route,
    absolute_form,
    build_connect_request,
    connect_error,
    parse_connect_response,
    routing,
)
from hyperhttp._urls import URL

SECRET = "hunter2-s3cret"


def np(text: str) -> NoProxy:
    return NoProxy.parse(text)


# --- NO_PROXY: names ----------------------------------------------------------
def test_exact_host_case_insensitive_and_trailing_dot() -> None:
    rules = np("Api.Internal.")
    assert rules.matches("api.internal", 80)
    assert rules.matches("API.INTERNAL", 443)
    assert rules.matches("api.internal.", 80)
    assert not rules.matches("api.internal2", 80)
    assert not rules.matches("xapi.internal", 80)
    assert not rules.matches("internal", 80)


def test_bare_domain_matches_itself_and_subdomains() -> None:
    rules = np("corp")
    assert rules.matches("corp", 80)
    assert rules.matches("svc.corp", 80)
    assert rules.matches("a.b.corp", 80)
    assert not rules.matches("notcorp", 80)
    assert not rules.matches("corp.evil.com", 80)
    assert not rules.matches("svc.corp2", 80)


@pytest.mark.parametrize("entry", [".corp", "*.corp"])
def test_dotted_and_star_entries_match_subdomains_only(entry: str) -> None:
    rules = np(entry)
    assert rules.matches("svc.corp", 80)
    assert rules.matches("a.b.corp", 8080)
    assert not rules.matches("corp", 80)
    assert not rules.matches("notcorp", 80)
    assert not rules.matches("svc.notcorp", 80)


def test_international_entry_is_idna_encoded() -> None:
    host = URL("http://bücher.example/").host
    assert np("bücher.example").matches(host, 80)
    assert not np("bucher.example").matches(host, 80)


def test_separators_commas_and_whitespace() -> None:
    rules = np(" a.test ,b.test\tc.test\n , ,d.test ")
    for host in ("a.test", "b.test", "c.test", "d.test"):
        assert rules.matches(host, 80)
    assert not rules.matches("e.test", 80)


def test_star_disables_all_proxying() -> None:
    assert np("*").matches("anything.example", 1)
    assert np("*").matches("10.1.1.1", 80)
    assert np("*").matches_all
    assert np("a.test, *").matches("b.test", 80)
    assert not np("*.test").matches_all
    assert not np("a*").matches("abc", 80)  # not a wildcard form we accept


def test_empty_list_matches_nothing() -> None:
    for text in ("", " , ", "\n"):
        rules = np(text)
        assert not rules
        assert not rules.matches("localhost", 80)
    assert np("x")


# --- NO_PROXY: IP literals, CIDR and ports -------------------------------------
def test_ipv4_and_ipv6_literals() -> None:
    rules = np("127.0.0.1, ::1, [fe80::2]")
    assert rules.matches("127.0.0.1", 80)
    assert rules.matches("::1", 80)
    assert rules.matches("[::1]", 443)
    assert rules.matches("0:0:0:0:0:0:0:1", 80)  # same address, other spelling
    assert rules.matches("fe80::2", 80)
    assert not rules.matches("127.0.0.2", 80)
    assert not rules.matches("::2", 80)
    assert not rules.matches("localhost", 80)  # names are never resolved


def test_ipv6_zones_match_their_address_and_their_own_zone() -> None:
    # A zoned host matches rules for the bare address or range...
    assert np("fe80::1").matches("fe80::1%eth0", 80)
    assert np("fe80::/10").matches("[fe80::1%eth0]", 80)
    # ...and rules carrying the same zone, bracketed, with a port or not.
    zoned = np("fe80::1%eth0, [fe80::2%eth1]:8080")
    assert zoned.matches("fe80::1%eth0", 80)
    assert zoned.matches("[fe80::1%eth0]", 443)
    assert zoned.matches("fe80::2%eth1", 8080)
    assert not zoned.matches("fe80::2%eth1", 80)  # the entry's port only
    # A zoned rule names one interface: not another, not the bare address,
    # and zones are interface names, compared with their case.
    assert not zoned.matches("fe80::1%eth1", 80)
    assert not zoned.matches("fe80::1", 80)
    assert not zoned.matches("fe80::1%ETH0", 80)
    assert not zoned.matches("fe80::3%eth0", 80)


def test_ipv4_mapped_ipv6_host_matches_ipv4_rules() -> None:
    assert np("10.0.0.0/8").matches("::ffff:10.1.2.3", 80)
    assert np("10.1.2.3").matches("::ffff:10.1.2.3", 80)
    assert not np("10.0.0.0/8").matches("::ffff:11.1.2.3", 80)


def test_cidr_ranges_both_families() -> None:
    rules = np("10.0.0.0/8, fd00::/8, ::1/128, [2001:db8::]/32, 192.168.1.77/24")
    assert rules.matches("10.255.0.1", 80)
    assert rules.matches("fd12::1", 80)
    assert rules.matches("::1", 80)
    assert rules.matches("2001:db8:1::5", 80)
    assert rules.matches("192.168.1.200", 80)  # host bits in the entry are masked
    assert not rules.matches("11.0.0.1", 80)
    assert not rules.matches("fe00::1", 80)
    assert not rules.matches("::2", 80)
    assert not rules.matches("192.168.2.1", 80)


def test_cidr_never_matches_names() -> None:
    rules = np("10.0.0.0/8, 0.0.0.0/0, ::/0")
    assert rules.matches("10.0.0.1", 80)
    for name in ("10.0.0.1.nip.io", "localhost", "ten.corp", "10.example"):
        assert not rules.matches(name, 80)


def test_name_rules_never_match_ip_hosts() -> None:
    rules = np("0.1, 1")
    assert not rules.matches("10.0.0.1", 80)
    assert not rules.matches("::1", 80)


def test_host_port_pairs_match_only_that_port() -> None:
    rules = np("host.local:8080, 127.0.0.1:9000, [::1]:8443")
    assert rules.matches("host.local", 8080)
    assert rules.matches("svc.host.local", 8080)
    assert not rules.matches("host.local", 80)
    assert not rules.matches("host.local", None)
    assert rules.matches("127.0.0.1", 9000)
    assert not rules.matches("127.0.0.1", 80)
    assert rules.matches("::1", 8443)
    assert not rules.matches("::1", 443)


def test_port_rule_combines_with_portless_rule() -> None:
    rules = np("a.test:8080, a.test")
    assert rules.matches("a.test", 80)
    assert rules.matches("a.test", 8080)


def test_unbracketed_ipv6_with_port_suffix_is_an_address() -> None:
    # "::1:8080" is itself a valid IPv6 address; a port needs brackets.
    rules = np("::1:8080")
    assert rules.matches("::1:8080", 80)
    assert not rules.matches("::1", 8080)


GARBAGE = [
    "10.0.0.0/99",
    "::zz",
    "10.0.0.0/8:8080",
    "host:notaport",
    "host:0",
    "host:65536",
    ":8080",
    "[::1",
    "[nothost]:80",
    "[::1]x",
    "bad/name",
    "a..b",
    "a*",
    "*",
]


def test_garbage_entries_are_skipped_with_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbage = [g for g in GARBAGE if g != "*"]
    text = ",".join([*garbage, "good.test", garbage[0]])
    with caplog.at_level(logging.WARNING, logger="hyperhttp.proxy"):
        rules = np(text)
    assert rules.matches("good.test", 80)
    assert not rules.matches("host", 80)
    assert not rules.matches("10.1.1.1", 80)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == len(garbage)  # the repeated entry warned once
    for entry in garbage:
        assert any(repr(entry) in m for m in messages), entry


def test_garbage_never_raises_on_random_text() -> None:
    # a bounded sweep over awkward characters
    alphabet = "0123456789abcdef:./[]*%, \t-_é"
    for i in range(400):
        text = "".join(alphabet[(i * 7 + j * 13) % len(alphabet)] for j in range(i % 23))
        NoProxy.parse(text, logger=logging.getLogger("test.discard")).matches("a.b", 80)


def test_injected_logger_receives_warnings(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.proxy.injected")
    with caplog.at_level(logging.WARNING, logger="test.proxy.injected"):
        NoProxy.parse("::zz", logger=logger)
    assert [r.name for r in caplog.records] == ["test.proxy.injected"]


networks = st.one_of(
    st.builds(
        lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv4Address(a)}/{p}", strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv6Address(a)}/{p}", strict=False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
)


@settings(max_examples=300, deadline=None)
@given(net=networks, addr_int=st.integers(0, 2**128 - 1), near=st.booleans())
def test_cidr_matches_like_ipaddress_membership(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network, addr_int: int, near: bool
) -> None:
    bits = net.max_prefixlen
    addr_int %= 2**bits
    if near:  # land inside the network half the time
        addr_int = int(net.network_address) | (addr_int & int(net.hostmask))
    family = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
    addr = family(addr_int)
    expected = addr in net
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        # ::ffff:a.b.c.d also counts as a.b.c.d; v6 networks still decide alone
        assume_v6_only = NoProxy.parse(str(net)).matches(str(addr), 80)
        assert assume_v6_only is expected
        return
    assert NoProxy.parse(str(net)).matches(str(addr), 80) is expected
    # written with host bits set, the entry means the same network
    loose_addr = family(int(net.network_address) | int(net.hostmask) // 2)
    loose = f"{loose_addr}/{net.prefixlen}"
    if net.version == 6:
        loose = f"[{loose_addr}]/{net.prefixlen}"
    assert NoProxy.parse(loose).matches(str(addr), 80) is expected


# --- Proxy --------------------------------------------------------------------
def test_proxy_fields_and_default_ports() -> None:
    p = Proxy("http://proxy.corp:3128")
    assert (p.scheme, p.host, p.port, p.origin) == ("http", "proxy.corp", 3128, ("http", "proxy.corp", 3128))
    assert p.auth_header is None and not p.has_credentials
    assert Proxy("http://proxy.corp").port == 80
    assert Proxy("https://proxy.corp").port == 443
    assert Proxy("HTTPS://Proxy.Corp/").origin == ("https", "proxy.corp", 443)
    assert str(Proxy("http://[::1]:3128").url) == "http://[::1]:3128"
    assert Proxy("http://[::1]:3128").host == "::1"
    assert Proxy(URL("http://p:1")) == Proxy("http://p:1")


@pytest.mark.parametrize("text", ["proxy.corp:3128", "  proxy.corp:3128 ", "u:p@proxy.corp:3128"])
def test_proxy_without_scheme_is_http(text: str) -> None:
    p = Proxy(text)
    assert p.origin == ("http", "proxy.corp", 3128)


@pytest.mark.parametrize("scheme", ["socks", "socks4", "socks4a", "socks5", "socks5h", "SOCKS5"])
def test_socks_is_rejected_clearly(scheme: str) -> None:
    with pytest.raises(InvalidURL, match="SOCKS proxies are not supported") as info:
        Proxy(f"{scheme}://user:{SECRET}@proxy.corp:1080")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "ftp://proxy.corp",
        "http://:3128",
        "http://proxy.corp:3128/path",
        "http://proxy.corp:3128/?q=1",
        "http://proxy.corp:0",
        f"http://us%3Aer:{SECRET}@proxy.corp",
    ],
)
def test_unusable_proxy_urls(text: str) -> None:
    with pytest.raises(InvalidURL) as info:
        Proxy(text)
    assert SECRET not in str(info.value)


def test_credentials_percent_decoded_into_basic_header() -> None:
    p = Proxy("http://us%40er:p%3Ass%2Fw%25rd@proxy.corp:3128")
    assert p.auth_header == "Basic " + base64.b64encode(b"us@er:p:ss/w%rd").decode()
    assert str(p.url) == "http://proxy.corp:3128"
    assert p.url.username is None and p.url.password is None


def test_credentials_utf8() -> None:
    p = Proxy("http://j%C3%BCrgen:p%C3%A4ss@proxy.corp")
    assert p.auth_header == "Basic " + base64.b64encode("jürgen:päss".encode()).decode()


def test_username_only_and_password_only() -> None:
    assert Proxy("http://tok@p").auth_header == "Basic " + base64.b64encode(b"tok:").decode()
    assert Proxy("http://:pw@p").auth_header == "Basic " + base64.b64encode(b":pw").decode()


def test_password_never_shown() -> None:
    p = Proxy(f"http://user:{SECRET}@proxy.corp:3128")
    assert repr(p) == "Proxy('http://user:[secure]@proxy.corp:3128')"
    assert str(p) == p.redacted() == "http://user:[secure]@proxy.corp:3128"
    config = ProxyConfig(http=p, https=p)
    route = config.route_for(URL("https://api.example.com/"))
    for text in (repr(p), str(p), repr(p.url), str(p.url), repr(config), repr(route)):
        assert SECRET not in text
    assert SECRET not in repr(route.pool_key)


def test_lone_username_is_treated_as_secret() -> None:
    p = Proxy(f"http://{SECRET}@proxy.corp:3128")
    assert SECRET not in repr(p) and SECRET not in str(p)
    assert p.has_credentials


def test_proxy_equality_includes_credentials_and_is_immutable() -> None:
    a = Proxy("http://u:1@p:3128")
    assert a == Proxy("http://u:1@p:3128")
    assert hash(a) == hash(Proxy("http://u:1@p:3128"))
    assert a != Proxy("http://u:2@p:3128")
    assert a != Proxy("http://p:3128")
    with pytest.raises(AttributeError):
        a._auth_header = None


# --- ProxyConfig --------------------------------------------------------------
def cfg(proxies: object = None, trust_env: bool = True, **env: str) -> ProxyConfig:
    return ProxyConfig.from_client_args(proxies, trust_env=trust_env, environ=env)  # type: ignore[arg-type]


def origin_of(p: Proxy | None) -> tuple[str, str, int] | None:
    return None if p is None else p.origin


def test_single_string_proxies_both_schemes() -> None:
    c = cfg("http://proxy.corp:3128", HTTP_PROXY="http://env:1")
    assert origin_of(c.proxy_for(URL("http://a/"))) == ("http", "proxy.corp", 3128)
    assert origin_of(c.proxy_for(URL("https://a/"))) == ("http", "proxy.corp", 3128)


def test_dict_per_scheme_and_none_goes_direct() -> None:
    c = cfg({"http": "http://h:1", "https": None}, HTTPS_PROXY="http://env:1")
    assert origin_of(c.proxy_for(URL("http://a/"))) == ("http", "h", 1)
    assert c.proxy_for(URL("https://a/")) is None
    c = cfg({"https": "https://s:2"})
    assert c.proxy_for(URL("http://a/")) is None  # a missing key is direct
    assert origin_of(c.proxy_for(URL("https://a/"))) == ("https", "s", 2)


def test_dict_all_is_fallback_and_explicit_none_beats_it() -> None:
    c = cfg({"all": "http://all:1", "https": "http://s:2"})
    assert origin_of(c.proxy_for(URL("http://a/"))) == ("http", "all", 1)
    assert origin_of(c.proxy_for(URL("https://a/"))) == ("http", "s", 2)
    c = cfg({"all": "http://all:1", "http": None})
    assert c.proxy_for(URL("http://a/")) is None
    assert origin_of(c.proxy_for(URL("https://a/"))) == ("http", "all", 1)


def test_dict_accepts_proxy_and_url_values_and_rejects_unknown_keys() -> None:
    c = cfg({"http": Proxy("http://p:1"), "https": URL("http://q:2")})
    assert origin_of(c.http) == ("http", "p", 1) and origin_of(c.https) == ("http", "q", 2)
    with pytest.raises(ValueError, match="htps"):
        cfg({"htps": "http://p:1"})
    with pytest.raises(TypeError):
        cfg({"http": 3128})
    with pytest.raises(TypeError):
        cfg({"no_proxy": 5})


def test_explicit_proxies_ignore_environment_no_proxy() -> None:
    c = cfg("http://p:1", NO_PROXY="a.test", no_proxy="a.test")
    assert c.proxy_for(URL("http://a.test/")) is not None
    c = cfg({"http": "http://p:1", "no_proxy": "a.test, 10.0.0.0/8"}, NO_PROXY="b.test")
    assert c.proxy_for(URL("http://a.test/")) is None
    assert c.proxy_for(URL("http://10.2.3.4/")) is None
    assert c.proxy_for(URL("http://b.test/")) is not None
    assert cfg({"http": "http://p:1", "no_proxy": ["a.test", "c.test"]}).proxy_for(
        URL("http://c.test/")
    ) is None


def test_environment_per_scheme() -> None:
    c = cfg(HTTP_PROXY="http://h:1", HTTPS_PROXY="http://s:2")
    assert origin_of(c.proxy_for(URL("http://a/"))) == ("http", "h", 1)
    assert origin_of(c.proxy_for(URL("https://a/"))) == ("http", "s", 2)
    assert c.proxy_for(URL("ws://a/")) is None


def test_environment_lower_case_wins_and_empty_is_unset() -> None:
    c = cfg(http_proxy="http://lower:1", HTTP_PROXY="http://upper:2")
    assert origin_of(c.http) == ("http", "lower", 1)
    c = cfg(http_proxy="", HTTP_PROXY="http://upper:2")
    assert origin_of(c.http) == ("http", "upper", 2)
    c = cfg(https_proxy="  ", HTTPS_PROXY="")
    assert c.https is None
    c = cfg(no_proxy="a.test", NO_PROXY="b.test", HTTP_PROXY="http://p:1")
    assert c.proxy_for(URL("http://a.test/")) is None
    assert c.proxy_for(URL("http://b.test/")) is not None


def test_all_proxy_fallback_from_environment() -> None:
    c = cfg(ALL_PROXY="http://all:1", https_proxy="http://s:2")
    assert origin_of(c.http) == ("http", "all", 1)
    assert origin_of(c.https) == ("http", "s", 2)
    c = cfg(all_proxy="http://lower:1", ALL_PROXY="http://upper:2")
    assert origin_of(c.http) == origin_of(c.https) == ("http", "lower", 1)


def test_unused_all_proxy_is_not_parsed() -> None:
    c = cfg(ALL_PROXY="socks5://x:1", HTTP_PROXY="http://h:1", HTTPS_PROXY="http://s:2")
    assert origin_of(c.http) == ("http", "h", 1)


def test_trust_env_false_ignores_everything() -> None:
    env = {"HTTP_PROXY": "http://h:1", "HTTPS_PROXY": "http://s:2", "ALL_PROXY": "http://a:3"}
    c = cfg(None, trust_env=False, **env)
    assert c.http is None and c.https is None and c.is_direct
    assert c.proxy_for(URL("https://a/")) is None


def test_environment_no_proxy_applies() -> None:
    c = cfg(HTTPS_PROXY="http://p:1", NO_PROXY="localhost,.internal,127.0.0.0/8")
    assert c.proxy_for(URL("https://localhost:8443/")) is None
    assert c.proxy_for(URL("https://api.internal/")) is None
    assert c.proxy_for(URL("https://127.0.0.5/")) is None
    assert c.proxy_for(URL("https://example.com/")) is not None
    assert cfg(HTTPS_PROXY="http://p:1", NO_PROXY="*").is_direct


def test_httpoxy_cgi_ignores_http_proxy(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hyperhttp.proxy"):
        c = cfg(
            REQUEST_METHOD="GET",
            HTTP_PROXY=f"http://attacker:{SECRET}@evil:1",
            HTTPS_PROXY="http://s:2",
        )
    assert c.http is None
    assert origin_of(c.https) == ("http", "s", 2)
    assert "HTTP_PROXY" in caplog.text and SECRET not in caplog.text
    assert cfg(REQUEST_METHOD="GET", http_proxy="http://h:1").http is None
    c = cfg(REQUEST_METHOD="POST", HTTP_PROXY="http://evil:1", ALL_PROXY="http://all:3")
    assert origin_of(c.http) == ("http", "all", 3)
    assert origin_of(cfg(HTTP_PROXY="http://h:1").http) == ("http", "h", 1)  # not CGI


def test_bad_environment_proxy_names_variable_not_password() -> None:
    with pytest.raises(InvalidURL, match="HTTPS_PROXY") as info:
        cfg(HTTPS_PROXY=f"socks5h://u:{SECRET}@p:1080")
    assert "SOCKS" in str(info.value) and "trust_env=False" in str(info.value)
    assert SECRET not in str(info.value)


def test_explicit_socks_rejected() -> None:
    with pytest.raises(InvalidURL, match="SOCKS"):
        cfg("socks5://p:1080")
    with pytest.raises(InvalidURL, match="SOCKS"):
        cfg({"https": "socks4://p:1080"})


def test_route_cache_returns_same_route_and_is_bounded() -> None:
    c = cfg({"all": "http://p:1", "no_proxy": "skip.test"})
    first = c.route_for(URL("http://a.test/x"))
    assert c.route_for(URL("http://a.test/y?z")) is first
    assert c.route_for(URL("http://a.test:81/")) is not first
    assert c.route_for(URL("http://skip.test/")).is_direct
    for i in range(3000):
        c.route_for(URL(f"http://h{i}.test/"))
    assert len(c._cache) <= ProxyConfig._CACHE_SIZE


def test_default_config_is_direct() -> None:
    assert cfg({}, HTTP_PROXY="http://h:1", HTTPS_PROXY="http://s:2").is_direct
    c = ProxyConfig()
    assert c.is_direct
    assert c.route_for(URL("https://example.com/")).is_direct


# --- routing ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "proxy", "kind", "proxy_tls", "origin_tls", "h2"),
    [
        ("http://o.test/", "http://p:3128", "forward", False, False, False),
        ("http://o.test/", "https://p:3129", "forward", True, False, False),
        ("https://o.test/", "http://p:3128", "tunnel", False, True, True),
        ("https://o.test/", "https://p:3129", "tunnel", True, True, True),
    ],
)
def test_routing_table(
    target: str, proxy: str, kind: str, proxy_tls: bool, origin_tls: bool, h2: bool
) -> None:
    p = Proxy(proxy)
    route = routing(URL(target), p)
    assert route.kind == kind
    assert (route.proxy_tls, route.origin_tls, route.allows_http2) == (proxy_tls, origin_tls, h2)
    assert route.dial_address == (p.host, p.port)
    assert route.is_forward == (kind == "forward") and route.is_tunnel == (kind == "tunnel")


def test_direct_routes() -> None:
    r = routing(URL("https://o.test:8443/"), None)
    assert r.is_direct and r.origin_tls and r.allows_http2 and not r.proxy_tls
    assert r.dial_address == ("o.test", 8443)
    assert r.proxy_headers == ()
    r = routing(URL("http://o.test/"), None)
    assert r.is_direct and not r.origin_tls and not r.allows_http2
    with pytest.raises(LocalProtocolError):
        r.connect_request()


def test_non_http_target_through_proxy_is_refused() -> None:
    with pytest.raises(InvalidURL):
        routing(URL("ftp://o.test/"), Proxy("http://p:1"))


def test_forward_route_headers_and_absolute_target() -> None:
    p = Proxy(f"http://user:{SECRET}@p:3128")
    url = URL("http://alice:pw@o.test:80/a%20b?q=1#frag")
    route = routing(url, p)
    assert route.proxy_headers == (("Proxy-Authorization", p.auth_header),)
    assert route.request_target(url) == "http://o.test/a%20b?q=1"
    assert absolute_form(URL("http://[::1]:8080")) == "http://[::1]:8080/"
    assert routing(url, Proxy("http://p:3128")).proxy_headers == ()
    with pytest.raises(LocalProtocolError):
        route.connect_request()


def test_tunnel_route_sends_auth_only_on_connect() -> None:
    p = Proxy("http://user:pw@p:3128")
    url = URL("https://o.test/x?y")
    route = routing(url, p)
    assert route.proxy_headers == ()
    assert route.request_target(url) == "/x?y"
    assert route.connect_request() == (
        b"CONNECT o.test:443 HTTP/1.1\r\nHost: o.test:443\r\n"
        b"Proxy-Authorization: " + p.auth_header.encode() + b"\r\n\r\n"  # type: ignore[union-attr]
    )


def test_pool_keys() -> None:
    p = Proxy("http://u:1@p:3128")
    fwd_a = routing(URL("http://a.test/"), p)
    fwd_b = routing(URL("http://b.test:8080/"), p)
    assert fwd_a.pool_key == fwd_b.pool_key  # one forwarding connection serves both
    tun_a = routing(URL("https://a.test/"), p)
    tun_b = routing(URL("https://b.test/"), p)
    assert tun_a.pool_key != tun_b.pool_key
    assert tun_a.pool_key != routing(URL("https://a.test/"), Proxy("http://u:2@p:3128")).pool_key
    assert tun_a.pool_key != routing(URL("https://a.test/"), None).pool_key
    assert routing(URL("https://a.test/"), None).pool_key == ("direct", "https", "a.test", 443)
    assert isinstance(hash(tun_a.pool_key), int)


def test_route_is_immutable_value() -> None:
    r = routing(URL("https://[::1]:8443/"), Proxy("http://p:1"))
    assert r == routing(URL("https://[::1]:8443/x"), Proxy("http://p:1"))
    assert "https://[::1]:8443" in repr(r)
    with pytest.raises(AttributeError):
        r.kind = "direct"  # type: ignore[misc]
    assert isinstance(r, Route)


# --- CONNECT request ----------------------------------------------------------
def test_connect_request_exact_bytes() -> None:
    assert build_connect_request("example.com", 443, None) == (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )
    p = Proxy("http://user:pass@p:3128")
    assert build_connect_request("example.com", 8443, p) == (
        b"CONNECT example.com:8443 HTTP/1.1\r\nHost: example.com:8443\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"
    )


@pytest.mark.parametrize("host", ["2001:db8::1", "[2001:db8::1]"])
def test_connect_request_brackets_ipv6(host: str) -> None:
    assert build_connect_request(host, 443, Proxy("http://p:1")) == (
        b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"
    )


def test_connect_request_extra_headers() -> None:
    out = build_connect_request("a.test", 443, None, extra_headers=[("User-Agent", "hh/1")])
    assert out == b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nUser-Agent: hh/1\r\n\r\n"
    with pytest.raises(LocalProtocolError):
        build_connect_request("a.test", 443, None, extra_headers=[("X", "a\r\nInjected: 1")])
    with pytest.raises(LocalProtocolError):
        build_connect_request("a.test", 443, None, extra_headers=[("Bad Name", "v")])


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("evil.test\r\nX-Injected: 1", 443),
        ("a.test/x", 443),
        ("", 443),
        ("a b", 443),
        ("::zz", 443),
        ("a.test", 0),
        ("a.test", 65536),
        ("a.test", True),
        ("münchen.de", 443),
    ],
)
def test_connect_request_refuses_bad_targets(host: str, port: int) -> None:
    with pytest.raises(LocalProtocolError):
        build_connect_request(host, port, None)


# --- CONNECT response ---------------------------------------------------------
OK = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: test\r\n\r\n"


def test_parse_200_with_leftover() -> None:
    res = parse_connect_response(OK + b"\x16\x03\x01tls")
    assert res is not None
    status, reason, headers, leftover = res
    assert (status, reason) == (200, "Connection established")
    assert headers == [("Proxy-Agent", "test")]
    assert leftover == b"\x16\x03\x01tls"


def test_parse_407() -> None:
    data = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 5\r\n\r\nnope!'
    )
    res = parse_connect_response(data)
    assert res is not None
    assert res.status == 407 and res.reason == "Proxy Authentication Required"
    assert ("Proxy-Authenticate", 'Basic realm="corp"') in res.headers
    assert res.leftover == b"nope!"


def test_parse_variants_accepted() -> None:
    res = parse_connect_response(b"HTTP/1.0 200\r\n\r\n")
    assert res is not None and res.status == 200 and res.reason == "" and res.headers == []
    res = parse_connect_response(b"HTTP/1.1 200 \r\nX:  spaced \t\r\n\r\n")
    assert res is not None and res.headers == [("X", "spaced")]


def test_parse_partial_returns_none_at_every_prefix() -> None:
    for i in range(len(OK)):
        assert parse_connect_response(OK[:i]) is None, i
    assert parse_connect_response(OK) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 600 Nope\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nVia: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nVia: x\ry\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nVia x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nVia : x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\x00c\r\n\r\n",
    ],
)
def test_parse_malformed_raises_proxy_error(data: bytes) -> None:
    p = Proxy(f"http://u:{SECRET}@p.test:3128")
    with pytest.raises(ProxyError) as info:
        parse_connect_response(data, proxy=p)
    assert "p.test:3128" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.status_code is None


def test_parse_head_too_large() -> None:
    big = b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 200
    assert parse_connect_response(big, max_head_size=1000) is None
    with pytest.raises(ProxyError, match="larger"):
        parse_connect_response(big, max_head_size=100)
    with pytest.raises(ProxyError, match="larger"):
        parse_connect_response(big + b"\r\n\r\n", max_head_size=100)


# --- CONNECT errors -----------------------------------------------------------
def test_connect_error_407_with_credentials() -> None:
    p = Proxy(f"http://user:{SECRET}@proxy.corp:3128")
    err = connect_error(407, "Proxy Authentication Required", p)
    assert isinstance(err, ProxyError) and err.status_code == 407
    text = str(err)
    assert "proxy authentication required" in text.lower()
    assert "proxy.corp:3128" in text and "rejected the credentials" in text
    assert SECRET not in text and SECRET not in repr(err)
    assert base64.b64encode(f"user:{SECRET}".encode()).decode() not in text


def test_connect_error_407_without_credentials_hints() -> None:
    err = connect_error(407, "", Proxy("http://proxy.corp:3128"))
    assert "no credentials" in str(err) and err.status_code == 407


def test_connect_error_other_status_names_proxy_not_origin() -> None:
    err = connect_error(502, "Bad Gateway\r\nX: \x1b[31m", Proxy("https://proxy.corp"))
    text = str(err)
    assert err.status_code == 502
    assert "https://proxy.corp:443" in text and "502 Bad Gateway" in text
    assert "\r" not in text and "\x1b" not in text
    assert "api.example.com" not in text


def test_a_proxy_password_misread_as_a_port_is_not_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = "http://bob:Pa55w0rd/x@proxy.corp:3128"
    for make in (lambda: Proxy(bad), lambda: hyperhttp.Client(proxies=bad)):
        with pytest.raises(hyperhttp.InvalidURL) as caught:
            make()
        assert "Pa55w0rd" not in str(caught.value)
    monkeypatch.setenv("HTTPS_PROXY", bad)
    with pytest.raises(hyperhttp.InvalidURL, match="HTTPS_PROXY") as caught:
        hyperhttp.Client()
    assert "Pa55w0rd" not in str(caught.value)


@pytest.mark.parametrize(
    ("bad", "pieces"),
    [
        ("http://bob:8123/secret@proxy.corp:3128", ["8123", "secret"]),
        ("http://bob:4242?tok@proxy.corp:3128", ["4242", "tok"]),
        ("http://bob:9999#fr4g@proxy.corp:3128", ["9999", "fr4g"]),
    ],
)
def test_an_all_digit_password_start_misread_as_a_port_is_not_quoted(
    bad: str, pieces: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Digits before the unencoded "/", "?" or "#" parse as a valid port, so
    # the port check passed and the path check quoted "bob:8123".
    monkeypatch.setenv("HTTPS_PROXY", bad)
    for make in (lambda: Proxy(bad), lambda: hyperhttp.Client(proxies=bad), hyperhttp.Client):
        with pytest.raises(hyperhttp.InvalidURL) as caught:
            make()
        text = f"{caught.value} {caught.value!r}"
        assert not [p for p in pieces if p in text], text
        assert "percent-encode '/', '?', '#' and '@'" in text


def test_a_proxy_url_with_a_path_still_names_the_proxy() -> None:
    with pytest.raises(InvalidURL) as caught:
        Proxy(f"http://bob:{SECRET}@proxy.corp:3128/path")
    assert str(caught.value) == (
        "proxy URL must not have a path, query or fragment: http://bob:[secure]@proxy.corp:3128 "
        "(percent-encode '/', '?', '#' and '@' in a proxy user name or password)"
    )
