"""HTTP/1.1 field lines, for the response parser (`h1`): the grammar, the
checks of the framing fields, and the caches that let a server's repeated
heads and lines skip the parsing.

Servers repeat most field lines response after response (Server,
Content-Type, Connection, Cache-Control, a Date for a second), so each line
of a head is looked up in `_KNOWN_LINES` first; framing lines are cached
apart (`_KNOWN_FRAMING`) because they are checked as a group on every
head, and the verdict on a group seen before is kept too
(`_KNOWN_FRAMINGS`). A whole head seen before is looked up by its text
(`_KNOWN_HEADS`) before any of that. All four are bounded and emptied when
full, and nothing that carries a credential (Set-Cookie) is kept. What a
cache returns is what parsing the same text would give: only the work is
saved, never a check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeAlias

from .._exceptions import RemoteProtocolError

_Field = tuple[str, str, str]  # (name as sent, lower-case name, value)

_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
# A value character: anything but NUL and the ASCII whitespace set h11 uses
# (SP HTAB LF VT FF CR); spelled out because `\s` in a str pattern would also
# take U+001C-U+001F, U+0085 and U+00A0, which latin-1 text can hold.
_VCHAR = r"[^\x00\t\n\x0b\x0c\r ]"
# A value is any run of value characters, SP and HTAB that ends in a value
# character (OWS on either side is not part of it); spelled so that the
# regex engine runs one tight loop and backs off one character, which is
# twice as fast as h11's `vchar+([ \t]+vchar+)*` on real headers. The
# leading OWS is possessive: the value may start with SP too, and a long run
# of spaces before a bad character was then tried split by split (seconds of
# CPU for a 20 KB line); the value never starts with the OWS anyway.
_FIELD = re.compile(
    rf"^([{_TCHAR}]+):[ \t]*+([^\x00\n\x0b\x0c\r]*{_VCHAR}|)[ \t]*\r?\n", re.MULTILINE
)
# The same lines, faster: no backtracking, so a value with trailing OWS (or
# an empty value after OWS) fails here and the line count sends the section
# to `_FIELD` for a second look. It never accepts what `_FIELD` refuses.
_FIELD_FAST = re.compile(
    rf"^([{_TCHAR}]++):[ \t]*+([^\x00\n\x0b\x0c\r]*+)(?<![ \t])\r?\n", re.MULTILINE
)
# A line end followed by SP or HTAB: an obsolete line fold (RFC 9112 5.2).
_OBS_FOLD = re.compile(r"\r?\n[ \t]+")
_NAME = re.compile(rf"[{_TCHAR}]+")
_FRAMING_NAMES = frozenset({"content-length", "transfer-encoding", "connection"})
# Fields that carry credentials: never kept in the process-wide caches, so
# a session cookie is not held in memory beyond the response it came in.
_SECRET_NAMES = frozenset({"set-cookie", "cookie", "authorization", "proxy-authorization"})
_MAX_CL_DIGITS = 20


# Field lines seen before, each with its parsed (name, lower-name, value).
# Servers repeat most of their lines response after response (Server,
# Content-Type, Connection, Cache-Control, a Date for a second): a dict
# lookup replaces the regular expression and the lower-casing for those.
# Framing lines (Content-Length, Transfer-Encoding, Connection) are kept
# apart: they are checked as a group on every head. Bounded; emptied when full.
_KNOWN_LINES: dict[str, _Field] = {}
_KNOWN_FRAMING: dict[str, _Field] = {}
_KNOWN_LINES_MAX = 2048
_KNOWN_LINE_LEN = 200  # longer lines are parsed every time, not kept


def _known_fields(section: str) -> tuple[list[_Field], list[_Field]] | None:
    """Split a field section whose lines all end in CRLF into (fields,
    framing fields), each line found in `_KNOWN_LINES` or checked by `_FIELD`;
    None when any line is not a plain field line (bare LF ends, obsolete
    folds, anything refused): the caller's exact path then decides."""
    lines = section.split("\r\n")
    lines.pop()  # what follows the last CRLF: nothing
    if section.count("\n") != len(lines):
        return None  # a line ended in a bare LF
    known = _KNOWN_LINES
    fields: list[_Field] = []
    special: list[_Field] = []
    for line in lines:
        field = known.get(line)
        if field is None:
            field = _KNOWN_FRAMING.get(line) or _new_line(line)
            if field is None:
                return None
            if field[1] in _FRAMING_NAMES:
                special.append(field)
        fields.append(field)
    return fields, special


def _new_line(line: str) -> _Field | None:
    """Parse and remember one field line; None if `_FIELD` refuses it."""
    m = _FIELD.fullmatch(line + "\r\n")  # the line as it came: a stray CR stays refused
    if m is None:
        return None
    name, value = m.groups()
    field = (name, name.lower(), value)
    if len(line) <= _KNOWN_LINE_LEN and field[1] not in _SECRET_NAMES:
        cache = _KNOWN_FRAMING if field[1] in _FRAMING_NAMES else _KNOWN_LINES
        if len(cache) >= _KNOWN_LINES_MAX:
            cache.clear()
        cache[line] = field
    return field


def _short(text: str | bytes) -> str:
    return repr(text[:60]) + ("..." if len(text) > 60 else "")


def _tokens(value: str) -> set[str]:
    return {token.strip(" \t").lower() for token in value.split(",")}


def _framing(
    fields: list[tuple[str, str, str]],
    special: list[tuple[str, str, str]],
    fail: Callable[[str], RemoteProtocolError],
) -> tuple[int | None, bool, str]:
    """Check the framing fields; return (Content-Length, chunked, joined
    Connection values). Rewrites `fields` in place the way h11 normalises
    them (one Content-Length field, lower-cased Transfer-Encoding)."""
    length: str | None = None
    chunked = False
    connection = ""
    rewrite = False
    for _name, lower, value in special:
        if lower == "content-length":
            if not (value.isdigit() and value.isascii()):
                # "5, 5" is one length said twice; anything else is refused.
                values = {v.strip(" \t") for v in value.split(",")}
                if len(values) != 1:
                    raise fail(f"conflicting Content-Length values {_short(value)}")
                value = values.pop()
                if not (value.isdigit() and value.isascii()):
                    raise fail(f"invalid Content-Length {_short(value)}")
                rewrite = True
            if len(value) > _MAX_CL_DIGITS:
                raise fail(f"invalid Content-Length {_short(value)}")
            if length is None:
                length = value
            elif length != value:
                raise fail("conflicting Content-Length values")
            else:
                rewrite = True
        elif lower == "transfer-encoding":
            if chunked:
                raise fail("more than one Transfer-Encoding field")
            if value != "chunked":
                if value.lower() != "chunked":
                    raise fail(f"unsupported Transfer-Encoding {_short(value)}")
                rewrite = True
            chunked = True
        else:
            connection = f"{connection},{value}" if connection else value
    if length is not None and chunked:
        raise fail("both Content-Length and Transfer-Encoding")
    if rewrite:
        fields[:] = _normalised(fields, length)
    else:
        # Nothing to rewrite: the verdict depends on `special` alone.
        if len(_KNOWN_FRAMINGS) >= _KNOWN_LINES_MAX:
            _KNOWN_FRAMINGS.clear()
        _KNOWN_FRAMINGS[tuple(special)] = (
            (None if length is None else int(length)), chunked, connection
        )
    return (None if length is None else int(length)), chunked, connection


# Verdicts of `_framing` on framing fields seen before (the same cached
# field objects, head after head), when it rewrote nothing.
_KNOWN_FRAMINGS: dict[tuple[_Field, ...], tuple[int | None, bool, str]] = {}

# Final heads parsed before, by their text: a server that repeats itself
# (most do, until the Date line turns over a second later) gets one dict
# lookup instead of the status line, the field lines and the framing
# checks. An entry is what parsing that same text gave (status, minor
# version, reason, fields, Content-Length, chunked, Connection), and only
# final heads that parsed are kept, so nothing passes that a fresh parse
# would refuse; the parser copies `fields` out, as Headers may change them.
# Bounded, emptied when full; long heads and heads with a credential in
# them (Set-Cookie) are not kept.
_KnownHead: TypeAlias = tuple[int, str, str | None, tuple[_Field, ...], int | None, bool, str]
_KNOWN_HEADS: dict[str, _KnownHead] = {}
_KNOWN_HEADS_MAX = 256
_KNOWN_HEAD_LEN = 1024


def _remember_head(text: str, entry: _KnownHead) -> None:
    """Keep a final head's parse by its text, unless it is long or secret."""
    if len(text) <= _KNOWN_HEAD_LEN and not any(f[1] in _SECRET_NAMES for f in entry[3]):
        if len(_KNOWN_HEADS) >= _KNOWN_HEADS_MAX:
            _KNOWN_HEADS.clear()
        _KNOWN_HEADS[text] = entry


def _normalised(
    fields: list[tuple[str, str, str]], length: str | None
) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    seen_length = False
    for name, lower, value in fields:
        if lower == "content-length":
            if seen_length:
                continue
            seen_length = True
            out.append((name, lower, length or value))
        elif lower == "transfer-encoding":
            out.append((name, lower, "chunked"))
        else:
            out.append((name, lower, value))
    return out


def _bad_field_line(section: str) -> str:
    """Say which field line of `section` the grammar refuses, and why.

    Lines are counted after unfolding, as they were parsed (a fold is
    accepted, so it is never what is wrong). Nothing of the line is quoted
    but a valid field name: a value, or a line that is not a field at all,
    may hold a cookie or a token."""
    logical: list[str] = []
    for raw in section.split("\n")[:-1]:
        line = raw.removesuffix("\r")
        if line[:1] in (" ", "\t") and logical:
            logical[-1] = logical[-1] + " " + line.lstrip(" \t")
        else:
            logical.append(line)
    for number, line in enumerate(logical, 1):
        if _FIELD.fullmatch(line + "\n"):
            continue
        where = f"field line {number}"
        if line[:1] in (" ", "\t"):
            return f"obsolete line folding with no field line to continue ({where})"
        name, colon, value = line.partition(":")
        if not colon:
            return f"{where} without a colon ({len(line)} characters)"
        if not _NAME.fullmatch(name):
            bad = re.search(rf"[^{_TCHAR}]", name)
            if bad is None:
                return f"empty field name ({where})"
            return (f"invalid field name in {where}: character {bad.group()!r} "
                    f"at column {bad.start() + 1}")
        bad = re.search(r"[\x00\x0b\x0c\r]", value)
        what = f"{bad.group()!r} at column {len(name) + 2 + bad.start()}, " if bad else ""
        return f"invalid character in the value of field {_short(name)} ({what}{where})"
    return "invalid field line"  # pragma: no cover - the caller saw one
