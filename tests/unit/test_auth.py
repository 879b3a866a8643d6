"""Authentication schemes, driven by hand with fake responses (no network).

Expected Digest values come from RFC 7616 section 3.9 and are also
recomputed here from the RFC formulas with hashlib, independently of
`hyperhttp._auth`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from collections.abc import Callable, Generator
from typing import Any
from urllib.request import parse_http_list, parse_keqv_list

import pytest

from hyperhttp._auth import (
    Auth,
    BasicAuth,
    BearerAuth,
    DigestAuth,
    FunctionAuth,
    basic_auth_header,
    build_auth,
    parse_challenges,
)
from hyperhttp._content import IterableBody
from hyperhttp._exceptions import StreamConsumed
from hyperhttp._models import Request, Response

# --- RFC 7616 section 3.9.1 ----------------------------------------------------
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_URL = "http://www.example.org/dir/index.html"
RFC_MD5_RESPONSE = "8ca523f5e9506fed4657c9700eebdbec"
RFC_SHA256_RESPONSE = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"

# --- RFC 7616 section 3.9.2 ----------------------------------------------------
RFC2_REALM = "api@example.org"
RFC2_NONCE = "5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK"
RFC2_OPAQUE = "HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS"
RFC2_CNONCE = "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v"
RFC2_USER = "J\u00e4s\u00f8n Doe"
RFC2_PASSWORD = "Secret, or not?"
# The values printed in the RFC were computed with SHA-512 cut to 256 bits,
# not SHA-512/256 (a known erratum); the real SHA-512/256 values follow.
RFC2_PRINTED_USERHASH = "488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec"
RFC2_PRINTED_RESPONSE = "ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd"
RFC2_USERHASH = "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
RFC2_RESPONSE = "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"

_HASHLIB = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def H(algorithm: str, text: str) -> str:
    """RFC 7616 H(), straight from hashlib."""
    return hashlib.new(_HASHLIB[algorithm], text.encode("utf-8")).hexdigest()


def rfc_response(
    algorithm: str,
    *,
    user: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str | None = "auth",
    sess: bool = False,
) -> str:
    ha1 = H(algorithm, f"{user}:{realm}:{password}")
    if sess:
        ha1 = H(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = H(algorithm, f"{method}:{uri}")
    if qop is None:
        return H(algorithm, f"{ha1}:{nonce}:{ha2}")
    return H(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def digest_params(header: str | None) -> dict[str, str]:
    """Split an Authorization: Digest header with the standard library."""
    assert header is not None and header.startswith("Digest ")
    return parse_keqv_list(parse_http_list(header[len("Digest ") :]))


def challenge(**params: str) -> str:
    return "Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items())


def unauthorized(request: Request, *challenges: str) -> Response:
    return Response(401, headers=[("WWW-Authenticate", c) for c in challenges], request=request)


def ok(request: Request) -> Response:
    return Response(200, request=request)


def drive(
    auth: Auth, request: Request, respond: Callable[[Request, int], Response]
) -> tuple[Response, list[str | None]]:
    """Run a flow the way the client does; `respond(request, attempt)` plays
    the server. Returns the last response and the Authorization of each send."""
    flow = auth.auth_flow(request)
    sent = next(flow)
    seen: list[str | None] = []
    for attempt in range(10):
        seen.append(sent.headers.get("Authorization"))
        response = respond(sent, attempt)
        try:
            sent = flow.send(response)
        except StopIteration:
            return response, seen
    raise AssertionError("flow did not end")


def fixed(value: str) -> Callable[[], str]:
    return lambda: value


# --- Digest: RFC worked examples -----------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("MD5", RFC_MD5_RESPONSE), ("SHA-256", RFC_SHA256_RESPONSE)]
)
def test_rfc7616_3_9_1_examples(algorithm: str, expected: str) -> None:
    computed = rfc_response(
        algorithm,
        user="Mufasa",
        realm=RFC_REALM,
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        nonce=RFC_NONCE,
        nc="00000001",
        cnonce=RFC_CNONCE,
    )
    assert computed == expected  # the RFC's value agrees with its formulas
    auth = DigestAuth("Mufasa", "Circle of Life", cnonce_factory=fixed(RFC_CNONCE))
    www = (
        f'Digest realm="{RFC_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"'
    )
    calls: list[str | None] = []

    def respond(req: Request, attempt: int) -> Response:
        return unauthorized(req, www) if attempt == 0 else ok(req)

    response, calls = drive(auth, Request("GET", RFC_URL), respond)
    assert response.status_code == 200
    assert calls[0] is None
    p = digest_params(calls[1])
    assert p == {
        "username": "Mufasa",
        "realm": RFC_REALM,
        "uri": "/dir/index.html",
        "algorithm": algorithm,
        "nonce": RFC_NONCE,
        "nc": "00000001",
        "cnonce": RFC_CNONCE,
        "qop": "auth",
        "response": expected,
        "opaque": RFC_OPAQUE,
    }


def test_rfc7616_both_challenges_picks_sha256() -> None:
    # Section 3.9.1 sends the SHA-256 and the MD5 challenge together.
    auth = DigestAuth("Mufasa", "Circle of Life", cnonce_factory=fixed(RFC_CNONCE))
    md5 = f'Digest realm="{RFC_REALM}", qop="auth, auth-int", algorithm=MD5, nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"'
    sha = md5.replace("MD5", "SHA-256")
    for order in ([md5, sha], [sha, md5]):
        auth = DigestAuth("Mufasa", "Circle of Life", cnonce_factory=fixed(RFC_CNONCE))
        _, calls = drive(
            auth,
            Request("GET", RFC_URL),
            lambda r, a, o=order: unauthorized(r, *o) if a == 0 else ok(r),  # type: ignore[misc]
        )
        assert digest_params(calls[1])["response"] == RFC_SHA256_RESPONSE


def _rfc2_flow(userhash: str) -> dict[str, str]:
    auth = DigestAuth(RFC2_USER, RFC2_PASSWORD, cnonce_factory=fixed(RFC2_CNONCE))
    www = (
        f'Digest realm="{RFC2_REALM}", qop="auth", algorithm=SHA-512-256, '
        f'nonce="{RFC2_NONCE}", opaque="{RFC2_OPAQUE}", charset=UTF-8, userhash={userhash}'
    )
    _, calls = drive(
        auth,
        Request("GET", "http://api.example.org/doe.json"),
        lambda r, a: unauthorized(r, www) if a == 0 else ok(r),
    )
    return digest_params(calls[1])


def test_rfc7616_3_9_2_userhash_sha512_256() -> None:
    assert H("SHA-512-256", f"{RFC2_USER}:{RFC2_REALM}") == RFC2_USERHASH
    expected = rfc_response(
        "SHA-512-256",
        user=RFC2_USER,
        realm=RFC2_REALM,
        password=RFC2_PASSWORD,
        method="GET",
        uri="/doe.json",
        nonce=RFC2_NONCE,
        nc="00000001",
        cnonce=RFC2_CNONCE,
    )
    assert expected == RFC2_RESPONSE
    p = _rfc2_flow("true")
    assert p["username"] == RFC2_USERHASH
    assert p["userhash"] == "true"
    assert p["response"] == RFC2_RESPONSE
    assert p["algorithm"] == "SHA-512-256"
    assert (p["uri"], p["nc"], p["opaque"]) == ("/doe.json", "00000001", RFC2_OPAQUE)
    # The RFC's printed values are SHA-512 truncated; we must not produce them.
    truncated = hashlib.sha512(f"{RFC2_USER}:{RFC2_REALM}".encode()).hexdigest()[:64]
    assert truncated == RFC2_PRINTED_USERHASH
    assert p["username"] != RFC2_PRINTED_USERHASH
    assert p["response"] != RFC2_PRINTED_RESPONSE


def test_rfc7616_3_9_2_without_userhash_uses_username_star() -> None:
    p = _rfc2_flow("false")
    assert "username" not in p
    assert p["username*"] == "UTF-8''J%C3%A4s%C3%B8n%20Doe"
    assert "userhash" not in p
    assert p["response"] == RFC2_RESPONSE  # A1 uses the plain username either way


def test_sha512_256_is_fips_180_4_not_truncated_sha512() -> None:
    data = b"abc"
    real = hashlib.new("sha512_256", data).hexdigest()
    # FIPS 180-4 example value for SHA-512/256("abc").
    assert real == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    assert real != hashlib.sha512(data).hexdigest()[:64]
    auth = DigestAuth("u", "p", cnonce_factory=fixed("c"))
    www = challenge(realm="r", nonce="n", qop="auth") + ", algorithm=SHA-512-256"
    _, calls = drive(
        auth, Request("GET", "http://h/x"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r)
    )
    ha1_true = H("SHA-512-256", "u:r:p")
    ha1_wrong = hashlib.sha512(b"u:r:p").hexdigest()[:64]
    ha2 = H("SHA-512-256", "GET:/x")
    assert digest_params(calls[1])["response"] == H(
        "SHA-512-256", f"{ha1_true}:n:00000001:c:auth:{ha2}"
    )
    assert ha1_true != ha1_wrong


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "SHA-512-256"])
def test_sess_variants(algorithm: str) -> None:
    auth = DigestAuth("Mufasa", "Circle of Life", cnonce_factory=fixed("abc123"))
    www = challenge(realm="R", nonce="N0", qop="auth") + f", algorithm={algorithm.lower()}-SESS"
    _, calls = drive(
        auth,
        Request("POST", "http://h/a/b?q=1 2", content=b"x"),
        lambda r, a: unauthorized(r, www) if a == 0 else ok(r),
    )
    p = digest_params(calls[1])
    assert p["algorithm"] == f"{algorithm}-sess"
    assert p["uri"] == "/a/b?q=1%202"
    inner = H(algorithm, "Mufasa:R:Circle of Life")
    ha1 = H(algorithm, f"{inner}:N0:abc123")
    ha2 = H(algorithm, f"POST:{p['uri']}")
    assert p["response"] == H(algorithm, f"{ha1}:N0:00000001:abc123:auth:{ha2}")
    plain = H(algorithm, f"{inner}:N0:00000001:abc123:auth:{ha2}")
    assert p["response"] != plain


@pytest.mark.parametrize("with_algorithm", [True, False])
def test_rfc2069_without_qop(with_algorithm: bool) -> None:
    auth = DigestAuth("Mufasa", "Circle of Life", cnonce_factory=fixed("zzz"))
    www = challenge(realm="R", nonce="N1", opaque="O") + (
        ", algorithm=MD5" if with_algorithm else ""
    )
    _, calls = drive(
        auth, Request("GET", "http://h/p"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r)
    )
    p = digest_params(calls[1])
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    assert ("algorithm" in p) is with_algorithm
    assert p["opaque"] == "O"
    ha1, ha2 = H("MD5", "Mufasa:R:Circle of Life"), H("MD5", "GET:/p")
    assert p["response"] == H("MD5", f"{ha1}:N1:{ha2}")


# --- Digest: bytes on the wire ---------------------------------------------------


def H_bytes(algorithm: str, *fields: bytes) -> str:
    """RFC 7616 H(a:b:...) over bytes, straight from hashlib."""
    return hashlib.new(_HASHLIB[algorithm], b":".join(fields)).hexdigest()


def as_received(raw: bytes) -> str:
    """Header text as a response carries it: the wire bytes decoded as latin-1."""
    return raw.decode("latin-1")


@pytest.mark.parametrize("userhash", [False, True])
@pytest.mark.parametrize(
    ("realm", "nonce"),
    [
        ("B\u00fcro".encode(), b"n0"),  # UTF-8 realm
        ("B\u00fcro".encode("latin-1"), b"n0"),  # ISO-8859-1 realm
        (b"api@example.org", "n\u00e9".encode()),  # non-ASCII nonce
    ],
    ids=["utf8-realm", "latin1-realm", "utf8-nonce"],
)
def test_challenge_values_are_hashed_as_the_bytes_the_server_sent(
    realm: bytes, nonce: bytes, userhash: bool
) -> None:
    auth = DigestAuth("j\u00f6rg", "p\u00e4ss", cnonce_factory=fixed("c0"))
    www = (
        f'Digest realm="{as_received(realm)}", nonce="{as_received(nonce)}", qop="auth", '
        f"algorithm=SHA-256-sess, userhash={str(userhash).lower()}"
    )
    response, calls = drive(
        auth, Request("GET", "http://h/x"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r)
    )
    assert response.status_code == 200
    p = digest_params(calls[1])
    user, password = "j\u00f6rg".encode(), "p\u00e4ss".encode()  # str credentials: UTF-8
    inner = H_bytes("SHA-256", user, realm, password)
    ha1 = H_bytes("SHA-256", inner.encode(), nonce, b"c0")
    ha2 = H_bytes("SHA-256", b"GET", b"/x")
    assert p["response"] == H_bytes("SHA-256", ha1.encode(), nonce, b"00000001", b"c0", b"auth",
                                    ha2.encode())
    # Echoed as received, so the header carries the server's own bytes back.
    assert (p["realm"], p["nonce"]) == (as_received(realm), as_received(nonce))
    if userhash:
        assert p["username"] == H_bytes("SHA-256", user, realm)
    else:
        assert p["username*"] == "UTF-8''j%C3%B6rg"


def test_bytes_credentials_in_any_encoding() -> None:
    """Bytes are the caller's exact credentials: sent and hashed as given,
    whatever their encoding; a repr shows what it can and never the password."""
    user, password = "j\u00fcrgen".encode("latin-1"), "p\u00e4ss".encode("latin-1")
    basic = BasicAuth(user, password)
    _, calls = drive(basic, Request("GET", "http://h/"), lambda r, a: ok(r))
    assert calls == ["Basic " + base64.b64encode(user + b":" + password).decode()]
    # Undecodable bytes are shown escaped (one backslash, as repr doubles it).
    assert repr(basic) == r"BasicAuth(username='j\\xfcrgen', password=[secure])"
    shorthand = build_auth((user, password))
    assert isinstance(shorthand, BasicAuth)
    assert repr(shorthand) == repr(basic)

    for userhash in (False, True):
        digest = DigestAuth(user, password, cnonce_factory=fixed("c"))
        assert repr(digest) == r"DigestAuth(username='j\\xfcrgen', password=[secure])"
        www = challenge(realm="r", nonce="n", qop="auth") + f", userhash={userhash}"
        _, calls = drive(
            digest, Request("GET", "http://h/x"),
            lambda r, a, www=www: unauthorized(r, www) if a == 0 else ok(r),
        )
        p = digest_params(calls[1])
        ha1 = H_bytes("MD5", user, b"r", password)
        ha2 = H_bytes("MD5", b"GET", b"/x")
        assert p["response"] == H_bytes("MD5", ha1.encode(), b"n", b"00000001", b"c", b"auth",
                                        ha2.encode())
        if userhash:
            assert p["username"] == H_bytes("MD5", user, b"r")
        else:
            # Not UTF-8, so labelled with RFC 8187's other charset; the
            # percent-encoding carries the exact bytes.
            assert p["username*"] == "ISO-8859-1''j%FCrgen"
    utf8 = DigestAuth("j\u00fcrgen".encode(), b"pw")
    assert repr(utf8) == "DigestAuth(username='j\u00fcrgen', password=[secure])"


# --- Challenge parsing ---------------------------------------------------------


def test_parse_several_challenges_in_one_header() -> None:
    got = parse_challenges(
        [
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", '
            'Basic realm="simple", Bearer abc.def==, '
            'DIGEST Realm="x, y", NONCE=abc/def==, qop="auth,auth-int", ,'
        ]
    )
    assert [c.scheme for c in got] == ["newauth", "basic", "bearer", "digest"]
    assert got[0].params == {"realm": "apps", "type": "1", "title": 'Login to "apps"'}
    assert got[2].token68 == "abc.def=="
    assert got[3].params == {"realm": "x, y", "nonce": "abc/def==", "qop": "auth,auth-int"}


def test_parse_odd_input_does_not_raise() -> None:
    for text in ['Digest realm="unterminated', "=,=,,", "Digest =x, realm", "\x00\xff", ""]:
        parse_challenges([text])
    got = parse_challenges(['Digest realm="unterminated\\"', "Basic"])
    assert got[0].params == {"realm": 'unterminated"'}
    assert got[1].scheme == "basic"


def test_picks_strongest_across_headers_and_skips_unusable() -> None:
    auth = DigestAuth("u", "p", cnonce_factory=fixed("c"))
    headers = [
        'Basic realm="b"',
        'Digest realm="r", nonce="n1", qop="auth", algorithm=MD5',
        'Digest realm="r", nonce="n2", qop="auth", algorithm=SHA-1024',  # unknown
        'Digest realm="r", nonce="n3", qop="auth-int", algorithm=SHA-512-256',  # int only
        'Digest realm="r", qop="auth", algorithm=SHA-512-256',  # no nonce
        'Digest realm="r", nonce="n4", qop="auth", algorithm=SHA-256-sess, '
        'Digest realm="r", nonce="n5", algorithm=SHA-256',
    ]
    _, calls = drive(
        auth,
        Request("GET", "http://h/"),
        lambda r, a: unauthorized(r, *headers) if a == 0 else ok(r),
    )
    p = digest_params(calls[1])
    assert (p["nonce"], p["algorithm"]) == ("n4", "SHA-256-sess")


def test_escaped_realm_round_trips_and_case_insensitive_names() -> None:
    auth = DigestAuth('a"b\\c', "p", cnonce_factory=fixed("c"))
    www = 'dIgEsT REALM="say \\"hi\\"", Nonce="n", QOP=auth, ALGORITHM=sha-256, Opaque=o'
    _, calls = drive(
        auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r)
    )
    header = calls[1]
    assert header is not None
    assert 'realm="say \\"hi\\""' in header
    assert 'username="a\\"b\\\\c"' in header
    p = digest_params(header)
    assert p["realm"] == 'say "hi"' and p["username"] == 'a"b\\c' and p["opaque"] == "o"
    assert p["algorithm"] == "SHA-256"
    ha1 = H("SHA-256", 'a"b\\c:say "hi":p')
    ha2 = H("SHA-256", "GET:/")
    assert p["response"] == H("SHA-256", f"{ha1}:n:00000001:c:auth:{ha2}")


def test_challenge_with_control_characters_is_ignored() -> None:
    auth = DigestAuth("u", "p")
    www = 'Digest realm="a\x01b", nonce="n", qop=auth'
    response, calls = drive(auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www))
    assert response.status_code == 401 and calls == [None]


# --- Digest: flow behaviour ----------------------------------------------------


def test_auth_int_only_is_not_answered() -> None:
    auth = DigestAuth("u", "p")
    www = challenge(realm="r", nonce="n", qop="auth-int")
    response, calls = drive(auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www))
    assert response.status_code == 401
    assert calls == [None]


def test_auth_and_auth_int_chooses_auth() -> None:
    auth = DigestAuth("u", "p")
    www = challenge(realm="r", nonce="n", qop="auth-int, auth")
    _, calls = drive(
        auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r)
    )
    assert digest_params(calls[1])["qop"] == "auth"


def test_non_digest_401_and_success_end_the_flow() -> None:
    auth = DigestAuth("u", "p")
    response, calls = drive(
        auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, 'Basic realm="x"')
    )
    assert response.status_code == 401 and calls == [None]
    response, calls = drive(auth, Request("GET", "http://h/"), lambda r, a: ok(r))
    assert response.status_code == 200 and calls == [None]


def test_stale_is_retried_exactly_once() -> None:
    auth = DigestAuth("u", "p")
    nonces = iter(["n1", "n2", "n3", "n4"])

    def respond(r: Request, attempt: int) -> Response:
        stale = ", stale=true" if attempt > 0 else ""
        return unauthorized(r, challenge(realm="r", nonce=next(nonces), qop="auth") + stale)

    response, calls = drive(auth, Request("GET", "http://h/"), respond)
    assert response.status_code == 401
    assert len(calls) == 3
    assert calls[0] is None
    assert [(digest_params(c)["nonce"], digest_params(c)["nc"]) for c in calls[1:]] == [
        ("n1", "00000001"),
        ("n2", "00000001"),
    ]


def test_stale_after_preemptive_request_is_retried_exactly_once() -> None:
    auth = DigestAuth("u", "p")
    www = challenge(realm="r", nonce="n0", qop="auth")
    drive(auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r))
    nonces = iter(["n1", "n2", "n3"])

    def always_stale(r: Request, attempt: int) -> Response:
        return unauthorized(
            r, challenge(realm="r", nonce=next(nonces), qop="auth") + ", stale=true"
        )

    response, calls = drive(auth, Request("GET", "http://h/"), always_stale)
    assert response.status_code == 401
    assert [digest_params(c)["nonce"] for c in calls] == ["n0", "n1"]


def test_wrong_password_is_not_retried_forever() -> None:
    auth = DigestAuth("u", "wrong")
    www = challenge(realm="r", nonce="n", qop="auth")
    response, calls = drive(auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www))
    assert response.status_code == 401
    assert len(calls) == 2
    # The failed challenge is forgotten: the next request starts without credentials.
    _, calls = drive(auth, Request("GET", "http://h/"), lambda r, a: ok(r))
    assert calls == [None]


def test_nc_increments_with_same_nonce_and_resets_on_fresh_nonce() -> None:
    auth = DigestAuth("Mufasa", "Circle of Life", cnonce_factory=fixed("c"))
    current = {"nonce": "A"}

    def server(r: Request, attempt: int) -> Response:
        header = r.headers.get("Authorization")
        www = challenge(realm="r", nonce=current["nonce"], qop="auth")
        if header is None:
            return unauthorized(r, www)
        if digest_params(header)["nonce"] != current["nonce"]:
            return unauthorized(r, www + ", stale=true")
        return ok(r)

    seen: list[tuple[str, str]] = []
    for i in range(6):
        if i == 3:
            current["nonce"] = "B"  # the server rotates its nonce
        response, calls = drive(auth, Request("GET", f"http://h/{i}"), server)
        assert response.status_code == 200
        p = digest_params(calls[-1])
        seen.append((p["nonce"], p["nc"]))
        # Only the very first request waits for a 401; later ones go pre-emptively.
        assert calls[0] is None if i == 0 else calls[0] is not None
        ha1, ha2 = H("MD5", "Mufasa:r:Circle of Life"), H("MD5", f"GET:/{i}")
        assert p["response"] == H("MD5", f"{ha1}:{p['nonce']}:{p['nc']}:c:auth:{ha2}")
    assert seen == [
        ("A", "00000001"),
        ("A", "00000002"),
        ("A", "00000003"),
        ("B", "00000001"),
        ("B", "00000002"),
        ("B", "00000003"),
    ]


def test_preemptive_rejection_gets_one_fresh_answer() -> None:
    auth = DigestAuth("u", "p")
    www = challenge(realm="r", nonce="n", qop="auth")
    drive(auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r))
    # The server no longer knows the nonce and says so without stale=true.
    www2 = challenge(realm="r", nonce="m", qop="auth")
    response, calls = drive(
        auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www2) if a == 0 else ok(r)
    )
    assert response.status_code == 200
    assert [digest_params(c)["nonce"] for c in calls] == ["n", "m"]


def test_challenge_is_not_reused_on_another_origin() -> None:
    auth = DigestAuth("u", "p")
    www = challenge(realm="r", nonce="n", qop="auth")
    drive(auth, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r))
    _, calls = drive(auth, Request("GET", "http://other/"), lambda r, a: ok(r))
    assert calls == [None]
    _, calls = drive(auth, Request("GET", "https://h/"), lambda r, a: ok(r))
    assert calls == [None]
    _, calls = drive(auth, Request("GET", "http://h/again"), lambda r, a: ok(r))
    assert digest_params(calls[0])["nc"] == "00000002"


def test_single_use_body_is_not_replayed() -> None:
    # The challenge asks for the request again; a spent single-use body
    # cannot go again, which is said clearly instead of sending a short body.
    auth = DigestAuth("u", "p")
    www = challenge(realm="r", nonce="n", qop="auth")
    request = Request("POST", "http://h/", stream=IterableBody([b"once"]))
    with pytest.raises(StreamConsumed, match="single-use"):
        drive(auth, request, lambda r, a: unauthorized(r, www))


def test_default_cnonce_is_random() -> None:
    auth = DigestAuth("u", "p")
    www = challenge(realm="r", nonce="n", qop="auth")
    cnonces = set()
    for _ in range(5):
        _, calls = drive(
            auth,
            Request("GET", "http://h/"),
            lambda r, a: unauthorized(r, www) if a == 0 else ok(r),
        )
        cnonces.add(digest_params(calls[-1])["cnonce"])
    assert len(cnonces) == 5
    assert all(len(c) >= 16 for c in cnonces)


async def _run_flow_async(
    auth: Auth, request: Request, server: Callable[[Request], Response], rng: random.Random
) -> list[str | None]:
    flow = auth.auth_flow(request)
    sent = next(flow)
    seen: list[str | None] = []
    for _ in range(5):
        seen.append(sent.headers.get("Authorization"))
        await asyncio.sleep(rng.random() / 1000)  # interleave the flows
        response = server(sent)
        try:
            sent = flow.send(response)
        except StopIteration:
            return seen
    raise AssertionError("flow did not end")


async def test_concurrent_flows_get_distinct_nonce_counts(loop_name: str) -> None:
    await _concurrent_flows(primed=False)


async def test_concurrent_preemptive_flows_get_distinct_nonce_counts(loop_name: str) -> None:
    await _concurrent_flows(primed=True)


async def _concurrent_flows(*, primed: bool) -> None:
    auth = DigestAuth("u", "p")
    www = challenge(realm="r", nonce="shared", qop="auth")
    used: list[str] = []

    def server(r: Request) -> Response:
        header = r.headers.get("Authorization")
        if header is None:
            return unauthorized(r, www)
        used.append(digest_params(header)["nc"])
        return ok(r)

    if primed:
        drive(auth, Request("GET", "http://h/"), lambda r, a: server(r))
    used.clear()
    rng = random.Random(7)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                _run_flow_async(auth, Request("GET", f"http://h/{i}"), server, rng)
                for i in range(100)
            )
        ),
        timeout=30,
    )
    assert len(used) == 100
    assert len(set(used)) == 100
    start = 2 if primed else 1
    assert sorted(int(nc, 16) for nc in used) == list(range(start, start + 100))
    assert all((r[0] is None) is (not primed) for r in results)


# --- Basic, Bearer, shorthand, functions, repr ---------------------------------


def test_basic_utf8_credentials() -> None:
    auth = BasicAuth("jös\u00e9", "p\u00e4ss:w\u00f6rd\u20ac")
    _, calls = drive(auth, Request("GET", "http://h/"), lambda r, a: ok(r))
    assert len(calls) == 1 and calls[0] is not None
    scheme, _, encoded = calls[0].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode("utf-8") == "jös\u00e9:p\u00e4ss:w\u00f6rd\u20ac"


def test_basic_ascii_and_bytes() -> None:
    assert basic_auth_header("alice", "s3cret") == "Basic YWxpY2U6czNjcmV0"
    assert basic_auth_header(b"alice", b"s3cret") == "Basic YWxpY2U6czNjcmV0"
    # RFC 7617 section 2: the example "Aladdin" / "open sesame".
    assert basic_auth_header("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    with pytest.raises(ValueError, match="':'"):
        BasicAuth("a:b", "c")


def test_basic_replaces_existing_authorization() -> None:
    request = Request("GET", "http://h/", headers={"authorization": "Bearer old"})
    _, calls = drive(BasicAuth("alice", "s3cret"), request, lambda r, a: ok(r))
    assert calls == ["Basic YWxpY2U6czNjcmV0"]
    assert request.headers.get_list("Authorization") == ["Basic YWxpY2U6czNjcmV0"]


def test_bearer() -> None:
    _, calls = drive(BearerAuth("abc.def.ghi"), Request("GET", "http://h/"), lambda r, a: ok(r))
    assert calls == ["Bearer abc.def.ghi"]


def test_build_auth() -> None:
    auth = build_auth(("alice", "s3cret"))
    assert isinstance(auth, BasicAuth)
    _, calls = drive(auth, Request("GET", "http://h/"), lambda r, a: ok(r))
    assert calls == ["Basic YWxpY2U6czNjcmV0"]
    assert build_auth(None) is None
    digest = DigestAuth("u", "p")
    assert build_auth(digest) is digest

    def sign(request: Request) -> None:
        request.headers["X-Sig"] = "1"

    fn = build_auth(sign)
    assert isinstance(fn, FunctionAuth)
    request = Request("GET", "http://h/")
    drive(fn, request, lambda r, a: ok(r))
    assert request.headers["x-sig"] == "1"
    for bad in [("only-one",), ("a", "b", "c"), ("a", 1), 42, "user:pass"]:
        with pytest.raises(TypeError):
            build_auth(bad)

    async def async_sign(request: Request) -> None:
        return None

    with pytest.raises(TypeError, match="synchronous"):
        build_auth(async_sign)


def test_function_auth_may_return_a_new_request() -> None:
    replacement = Request("GET", "http://h/replaced")
    auth = FunctionAuth(lambda request: replacement)
    flow = auth.auth_flow(Request("GET", "http://h/"))
    assert next(flow) is replacement


def test_repr_hides_secrets() -> None:
    digest = DigestAuth("Mufasa", "Circle of Life", cnonce_factory=fixed("c"))
    www = challenge(realm="r", nonce="n", qop="auth")
    drive(
        digest, Request("GET", "http://h/"), lambda r, a: unauthorized(r, www) if a == 0 else ok(r)
    )
    cases: list[tuple[Any, str, str]] = [
        (BasicAuth("alice", "s3cret"), "s3cret", "BasicAuth(username='alice', password=[secure])"),
        (
            build_auth(("alice", "s3cret")),
            "s3cret",
            "BasicAuth(username='alice', password=[secure])",
        ),
        (BearerAuth("abc.def.ghi"), "abc.def.ghi", "BearerAuth(token=[secure])"),
        (digest, "Circle of Life", "DigestAuth(username='Mufasa', password=[secure])"),
    ]
    for auth, secret, expected in cases:
        assert repr(auth) == expected
        assert secret not in repr(auth) and secret not in str(auth)
        assert "YWxpY2U6czNjcmV0" not in repr(auth)


def test_flags() -> None:
    assert DigestAuth("u", "p").requires_response is True
    for auth in (DigestAuth("u", "p"), BasicAuth("u", "p"), BearerAuth("t")):
        assert auth.requires_request_body is False
        assert auth.requires_response_body is False
    assert BasicAuth("u", "p").requires_response is False


# --- The custom schemes of the documentation, as written -----------------------


def compute(*args: Any) -> str:
    return "Custom computed"


class ApiKeyAuth(Auth):
    def __init__(self, key: str) -> None:
        self._key = key

    def auth_flow(self, request):  # type: ignore[no-untyped-def]
        request.headers["X-API-Key"] = self._key
        yield request


class MyChallengeAuth(Auth):
    requires_response = True

    def auth_flow(self, request):  # type: ignore[no-untyped-def]
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = compute(...)
            yield request


def test_documented_custom_schemes() -> None:
    request = Request("GET", "http://h/")
    response, calls = drive(ApiKeyAuth("k-123"), request, lambda r, a: ok(r))
    assert response.status_code == 200
    assert request.headers["X-API-Key"] == "k-123"

    def respond(r: Request, attempt: int) -> Response:
        return unauthorized(r, 'Custom realm="x"') if attempt == 0 else ok(r)

    response, calls = drive(MyChallengeAuth(), Request("GET", "http://h/"), respond)
    assert response.status_code == 200
    assert calls == [None, "Custom computed"]
    response, calls = drive(MyChallengeAuth(), Request("GET", "http://h/"), lambda r, a: ok(r))
    assert calls == [None]


def test_generator_type_of_base_auth() -> None:
    flow: Generator[Request, Response, None] = Auth().auth_flow(Request("GET", "http://h/"))
    request = next(flow)
    with pytest.raises(StopIteration):
        flow.send(ok(request))
