"""HTTP/1.1 for the client side, sans-I/O: a strict response parser built
for the hot path (the request side is `h1_request`).

The parser keeps one buffer per connection and finds the end of a head with
`bytes.find`; the head is decoded once as latin-1 and split by one regular
expression that also validates every line, so a typical response costs a
handful of C calls. Header fields come out as the (name, lower-name, value)
`str` triples that `Headers.from_raw` adopts without copying. Body data is
returned as the received `bytes` object itself when a read holds nothing but
body, else as one slice of it.

The rules are h11's (the parser the connection used before) plus the checks
`hyperhttp._proto.http11` adds on top of it, so for any byte stream this
parser accepts, h11 with those checks accepts it with the same status,
headers, body and trailers; `tests/unit/test_h1_differential.py` holds the
two to that. Refused, as there: a bad status line, a status below 100, a
101 (we never ask to switch protocols), header names that are not tokens,
NUL, CR, LF, VT or FF in a field value, leading blank lines, differing or
malformed Content-Length values (more than 20 digits included), a
Transfer-Encoding other than exactly `chunked` or given twice,
Content-Length together with Transfer-Encoding, chunk sizes that are not
1-20 hex digits, chunk data not followed by CRLF, a truncated head or body,
a head over `max_head_size` bytes whether it arrives in one read or many.
As in h11, a single LF ends a line in a head or trailer section, a chunk
line may end in spaces or tabs, duplicate equal Content-Length values are
merged into one field and the Transfer-Encoding value is lower-cased.

Intentional divergences from h11 + http11 checks (all stricter, except 5):

1. Obsolete line folding (a field line starting with SP or HTAB) is
   unfolded into one space, as RFC 9112 section 5.2 requires of a user
   agent and as h11 does; a fold right after the status line (nothing to
   continue) is refused. (Kept in this list for its history: an earlier
   draft refused all folds, which the RFC does not allow a client.)
2. Only HTTP/1.0 and HTTP/1.1 status lines are accepted; h11 accepts any
   `HTTP/d.d` (an `HTTP/2.0` or `HTTP/0.9` head on a 1.1 connection is a
   broken or hostile peer, not a protocol we speak).
3. Chunk extensions may not contain NUL or a bare CR; h11 accepts any byte
   but LF there.
4. The head-size limit counts the whole head (status line, names, values,
   whitespace, line ends) and also applies to trailer sections; the old
   check summed names and values + 4 per field, and h11 bounds a complete
   trailer section not at all. Only heads within a few hundred bytes of the
   limit, or trailers over it, are judged differently. Trailers also get
   the Content-Length + Transfer-Encoding check heads get.
5. An HTTP/1.0 response with `Connection: keep-alive`, framed by
   Content-Length or with no body, leaves the connection reusable, as
   browsers and curl do; h11 never reuses an HTTP/1.0 connection. A 1.0
   response with Transfer-Encoding never leaves it reusable (RFC 9112
   section 6.1).
6. Bytes that cannot start a status line (anything but a prefix of
   `HTTP/`) are refused as soon as they arrive, before a full head is in;
   h11 waits for the head (or for EOF) unless the first byte is below 0x21.
   The verdict is the same, only earlier: a TLS record sent to a cleartext
   port fails at once instead of at the read timeout.
"""

from __future__ import annotations

import re
from typing import Final, TypeAlias, final

from .._exceptions import RemoteProtocolError
from .h1_fields import (
    _FIELD,
    _FIELD_FAST,
    _FRAMING_NAMES,
    _KNOWN_FRAMINGS,
    _KNOWN_HEADS,
    _OBS_FOLD,
    _bad_field_line,
    _Field,
    _framing,
    _known_fields,
    _remember_head,
    _short,
    _tokens,
)

__all__ = [
    "NEED_DATA",
    "End",
    "Event",
    "Head",
    "NeedData",
    "ResponseParser",
]

MAX_HEAD_SIZE: Final = 64 * 1024


@final
class NeedData:
    """Type of `NEED_DATA`: feed more bytes (or EOF) before asking again."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@final
class Head:
    """A final (status >= 200) response head.

    `headers` is a fresh list of (name, lower-name, value) triples, ready for
    `Headers.from_raw`; `http_version` is "HTTP/1.1" or "HTTP/1.0";
    `keep_alive` is what the head allows, before the body is read (the
    parser's `reusable` is the verdict once the response has ended)."""

    __slots__ = ("headers", "http_version", "keep_alive", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        http_version: str,
        headers: list[tuple[str, str, str]],
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return f"<Head {self.status} {self.http_version} fields={len(self.headers)}>"


@final
class End:
    """The response ended; `trailers` holds the chunked trailer fields."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: list[tuple[str, str, str]]) -> None:
        self.trailers = trailers

    def __repr__(self) -> str:
        return f"<End trailers={len(self.trailers)}>"


Event: TypeAlias = Head | bytes | End | NeedData

# --- grammar (field lines: see h1_fields) ----------------------------------
_STATUS = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\n\x0b\x0c\r]*))?\r?\n")
_ANY_STATUS = re.compile(r"HTTP/[0-9]\.[0-9] ")
# Possessive extension: it takes trailing SP/HTAB too, so leaving them to
# `[ \t]*` only made a line of spaces ending in a bad byte backtrack
# quadratically (the same lines match either way).
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\x00\r\n]*+)?+[ \t]*")
_PREFIX = b"HTTP/"

# Parser states.
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF = 0, 1, 2, 3, 4, 5
_TRAILERS, _UNTIL_EOF, _ENDING, _DONE = 6, 7, 8, 9
_STATE_NAMES = (
    "IDLE", "HEAD", "LENGTH", "CHUNK_SIZE", "CHUNK_DATA", "CHUNK_CRLF",
    "TRAILERS", "UNTIL_EOF", "ENDING", "DONE",
)  # fmt: skip


class ResponseParser:
    """Parse the responses of one HTTP/1.1 connection, one after another.

    Per response: `start(method)`, then `feed()` what the socket gives and
    call `next_event()` until it returns an `End`; it returns `NEED_DATA`
    when it wants more bytes, then a `Head`, then body data as `bytes`
    (possibly none), then `End`. 1xx heads are checked and skipped. At EOF
    call `feed_eof()`: it ends a close-delimited body; anywhere else the
    next `next_event()` raises. Every refusal is a RemoteProtocolError that
    names what is wrong; the parser is then unusable.
    """

    __slots__ = (
        "_buf", "_connect", "_eof", "_head", "_interim", "_keep_alive", "_max",
        "_pos", "_remaining", "_scan", "_state", "_where",
    )  # fmt: skip

    def __init__(self, *, max_head_size: int = MAX_HEAD_SIZE, where: str = "the server") -> None:
        self._max = max_head_size
        self._where = where
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._scan = 0
        self._state = _IDLE
        self._head = False
        self._connect = False
        self._eof = False
        self._keep_alive = False
        self._remaining = 0
        self._interim = 0  # 1xx heads of this response, for the EOF message

    # --- driving ------------------------------------------------------------
    def start(self, method: str) -> None:
        """Expect the response to a request made with `method` (HEAD and
        CONNECT change the framing). Bytes left over from the previous
        response stay in the buffer and are parsed as this one."""
        if self._state not in (_IDLE, _DONE):
            raise RuntimeError(f"start() while a response is being parsed ({self!r})")
        self._state = _HEAD
        self._head = method == "HEAD"
        self._connect = method == "CONNECT"
        self._keep_alive = False
        self._interim = 0
        self._scan = self._pos

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer (b"" is ignored; use feed_eof)."""
        if not data:
            return
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            # Nothing pending: adopt the chunk as is (no copy).
            self._buf = data if type(data) is bytes else bytes(data)
            self._scan = max(0, self._scan - pos)
            self._pos = 0
            return
        # Bytes pending: grow one private bytearray (amortised O(n), so a
        # head that trickles in byte by byte is not quadratic).
        if type(buf) is bytearray:
            del buf[:pos]
        else:
            buf = bytearray(memoryview(buf)[pos:])
            self._buf = buf
        buf += data
        self._scan = max(0, self._scan - pos)
        self._pos = 0

    def take_body(self) -> bytes | None:
        """The rest of a Content-Length body (b"" for none) if all of it is
        already received, ending the response as the `bytes` and `End`
        events would; else None with nothing consumed (chunked and
        close-delimited bodies included)."""
        state = self._state
        if state == _ENDING:
            self._state = _DONE
            return b""
        if state != _LENGTH or len(self._buf) - self._pos < self._remaining:
            return None
        data = self._take(self._remaining)
        self._remaining = 0
        self._state = _DONE
        return data

    def length_left(self) -> int:
        """The bytes of a Content-Length body still to come, when the parser
        holds none of them: the caller may then take them from the socket
        itself and report them with `took()`, the parser only counting.
        0 otherwise (the body must go through `feed()`/`next_event()`)."""
        if self._state == _LENGTH and self._pos >= len(self._buf):
            return self._remaining
        return 0

    def took(self, n: int) -> None:
        """`n` bytes of the body (1 to `length_left()`) were taken past the
        parser; at the last of them the body ends (`End` comes next)."""
        left = self._remaining
        if not 0 < n <= left or self._state != _LENGTH or self._pos < len(self._buf):
            raise RuntimeError(f"took({n}) with {self.length_left()} body bytes to come ({self!r})")
        self._remaining = left = left - n
        if not left:
            self._state = _ENDING

    @property
    def has_unparsed(self) -> bool:
        """True while received bytes wait to be parsed."""
        return self._pos < len(self._buf)

    def feed_eof(self) -> None:
        """The peer closed its side: no more bytes will come."""
        self._eof = True

    @property
    def reusable(self) -> bool:
        """After `End`: may the connection carry another request? False for
        Connection: close, close-delimited bodies, HTTP/1.0 without
        keep-alive, CONNECT tunnels, EOF, or bytes past the response end."""
        return (
            self._state == _DONE
            and self._keep_alive
            and not self._eof
            and self._pos >= len(self._buf)
        )

    @property
    def trailing(self) -> bytes:
        """Bytes received past the end of the response (a tunnel's first
        bytes after CONNECT; otherwise garbage that forbids reuse)."""
        return bytes(self._buf[self._pos :])

    def next_event(self) -> Event:
        """The next event: `Head`, body `bytes`, `End` or `NEED_DATA`."""
        state = self._state
        if state == _HEAD:
            return self._next_head()
        if state == _LENGTH:
            if self._pos >= len(self._buf):
                return self._need(state)
            data = self._take(self._remaining)
            self._remaining -= len(data)
            if not self._remaining:
                self._state = _ENDING
            return data
        if state == _ENDING:
            self._state = _DONE
            return End([])
        if state in (_CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS):
            return self._next_chunked()
        if state == _UNTIL_EOF:
            if self._pos < len(self._buf):
                return self._take(-1)
            if self._eof:
                self._state = _DONE
                return End([])
            return NEED_DATA
        raise RuntimeError(f"next_event() outside a response ({self!r}); call start()")

    # --- internals -----------------------------------------------------------
    def _take(self, limit: int) -> bytes:
        """Up to `limit` of the buffered bytes (all if negative); called
        only when some are buffered."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if 0 <= limit < end - pos:
            end = pos + limit
            self._pos = end
            if type(buf) is bytes:
                return buf[pos:end]
            return bytes(memoryview(buf)[pos:end])
        # The rest of the buffer: hand over the received object itself when
        # possible, and drop our reference to it.
        self._buf = b""
        self._pos = 0
        self._scan = 0
        if type(buf) is bytes:
            return buf if pos == 0 else buf[pos:]
        return bytes(memoryview(buf)[pos:])

    def _need(self, state: int) -> NeedData:
        if not self._eof:
            return NEED_DATA
        where = self._where
        if state == _HEAD:
            if self._pos >= len(self._buf):
                if self._interim:
                    raise RemoteProtocolError(
                        f"{where} closed the connection after an interim (1xx) response, "
                        "without the final one"
                    )
                raise RemoteProtocolError(
                    f"{where} closed the connection without sending a response"
                )
            raise RemoteProtocolError(
                f"{where} closed the connection in the middle of the response head"
            )
        if state == _LENGTH:
            raise RemoteProtocolError(
                f"{where} closed the connection before the response body ended "
                f"({self._remaining} bytes missing)"
            )
        raise RemoteProtocolError(
            f"{where} closed the connection before the chunked response body ended"
        )

    def _fail(self, message: str) -> RemoteProtocolError:
        self._state = _DONE
        self._keep_alive = False
        return RemoteProtocolError(f"malformed response from {self._where}: {message}")

    def _find_blank_line(self) -> tuple[int, int]:
        """(index of the LF ending the last field line, index after the
        blank line), or (-1, -1) if the section is not complete yet."""
        buf = self._buf
        scan = self._scan
        crlf = buf.find(b"\n\r\n", scan)
        lf = buf.find(b"\n\n", scan, crlf + 1 if crlf >= 0 else len(buf))
        if lf >= 0:
            return lf, lf + 2
        if crlf >= 0:
            return crlf, crlf + 3
        self._scan = max(self._pos, len(buf) - 2)
        return -1, -1

    def _next_head(self) -> Event:
        while True:
            buf = self._buf
            pos = self._pos
            if pos >= len(buf):
                return self._need(_HEAD)
            # Fast path: the head ends in CRLF CRLF. A head cut short by an
            # earlier bare-LF blank line cannot parse this way (it leaves an
            # empty field line), so only a failure needs the exact search.
            last = buf.find(b"\n\r\n", self._scan)
            if last >= 0 and last + 3 - pos <= self._max:
                try:
                    head = self._parse_head(buf[pos : last + 1].decode("latin-1"), last + 3)
                except RemoteProtocolError:
                    if buf.find(b"\n\n", pos, last + 1) < 0:
                        raise
                    self._state = _HEAD  # retried below with the earlier end
                else:
                    if head is None:
                        continue  # a 1xx head, checked and skipped
                    return head
            last, after = self._find_blank_line()
            if last < 0:
                self._check_partial_head()
                return self._need(_HEAD)
            if after - pos > self._max:
                raise self._fail(f"response head is larger than {self._max} bytes")
            head = self._parse_head(buf[pos : last + 1].decode("latin-1"), after)
            if head is not None:
                return head

    def _check_partial_head(self) -> None:
        buf = self._buf
        pos = self._pos
        start = bytes(buf[pos : pos + 5])
        if not _PREFIX.startswith(start):
            raise self._fail(f"expected a status line, got {_short(start)}")
        if len(buf) - pos > self._max:
            raise self._fail(f"response head is larger than {self._max} bytes")

    def _parse_head(self, text: str, after: int) -> Head | None:
        """Parse a complete head ending at `after`; None for a 1xx head."""
        seen = _KNOWN_HEADS.get(text)
        if seen is not None:
            self._pos = self._scan = after
            return self._finish_head(
                seen[0], seen[1], seen[2], list(seen[3]), seen[4], seen[5], seen[6]
            )
        m = _STATUS.match(text)
        if m is None:
            line = text.split("\n", 1)[0].removesuffix("\r")
            if _ANY_STATUS.match(line) and not line.startswith(("HTTP/1.0 ", "HTTP/1.1 ")):
                raise self._fail(f"unsupported HTTP version in {_short(line)}")
            raise self._fail(f"invalid status line {_short(line)}")
        minor, code_text, reason = m.groups()
        start = m.end()
        split = _known_fields(text[start:])
        if split is not None:
            fields, special = split
        else:
            found = _FIELD_FAST.findall(text, start)
            if len(found) != text.count("\n", start):
                found = self._slow_fields(text[start:])
            fields = [(name, name.lower(), value) for name, value in found]
            special = [t for t in fields if t[1] in _FRAMING_NAMES]
        if special:
            known = _KNOWN_FRAMINGS.get(tuple(special))
            length, chunked, connection = (
                known if known is not None else _framing(fields, special, self._fail)
            )
        else:
            length, chunked, connection = None, False, ""
        self._pos = self._scan = after
        code = int(code_text)
        if code < 200:
            if code == 101:
                raise self._fail("101 Switching Protocols, but no protocol switch was asked for")
            if code < 100:
                raise self._fail(f"invalid status code {code_text}")
            self._interim += 1
            return None  # informational: checked, skipped
        _remember_head(text, (code, minor, reason, tuple(fields), length, chunked, connection))
        return self._finish_head(code, minor, reason, fields, length, chunked, connection)

    def _finish_head(
        self, code: int, minor: str, reason: str | None, fields: list[_Field],
        length: int | None, chunked: bool, connection: str,
    ) -> Head:
        """Set the body state for a final head and return its event."""
        if minor == "1":
            keep_alive = "close" not in connection.lower() or "close" not in _tokens(connection)
        else:
            keep_alive = (
                bool(connection)
                and not chunked
                and "keep-alive" in (tokens := _tokens(connection))
                and "close" not in tokens
            )
        if self._head or code == 204 or code == 304:
            self._state = _ENDING
        elif self._connect and code < 300:
            # A tunnel: what follows the head belongs to it (see `trailing`).
            self._state = _ENDING
            keep_alive = False
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH if length else _ENDING
        else:
            self._state = _UNTIL_EOF
            keep_alive = False
        self._keep_alive = keep_alive
        return Head(
            code, reason or "", "HTTP/1.1" if minor == "1" else "HTTP/1.0", fields, keep_alive
        )

    def _slow_fields(self, section: str) -> list[tuple[str, str]]:
        """Field lines the fast pattern could not take: trailing whitespace,
        empty values, or obsolete line folding, which a user agent must
        unfold into a space (RFC 9112 section 5.2) as h11 does. A section
        that starts with whitespace has nothing to continue: refused."""
        found = _FIELD.findall(section)
        if len(found) == section.count("\n"):
            return found
        if section[:1] not in (" ", "\t") and _OBS_FOLD.search(section):
            unfolded = _OBS_FOLD.sub(" ", section)
            found = _FIELD.findall(unfolded)
            if len(found) == unfolded.count("\n"):
                return found
        raise self._fail(_bad_field_line(section))

    def _next_chunked(self) -> Event:
        while True:
            state = self._state
            buf = self._buf
            pos = self._pos
            if state == _CHUNK_DATA:
                avail = len(buf) - pos
                if avail <= 0:
                    return self._need(state)
                rem = self._remaining
                if avail <= rem:
                    self._remaining = rem - avail
                    if avail == rem:
                        self._state = _CHUNK_CRLF
                    return self._take(-1)
                # The chunk ends inside the buffer: slice it, and step over
                # its CRLF now if that is here too (one event per chunk).
                stop = pos + rem
                data = buf[pos:stop] if type(buf) is bytes else bytes(memoryview(buf)[pos:stop])
                self._remaining = 0
                if buf[stop : stop + 2] == b"\r\n":
                    self._pos = self._scan = stop + 2
                    self._state = _CHUNK_SIZE
                else:
                    self._pos = stop
                    self._state = _CHUNK_CRLF
                return data
            if state == _CHUNK_SIZE:
                nl = buf.find(b"\r\n", max(pos, self._scan))
                if nl < 0:
                    if len(buf) - pos > self._max:
                        raise self._fail(f"chunk-size line is longer than {self._max} bytes")
                    self._scan = max(pos, len(buf) - 1)
                    return self._need(state)
                m = _CHUNK_LINE.fullmatch(buf, pos, nl)
                if m is None:
                    raise self._fail(f"invalid chunk-size line {_short(bytes(buf[pos:nl]))}")
                self._pos = self._scan = nl + 2
                size = int(m.group(1), 16)
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILERS
                continue
            if state == _CHUNK_CRLF:
                got = buf[pos : pos + 2]
                if got != b"\r\n":
                    if len(got) == 2 or got[:1] not in (b"", b"\r"):
                        raise self._fail(
                            f"chunk data not followed by CRLF (got {_short(bytes(got))})"
                        )
                    return self._need(state)
                self._pos = self._scan = pos + 2
                self._state = _CHUNK_SIZE
                continue
            return self._trailers()

    def _trailers(self) -> Event:
        buf = self._buf
        pos = self._pos
        if buf[pos : pos + 2] == b"\r\n" or buf[pos : pos + 1] == b"\n":
            self._pos = self._scan = pos + (2 if buf[pos] == 13 else 1)
            self._state = _DONE
            return End([])
        last, after = self._find_blank_line()
        if last < 0:
            if len(buf) - pos > self._max:
                raise self._fail(f"trailer section is larger than {self._max} bytes")
            return self._need(_TRAILERS)
        if after - pos > self._max:
            raise self._fail(f"trailer section is larger than {self._max} bytes")
        text = buf[pos : last + 1].decode("latin-1")
        found = _FIELD_FAST.findall(text)
        if len(found) != text.count("\n"):
            found = self._slow_fields(text)
        fields = [(name, name.lower(), value) for name, value in found]
        special = [t for t in fields if t[1] in _FRAMING_NAMES]
        if special:
            _framing(fields, special, self._fail)
        self._pos = self._scan = after
        self._state = _DONE
        return End(fields)

    def __repr__(self) -> str:
        return (
            f"<ResponseParser {_STATE_NAMES[self._state]} "
            f"buffered={len(self._buf) - self._pos} eof={self._eof}>"
        )
