"""Microbenchmark: our HTTP/1.1 parser and serializer (hyperhttp._proto.h1)
against h11, CPU only, no sockets.

    python3 bench/h1_micro.py [--number N] [--repeat R]

Cases: a typical small response (9 header fields, 13-byte body, one read),
a chunked response with trailers (one read, and split into 16-byte reads),
and serialising a request head. For h11 the parse cases time only
`receive_data` + `next_event` until EndOfMessage, on connections whose
request was sent before timing starts. Reports the best of R runs, in µs
of CPU (process time, so other load on the machine matters less) per
operation, and h11's time divided by ours.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import h11

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hyperhttp._proto.h1 import End, Head, NeedData, ResponseParser
from hyperhttp._proto.h1_request import serialize_request_head
from hyperhttp._proto.http11 import check_response_head

TYPICAL = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.25.3\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 13\r\n"
    b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "659200f0-d"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"Cache-Control: max-age=60\r\n"
    b"\r\n"
    b"Hello, world!"
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: hypercorn-h11\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"1a\r\n" + b'{"hello": "world", "n": 1}' + b"\r\n"
    b"40\r\n" + b"x" * 64 + b"\r\n"
    b"5;ext=1\r\n" + b"tail!" + b"\r\n"
    b"0\r\n"
    b"Server-Timing: total;dur=12\r\n"
    b"\r\n"
)
SPLIT = [CHUNKED[i : i + 16] for i in range(0, len(CHUNKED), 16)]

REQ_HEADERS_STR = [
    ("User-Agent", "user-agent", "hyperhttp/0.1"),
    ("Accept", "accept", "*/*"),
    ("Accept-Encoding", "accept-encoding", "gzip, deflate, br, zstd"),
    ("Connection", "connection", "keep-alive"),
    ("X-Request-Id", "x-request-id", "0f8e5c2a-8d7b-4a51-9c0e-7b1f7a7c1d11"),
]
REQ_HEADERS_BYTES = [
    (b"Host", b"example.com:8080"),
    *[(n.encode(), v.encode()) for n, _, v in REQ_HEADERS_STR],
]


def ours_parse(pieces: list[bytes]) -> Callable[[], object]:
    parser = ResponseParser()

    def run() -> object:
        parser.start("GET")
        result: list[object] = []
        for piece in pieces:
            parser.feed(piece)
            while True:
                event = parser.next_event()
                if type(event) is NeedData:
                    break
                if type(event) is Head:
                    result.append(event.headers)  # what Headers.from_raw adopts
                elif type(event) is End:
                    return result
                else:
                    result.append(event)
        raise AssertionError("response did not end")

    return run


def h11_parse(pieces: list[bytes], number: int) -> Callable[[], object]:
    # A fresh h11 connection per response (start_next_cycle would need a
    # send), with the request sent before timing: only parsing is measured.
    request = h11.Request(method=b"GET", target=b"/", headers=REQ_HEADERS_BYTES)
    conns = []
    for _ in range(number):
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=65536)
        conn.send(request)
        conn.send(h11.EndOfMessage())
        conns.append(conn)
    it = iter(conns)

    def run() -> object:
        conn = next(it)
        result: list[object] = []
        for piece in pieces:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    break
                if type(event) is h11.Response:
                    check_response_head(event, "bench")  # the connection's own checks
                    # what the connection builds for Headers.from_raw
                    result.append([
                        (n.decode("latin-1"), n.decode("latin-1"), v.decode("latin-1"))
                        for n, v in event.headers
                    ])
                elif type(event) is h11.Data:
                    result.append(bytes(event.data))
                elif type(event) is h11.EndOfMessage:
                    return result
        raise AssertionError("response did not end")

    return run


def ours_serialize() -> object:
    return serialize_request_head(
        "GET", "/path?q=1", REQ_HEADERS_STR, body_length=0, host="example.com:8080"
    )


def h11_serialize_factory(number: int) -> Callable[[], object]:
    conns = iter([h11.Connection(h11.CLIENT) for _ in range(number)])

    def run() -> object:
        # What the connection does today: byte pairs, Host first, one send.
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, _, v in REQ_HEADERS_STR]
        headers.insert(0, (b"Host", b"example.com:8080"))
        return next(conns).send(h11.Request(method=b"GET", target=b"/path?q=1", headers=headers))

    return run


def _normal(result: object) -> tuple[list[tuple[str, str]], bytes]:
    # h11 hands names over lower-cased, ours as sent: compare lower-cased.
    assert isinstance(result, list)
    fields = [(lower, value) for _, lower, value in result[0]]
    return fields, b"".join(result[1:])


def best(fn: Callable[[], object], number: int, repeat: int) -> float:
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.timeit(number) for _ in range(repeat)) / number


def best_fresh(factory: Callable[[int], Callable[[], object]], number: int, repeat: int) -> float:
    # h11 connections are single-use here: build a fresh batch for each run.
    return min(
        timeit.Timer(factory(number), timer=time.process_time).timeit(number)
        for _ in range(repeat)
    ) / number


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=20_000, help="operations per run")
    ap.add_argument("--repeat", type=int, default=5, help="runs; the best is kept")
    args = ap.parse_args()
    n, r = max(1, min(args.number, 1_000_000)), max(1, min(args.repeat, 50))

    # Same answers first: a benchmark of a parser that is wrong is worthless.
    for pieces in ([TYPICAL], SPLIT):
        assert _normal(ours_parse(pieces)()) == _normal(h11_parse(pieces, 1)())

    cases = [
        ("typical response, 13-byte body", [TYPICAL]),
        ("chunked response, one read", [CHUNKED]),
        (f"chunked response, {len(SPLIT)} reads", SPLIT),
    ]
    print(f"{'case':40} {'ours µs':>9} {'h11 µs':>9} {'h11/ours':>9}")
    for label, pieces in cases:
        ours = best(ours_parse(pieces), n, r)
        theirs = best_fresh(lambda k, p=pieces: h11_parse(p, k), n, r)  # type: ignore[misc]
        print(f"{label:40} {ours * 1e6:9.2f} {theirs * 1e6:9.2f} {theirs / ours:9.1f}x")
    ours = best(ours_serialize, n, r)
    theirs = best_fresh(h11_serialize_factory, n, r)
    print(f"{'request head serialisation':40} {ours * 1e6:9.2f} {theirs * 1e6:9.2f} "
          f"{theirs / ours:9.1f}x")


if __name__ == "__main__":
    main()
