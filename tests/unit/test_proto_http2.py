"""The sans-I/O HTTP/2 helpers: request heads, response heads, settings and
the GOAWAY state machine, driven against an in-memory h2 server."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame

from hyperhttp._exceptions import LocalProtocolError, RemoteProtocolError
from hyperhttp._proto.http2 import (
    MAX_STREAMS_CAP,
    STREAM_WINDOW,
    build_request_headers,
    error_name,
    new_client_connection,
    parse_response_head,
    parse_trailers,
    remote_stream_limit,
)


def triples(*pairs: tuple[str, str]) -> list[tuple[str, str, str]]:
    return [(n, n.lower(), v) for n, v in pairs]


def build(*pairs: tuple[str, str], method: str = "GET") -> list[tuple[bytes, bytes]]:
    return build_request_headers(method, "https", "example.com", "/p?q=1", triples(*pairs))


def test_pseudo_headers_come_first_in_order() -> None:
    out = build(("Accept", "*/*"), ("X-Two", "2"))
    assert out == [
        (b":method", b"GET"),
        (b":authority", b"example.com"),
        (b":scheme", b"https"),
        (b":path", b"/p?q=1"),
        (b"accept", b"*/*"),
        (b"x-two", b"2"),
    ]


def test_host_becomes_authority() -> None:
    out = build(("Host", "other.example:8443"), ("Accept", "*/*"))
    assert (b":authority", b"other.example:8443") in out
    assert all(name != b"host" for name, _ in out)


def test_connection_specific_fields_are_dropped() -> None:
    out = build(
        ("Connection", "keep-alive, X-Private"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("X-Private", "secret hop"),
        ("X-Kept", "yes"),
    )
    assert [name for name, _ in out[4:]] == [b"x-kept"]


@pytest.mark.parametrize(
    ("value", "sent"),
    [("trailers", b"trailers"), ("Trailers, deflate", b"trailers"), ("gzip", None)],
)
def test_te_only_as_trailers(value: str, sent: bytes | None) -> None:
    out = dict(build(("TE", value)))
    assert out.get(b"te") == sent


def test_names_lowercased_and_values_trimmed() -> None:
    out = build(("X-MiXeD", "  v  "))
    assert out[4] == (b"x-mixed", b"v")


def test_credentials_are_never_indexed() -> None:
    out = build(("Authorization", "Bearer abc"), ("Cookie", "a=1"), ("Accept", "x"))
    kinds = {name: type(pair) for pair in out for name in [pair[0]]}
    assert kinds[b"authorization"] is NeverIndexedHeaderTuple
    assert kinds[b"cookie"] is NeverIndexedHeaderTuple
    assert kinds[b"accept"] is tuple


@pytest.mark.parametrize(
    "pairs",
    [
        [("X-Bad", "a\r\nInjected: 1")],
        [("X-Bad", "a\nb")],
        [("X-Bad", "nul\x00")],
        [("Bad Name", "x")],
        [("Bad:Name", "x")],
        [("", "x")],
        [("\u212aelvin", "x")],  # KELVIN SIGN lower-cases to ASCII "k"
        [("X-Snow", "snow ☃")],
    ],
)
def test_invalid_fields_raise_before_sending(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(LocalProtocolError, match="nothing was sent"):
        build(*pairs)


@pytest.mark.parametrize(
    ("method", "authority", "target"),
    [
        ("GE T", "example.com", "/"),
        ("GET", "exa mple.com", "/"),
        ("GET", "user@example.com", "/"),
        ("GET", "", "/"),
        ("GET", "example.com", "/a b"),
        ("GET", "example.com", ""),
        ("GET", "example.com", "/\x00"),
    ],
)
def test_invalid_pseudo_headers_raise(method: str, authority: str, target: str) -> None:
    with pytest.raises(LocalProtocolError):
        build_request_headers(method, "https", authority, target, [])


def test_host_header_with_crlf_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        build(("Host", "a.example\r\nX: y"))


def test_response_head() -> None:
    status, headers = parse_response_head(
        [(b":status", b"204"), (b"x-a", b"1"), (b"x-a", b"2"), (b"server", b"t")], "peer:1"
    )
    assert status == 204
    assert headers.get_list("x-a") == ["1", "2"]
    assert headers["server"] == "t"


@pytest.mark.parametrize("bad", [[(b"x-a", b"1")], [(b":status", b"20")], [(b":status", b"abc")]])
def test_bad_response_head_names_the_peer(bad: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(RemoteProtocolError, match="peer:1"):
        parse_response_head(bad, "peer:1")


def test_trailers_skip_pseudo_headers() -> None:
    trailers = parse_trailers([(b"x-checksum", b"abc"), (b":weird", b"x")])
    assert dict(trailers.items()) == {"x-checksum": "abc"}


def test_error_names() -> None:
    assert error_name(8) == "CANCEL (0x8)"
    assert error_name(0x77) == "error 0x77"


# --- against an in-memory h2 server ---------------------------------------------


def handshake(client: h2.connection.H2Connection, **settings: int) -> h2.connection.H2Connection:
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.local_settings = h2.settings.Settings(
        client=False,
        initial_values={getattr(h2.settings.SettingCodes, k): v for k, v in settings.items()},
    )
    server.initiate_connection()
    events = server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    changed = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged))
    assert changed.changed_settings[h2.settings.SettingCodes.ENABLE_PUSH].new_value == 0
    assert changed.changed_settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE].new_value == (
        STREAM_WINDOW
    )
    return server


def request(client: h2.connection.H2Connection) -> int:
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, build(), end_stream=True)
    return sid


def test_settings_and_connection_window() -> None:
    client = new_client_connection(connection_window=1 << 24)
    server = handshake(client, MAX_CONCURRENT_STREAMS=7)
    assert server.outbound_flow_control_window == 1 << 24
    assert remote_stream_limit(client) == 7


def test_unlimited_streams_are_capped() -> None:
    client = new_client_connection()
    handshake(client)
    assert remote_stream_limit(client) == MAX_STREAMS_CAP


def test_streams_below_goaway_can_finish() -> None:
    client = new_client_connection()
    server = handshake(client)
    first, second = request(client), request(client)
    server.receive_data(client.data_to_send())
    server.send_headers(first, [(":status", "200")])
    goaway = GoAwayFrame(0)
    goaway.last_stream_id = first
    # GOAWAY and the rest of stream 1 arrive in one read.
    server.send_data(first, b"tail", end_stream=True)
    wire = goaway.serialize() + server.data_to_send()
    events = client.receive_data(wire)
    kinds = [type(e) for e in events]
    assert h2.events.ConnectionTerminated in kinds
    data = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert data[0].stream_id == first and data[0].data == b"tail"
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    assert second > first


def test_pings_are_answered_by_h2() -> None:
    client = new_client_connection()
    server = handshake(client)
    server.ping(b"12345678")
    events = client.receive_data(server.data_to_send())
    assert any(isinstance(e, h2.events.PingReceived) for e in events)
    acks = server.receive_data(client.data_to_send())
    assert any(isinstance(e, h2.events.PingAckReceived) for e in acks)


@pytest.mark.parametrize(
    ("method", "target", "fields"),
    [
        ("GET\n", "/", []),  # `$` in a pattern matches before a final newline: fullmatch only
        ("GET", "/\u00e9", []),
        ("GET", "/", [("X-A\n", "x-a\n", "1")]),
    ],
)
def test_request_heads_refuse_what_the_transport_refuses(
    method: str, target: str, fields: list[tuple[str, str, str]]
) -> None:
    with pytest.raises(LocalProtocolError):
        build_request_headers(method, "https", "h", target, fields)
