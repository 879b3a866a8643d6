"""The client's cookie jar (RFC 6265, with the RFC 6265bis hardening).

Pure: no I/O; the clock is injected (`CookieJar(clock=...)`, or `now=` on a
call), so expiry is testable without waiting.

Set-Cookie is parsed here (section 5.2), not by `http.cookies`, which drops
whole headers over one odd attribute and follows RFC 2109 quoting, nor by
`http.cookiejar`, which wants urllib request objects.

Decisions, where the RFC leaves room:
- A single-label Domain attribute (`com`, `localhost`) stands for a public
  suffix: the cookie is refused, unless the label is the request host
  itself, when it becomes host-only (so `localhost` keeps its cookies). There
  is no public-suffix list: `Domain=co.uk` from `a.co.uk` is accepted.
- Cookies from an IP address are always host-only.
- Secure cookies are sent only over secure transport and may be set only
  from it (6265bis): https and wss, and loopback hosts, which browsers also
  trust. An insecure origin cannot overwrite or shadow a Secure cookie.
- Expires and Max-Age are capped at 400 days (6265bis); Max-Age wins.
- Cookies given as `{name: value}` (`Client(cookies=...)`) have no domain:
  they go to every host the client talks to, like a default header.
- A Set-Cookie over 4096 bytes, or a name or value holding a control
  character, is ignored. At most 50 cookies per domain and 3000 in all; the
  least recently set go first (a replaced cookie counts as just set), after
  expired ones. Expired cookies are dropped when next looked at.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Union

from ._exceptions import LocalProtocolError
from ._urls import URL

__all__ = [
    "Cookie",
    "CookieJar",
    "default_path",
    "domain_matches",
    "parse_cookie_date",
    "parse_set_cookie",
    "path_matches",
]

CookieTypes = Union["CookieJar", Mapping[str, str]]

MAX_SET_COOKIE = 4096
MAX_AGE_CAP = 400 * 86400
_SECURE_SCHEMES = frozenset({"https", "wss"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# RFC 6265bis: a name or value holding %x00-08 / %x0A-1F / %x7F is refused.
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Cookie:
    """One stored cookie. `domain` is "" for a cookie sent to every host."""

    __slots__ = ("creation", "domain", "expires", "host_only", "http_only", "name",
                 "path", "same_site", "secure", "seq", "touched", "value")

    def __init__(
        self, name: str, value: str, *, domain: str = "", path: str = "/",
        host_only: bool = False, secure: bool = False, http_only: bool = False,
        same_site: str | None = None, expires: float | None = None,
        creation: float = 0.0, seq: int = 0,
    ) -> None:
        self.name = name
        self.value = value
        self.domain = domain
        self.path = path
        self.host_only = host_only
        self.secure = secure
        self.http_only = http_only
        self.same_site = same_site
        self.expires = expires  # epoch seconds; None for a session cookie
        self.creation = creation
        self.seq = seq  # insertion order, breaks ties between equal creation times
        self.touched = seq  # when last set or replaced, for eviction (see CookieJar._insert)

    def has_expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now

    def matches(self, host: str, path: str, secure: bool) -> bool:
        """Would this cookie go on a request to `host` and `path`?"""
        if self.secure and not secure:
            return False
        if self.domain:
            if self.host_only:
                if host != self.domain:
                    return False
            elif not domain_matches(host, self.domain):
                return False
        return path_matches(path, self.path)

    def __repr__(self) -> str:
        # The value is a credential: never shown.
        scope = ("" if self.host_only else ".") + (self.domain or "*")
        flags = " secure" if self.secure else ""
        return f"<Cookie {self.name}=[secure] for {scope}{self.path}{flags}>"


# --- matching (RFC 6265 section 5.1.3, 5.1.4) -----------------------------------

def _is_ip(host: str) -> bool:
    if not host or not (host[-1].isdigit() or ":" in host):
        return False  # cheap answer for ordinary names
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def domain_matches(host: str, domain: str) -> bool:
    """RFC 6265 5.1.3: `host` is `domain` or a subdomain of it (never for IPs).
    Both are expected lower-case."""
    if host == domain:
        return True
    return (
        bool(domain)
        and host.endswith(domain)
        and host[-len(domain) - 1] == "."
        and not _is_ip(host)
    )


def path_matches(request_path: str, cookie_path: str) -> bool:
    """RFC 6265 5.1.4: the cookie path is the request path or a directory above it."""
    if request_path == cookie_path:
        return True
    if not request_path.startswith(cookie_path):
        return False
    return cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"


def default_path(request_path: str) -> str:
    """RFC 6265 5.1.4: the directory of the request path."""
    if not request_path.startswith("/"):
        return "/"
    cut = request_path.rfind("/")
    return "/" if cut == 0 else request_path[:cut]


def _is_secure_origin(url: URL) -> bool:
    if url.scheme in _SECURE_SCHEMES:
        return True
    host = url.host
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    return _is_ip(host) and ipaddress.ip_address(host).is_loopback


# --- cookie dates (RFC 6265 section 5.1.1) --------------------------------------

_DATE_TOKEN = re.compile(r"[^\x09\x20-\x2f\x3b-\x40\x5b-\x60\x7b-\x7e]+")
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[^0-9]|$)")
_DAY = re.compile(r"([0-9]{1,2})(?:[^0-9]|$)")
_YEAR = re.compile(r"([0-9]{2,4})(?:[^0-9]|$)")
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}


def parse_cookie_date(text: str) -> float | None:
    """Parse an Expires value the lenient way RFC 6265 5.1.1 prescribes;
    None when it is not a date."""
    hms: tuple[int, int, int] | None = None
    day = month = year = None
    for token in _DATE_TOKEN.findall(text):
        if hms is None and (m := _TIME.match(token)):
            hms = (int(m[1]), int(m[2]), int(m[3]))
        elif day is None and (m := _DAY.match(token)):
            day = int(m[1])
        elif month is None and token[:3].lower() in _MONTHS:
            month = _MONTHS[token[:3].lower()]
        elif year is None and (m := _YEAR.match(token)):
            year = int(m[1])
    if hms is None or day is None or month is None or year is None:
        return None
    if 70 <= year <= 99:
        year += 1900
    elif year <= 69:
        year += 2000
    hour, minute, second = hms
    if not 1 <= day <= 31 or year < 1601 or hour > 23 or minute > 59 or second > 59:
        return None
    if day > calendar.monthrange(year, month)[1]:
        return None  # 30 February and the like
    return float(calendar.timegm((year, month, day, hour, minute, second)))


# --- Set-Cookie parsing (RFC 6265 section 5.2) ----------------------------------

class _Parsed:
    __slots__ = ("domain", "expires", "http_only", "max_age", "name", "path",
                 "same_site", "secure", "value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value
        self.domain: str | None = None
        self.path: str | None = None
        self.expires: float | None = None
        self.max_age: int | None = None
        self.secure = False
        self.http_only = False
        self.same_site: str | None = None


def parse_set_cookie(header: str) -> _Parsed | None:
    """One Set-Cookie value, parsed; None when it must be ignored."""
    if len(header) > MAX_SET_COOKIE:
        return None
    pair, _, attrs = header.partition(";")
    name, eq, value = pair.partition("=")
    name, value = name.strip(" \t"), value.strip(" \t")
    if not eq or not name or _CTL.search(name) or _CTL.search(value):
        return None
    cookie = _Parsed(name, value)
    for attr in attrs.split(";") if attrs else ():
        key, _, val = attr.partition("=")
        key, val = key.strip(" \t").lower(), val.strip(" \t")
        if key == "expires":
            when = parse_cookie_date(val)
            if when is not None:
                cookie.expires = when
        elif key == "max-age":
            if val[:1] == "-" and val[1:].isdigit() and val[1:].isascii():
                cookie.max_age = 0
            elif val.isdigit() and val.isascii():
                cookie.max_age = min(int(val), MAX_AGE_CAP) if len(val) <= 12 else MAX_AGE_CAP
        elif key == "domain":
            if val:  # an empty Domain is ignored (5.2.3); "Domain=." means host-only
                cookie.domain = val.removeprefix(".").lower() or None
        elif key == "path":
            cookie.path = val if val.startswith("/") else None
        elif key == "secure":
            cookie.secure = True
        elif key == "httponly":
            cookie.http_only = True
        elif key == "samesite":
            low = val.lower()
            cookie.same_site = low if low in ("strict", "lax", "none") else "default"
    return cookie


def _prefix_allows(parsed: _Parsed) -> bool:
    """6265bis 4.1.3: `__Secure-` names need Secure; `__Host-` names also need
    no Domain and Path=/."""
    head = parsed.name[:9].lower()
    if head.startswith("__secure-"):
        return parsed.secure
    if head.startswith("__host-"):
        return parsed.secure and parsed.domain is None and parsed.path == "/"
    return True


# --- the jar --------------------------------------------------------------------

_Key = tuple[str, str]  # (path, name) within one domain


def _check_pair(name: str, value: str, error: type[Exception] = ValueError) -> None:
    """Refuse a cookie a caller gives that would not travel as one pair."""
    if not isinstance(name, str) or not name or "=" in name or ";" in name or _CTL.search(name):
        raise error(f"invalid cookie name {name!r}")
    if not isinstance(value, str) or ";" in value or _CTL.search(value):
        raise error(f"invalid value for cookie {name!r}")


class CookieJar:
    """Cookies kept by a client across requests.

    `CookieJar({"name": "value"})` holds cookies sent to every host;
    `extract()` stores a response's Set-Cookie headers; `header_for()`
    builds a request's Cookie header.
    """

    def __init__(
        self,
        cookies: CookieTypes | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_per_domain: int = 50,
        max_total: int = 3000,
    ) -> None:
        self._clock = clock
        self.max_per_domain = max_per_domain
        self.max_total = max_total
        # domain ("" for any host) -> (path, name) -> cookie, oldest first
        self._domains: dict[str, dict[_Key, Cookie]] = {}
        self._total = 0
        self._seq = 0
        self._touched = 0
        if cookies:
            self.update(cookies)

    # --- from responses ------------------------------------------------------
    def extract(
        self, response_url: URL, set_cookie_headers: list[str], *, now: float | None = None
    ) -> int:
        """Store the cookies of a response from `response_url`; invalid or
        refused ones are skipped. Returns how many were stored."""
        t = self._clock() if now is None else now
        stored = 0
        for header in set_cookie_headers:
            parsed = parse_set_cookie(header)
            if parsed is not None and self._store(response_url, parsed, t):
                stored += 1
        return stored

    def _store(self, url: URL, parsed: _Parsed, now: float) -> bool:
        host = url.host
        if not host:
            return False
        host_only = True
        domain = host
        if parsed.domain is not None and parsed.domain != host:
            if "." not in parsed.domain or _is_ip(host):
                return False  # a public suffix, or a domain cookie from an IP
            if not domain_matches(host, parsed.domain):
                return False  # a third party's domain
            host_only, domain = False, parsed.domain
        elif parsed.domain is not None and "." in host and not _is_ip(host):
            host_only = False  # Domain=<this host>: a domain cookie for it and below
        secure_origin = _is_secure_origin(url)
        if parsed.secure and not secure_origin:
            return False
        if not _prefix_allows(parsed):
            return False
        path = parsed.path if parsed.path is not None else default_path(url.path)
        if not secure_origin and self._shadows_secure(parsed.name, domain, path, now):
            return False
        expires: float | None = None
        if parsed.max_age is not None:
            expires = now + parsed.max_age if parsed.max_age > 0 else float("-inf")
        elif parsed.expires is not None:
            expires = min(parsed.expires, now + MAX_AGE_CAP)
        cookie = Cookie(
            parsed.name, parsed.value, domain=domain, path=path, host_only=host_only,
            secure=parsed.secure, http_only=parsed.http_only, same_site=parsed.same_site,
            expires=expires,
        )
        if cookie.has_expired(now):
            self._remove(domain, (path, parsed.name))
            return False
        self._insert(cookie, now)
        return True

    def _shadows_secure(self, name: str, domain: str, path: str, now: float) -> bool:
        """6265bis 5.7 step 16: an insecure origin may not touch a Secure cookie
        of the same name whose domain overlaps and whose path covers `path`."""
        for bucket_domain, bucket in self._domains.items():
            if not bucket_domain or not (
                domain_matches(domain, bucket_domain) or domain_matches(bucket_domain, domain)
            ):
                continue
            for c in bucket.values():
                if c.name == name and c.secure and not c.has_expired(now) and path_matches(
                    path, c.path
                ):
                    return True
        return False

    # --- storage -------------------------------------------------------------
    def _insert(self, cookie: Cookie, now: float) -> None:
        bucket = self._domains.setdefault(cookie.domain, {})
        key = (cookie.path, cookie.name)
        old = bucket.get(key)
        if old is not None:
            # 5.3 step 11: a replacement keeps the creation time (and so its
            # place in the Cookie header), but was just used: it moves to the
            # back of the eviction order (5.3: oldest last access first).
            cookie.creation, cookie.seq = old.creation, old.seq
            del bucket[key]
        else:
            self._seq += 1
            cookie.creation, cookie.seq = now, self._seq
            self._total += 1
        self._touched += 1
        cookie.touched = self._touched
        bucket[key] = cookie
        if len(bucket) > self.max_per_domain:
            self._evict(bucket, len(bucket) - self.max_per_domain, now)
        if self._total > self.max_total:
            self._purge(now)
            while self._total > self.max_total:
                oldest = min((b for b in self._domains.values() if b),
                             key=lambda b: next(iter(b.values())).touched)
                self._evict(oldest, 1, None)

    def _evict(self, bucket: dict[_Key, Cookie], count: int, now: float | None) -> None:
        """Drop `count` cookies from `bucket`: expired ones first, then the oldest."""
        victims = [k for k, c in bucket.items() if now is not None and c.has_expired(now)]
        if len(victims) < count:
            live = (k for k in bucket if k not in victims)
            victims.extend(k for _, k in zip(range(count - len(victims)), live, strict=False))
        for k in victims:
            del bucket[k]
        self._total -= len(victims)
        if not bucket:
            self._prune_empty()

    def _prune_empty(self) -> None:
        for d in [d for d, b in self._domains.items() if not b]:
            del self._domains[d]

    def _remove(self, domain: str, key: _Key) -> None:
        bucket = self._domains.get(domain)
        if bucket is not None and bucket.pop(key, None) is not None:
            self._total -= 1
            if not bucket:
                del self._domains[domain]

    def _purge(self, now: float) -> None:
        for domain, bucket in list(self._domains.items()):
            for key in [k for k, c in bucket.items() if c.has_expired(now)]:
                self._remove(domain, key)

    # --- for requests --------------------------------------------------------
    def _matching(self, url: URL, now: float) -> list[Cookie]:
        host = url.host
        path = url.path
        secure = _is_secure_origin(url)
        found: list[Cookie] = []
        expired: list[tuple[str, _Key]] = []
        for domain in self._candidate_domains(host):
            bucket = self._domains.get(domain)
            if not bucket:
                continue
            for key, c in bucket.items():
                if c.has_expired(now):
                    expired.append((domain, key))
                elif c.matches(host, path, secure):
                    found.append(c)
        for domain, key in expired:
            self._remove(domain, key)
        # 5.4 step 2: longer paths first, then earlier creation
        found.sort(key=lambda c: (-len(c.path), c.creation, c.seq))
        return found

    @staticmethod
    def _candidate_domains(host: str) -> list[str]:
        """The host, each parent domain, and "" (cookies for any host)."""
        if _is_ip(host):
            return [host, ""]
        out = [host]
        dot = host.find(".")
        while dot != -1:
            out.append(host[dot + 1 :])
            dot = host.find(".", dot + 1)
        out.append("")
        return out

    def header_for(self, url: URL, *, now: float | None = None) -> str | None:
        """The Cookie header value for a request to `url`, or None."""
        return self.cookie_header(url, None, now=now)

    def cookie_header(
        self, url: URL, extra: Mapping[str, str] | None = None, *, now: float | None = None
    ) -> str | None:
        """The Cookie header for `url` from the jar plus per-request `extra`
        cookies; an extra cookie replaces jar cookies of the same name."""
        if not self._domains and not extra:
            return None
        t = self._clock() if now is None else now
        cookies = self._matching(url, t) if self._domains else []
        pairs = [f"{c.name}={c.value}" for c in cookies if not extra or c.name not in extra]
        if extra:
            for name, value in extra.items():
                # "a=1; admin=true" would add a cookie; CR LF a header.
                _check_pair(name, value, LocalProtocolError)
                pairs.append(f"{name}={value}")
        return "; ".join(pairs) if pairs else None

    # --- the mapping-like surface --------------------------------------------
    def set(self, name: str, value: str, *, domain: str = "", path: str = "/",
            secure: bool = False) -> None:
        """Store a cookie; `domain=""` sends it to every host, a domain sends
        it to that domain and its subdomains."""
        _check_pair(name, value)
        cookie = Cookie(name, value, domain=domain.removeprefix(".").lower(), path=path,
                        secure=secure)
        self._insert(cookie, self._clock())

    def get(self, name: str, domain: str | None = None, path: str | None = None,
            default: str | None = None) -> str | None:
        """The value of cookie `name` (optionally only on `domain` / `path`);
        with several, the one with the longest path, then the oldest."""
        found = sorted(self._select(name, domain, path), key=lambda c: (-len(c.path), c.seq))
        return found[0].value if found else default

    def delete(self, name: str, domain: str | None = None, path: str | None = None) -> None:
        """Remove every cookie called `name` (optionally only on `domain` / `path`)."""
        for c in list(self._select(name, domain, path)):
            self._remove(c.domain, (c.path, c.name))

    def clear(self, domain: str | None = None) -> None:
        """Remove all cookies, or those stored for `domain`."""
        if domain is None:
            self._domains.clear()
            self._total = 0
        else:
            bucket = self._domains.pop(domain.removeprefix(".").lower(), None)
            if bucket:
                self._total -= len(bucket)

    def update(self, cookies: CookieTypes) -> None:
        """Add cookies from another jar or a `{name: value}` mapping."""
        if isinstance(cookies, CookieJar):
            now = self._clock()
            for c in cookies:
                copy = Cookie(c.name, c.value, domain=c.domain, path=c.path,
                              host_only=c.host_only, secure=c.secure, http_only=c.http_only,
                              same_site=c.same_site, expires=c.expires)
                self._insert(copy, now)
        else:
            for name, value in cookies.items():
                self.set(name, value)

    def _select(self, name: str, domain: str | None, path: str | None) -> Iterator[Cookie]:
        want = domain.removeprefix(".").lower() if domain is not None else None
        for c in self:
            if c.name == name and (want is None or c.domain == want) and (
                path is None or c.path == path
            ):
                yield c

    def __iter__(self) -> Iterator[Cookie]:
        """Live cookies, oldest first within each domain."""
        self._purge(self._clock())
        snapshot = [c for bucket in self._domains.values() for c in bucket.values()]
        return iter(snapshot)

    def __len__(self) -> int:
        self._purge(self._clock())
        return self._total

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self)

    def __bool__(self) -> bool:
        return len(self) > 0

    def may_have_cookies(self) -> bool:
        """False only when the jar is certainly empty; cheaper than
        `bool(jar)`, which first purges expired cookies."""
        return bool(self._domains)

    def __repr__(self) -> str:
        return f"<CookieJar cookies={self._total} domains={len(self._domains)}>"
