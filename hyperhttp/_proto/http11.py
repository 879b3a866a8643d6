"""HTTP/1.1 protocol rules on top of h11 (sans-I/O).

h11 does the framing; this module adds the checks h11 leaves to its
callers and that we hold every response to:

- Content-Length together with Transfer-Encoding is refused (h11 lets
  chunked win, which is what request-smuggling relies on);
- a response head larger than `MAX_HEAD_SIZE` is refused even when it
  arrives complete in one read (h11 only bounds incomplete events);
- outgoing method, target, header names and values are validated before a
  connection is taken: CR, LF and NUL anywhere raise LocalProtocolError.
"""

from __future__ import annotations

import re

import h11

from .._exceptions import LocalProtocolError, RemoteProtocolError

MAX_HEAD_SIZE = 64 * 1024

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]|[^\x00-\xff]")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")


def validate_request_head(method: str, target: str, headers: list[tuple[str, str, str]]) -> None:
    """Raise LocalProtocolError if the request head could be misread by a
    server or cannot be carried: CR, LF or NUL anywhere, a method or header
    name that is not a token, whitespace in the target, characters beyond
    latin-1 in a value. Run before a connection is taken, so a refused
    request leaves the pool as it was and sends nothing."""
    validate_request_line(method, target)
    validate_fields(headers)


def validate_request_line(method: str, target: str) -> None:
    """The method and target part of `validate_request_head`."""
    if not _TOKEN.fullmatch(method):
        raise LocalProtocolError(f"invalid HTTP method {method!r}; nothing was sent")
    if not target or _BAD_TARGET.search(target):
        raise LocalProtocolError(
            "request target contains whitespace or a control character; nothing was sent"
        )


def validate_fields(headers: list[tuple[str, str, str]]) -> None:
    """The header-field part of `validate_request_head`."""
    for name, _lower, value in headers:
        if not _TOKEN.fullmatch(name):
            raise LocalProtocolError(f"invalid header name {name!r}; nothing was sent")
        if _BAD_VALUE.search(value):
            raise LocalProtocolError(
                f"header {name!r} has CR, LF, NUL or a non-latin-1 character in its value; "
                "nothing was sent"
            )


def check_response_head(event: h11.Response | h11.InformationalResponse, where: str) -> None:
    """Raise RemoteProtocolError for a response head we refuse."""
    size = 0
    has_cl = has_te = False
    for name, value in event.headers:
        size += len(name) + len(value) + 4
        if name == b"content-length":
            has_cl = True
        elif name == b"transfer-encoding":
            has_te = True
    if size > MAX_HEAD_SIZE:
        raise RemoteProtocolError(
            f"response head from {where} is larger than {MAX_HEAD_SIZE} bytes"
        )
    if has_cl and has_te:
        raise RemoteProtocolError(
            f"response from {where} has both Content-Length and Transfer-Encoding"
        )


def new_client_connection() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
