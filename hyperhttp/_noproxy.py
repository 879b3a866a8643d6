"""NO_PROXY: which hosts bypass the proxy (pure: names are never resolved).

Entries, comma- or space-separated: `*` (no proxying at all); an exact name
(`api.internal`, case-insensitive, trailing dot ignored), which also matches
every name under it as curl does; `.corp` or `*.corp`, which match only
names under it; IPv4 and IPv6 literals (`127.0.0.1`, `::1`, `[::1]`); CIDR
ranges of either family (`10.0.0.0/8`, `fd00::/8`), matched against IP
literal hosts only; and any of these with `:port` (`[v6]:port` for IPv6),
which then matches that port only. CIDR entries take no port. An IPv6 host
with a zone (`fe80::1%eth0`) matches entries for its bare address and
entries with the same zone. Entries that cannot be read are skipped with
one warning each, never an exception.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import TypeAlias

_log = logging.getLogger("hyperhttp.proxy")
_NAME_RE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = ["IPAddress", "IPNetwork", "NoProxy"]


class NoProxy:
    """Hosts that bypass the proxy, read from a NO_PROXY-style list.

    `NoProxy.parse("localhost, .corp, 10.0.0.0/8, [::1]:8080")`, then
    `matches(host, port)`. Host names are never resolved.
    """

    __slots__ = ("_all", "_exact", "_ips", "_nets", "_subdomains")

    def __init__(self) -> None:
        self._all = False
        # name -> ports (None = any port): rules for the name itself ...
        self._exact: dict[str, set[int | None]] = {}
        # ... and for names strictly under it
        self._subdomains: dict[str, set[int | None]] = {}
        self._ips: dict[IPAddress, set[int | None]] = {}
        self._nets: list[IPNetwork] = []

    @classmethod
    def parse(
        cls, text: str | Iterable[str] | None, *, logger: logging.Logger = _log
    ) -> NoProxy:
        """Read entries separated by commas and/or whitespace; entries that
        cannot be read are skipped with a warning naming them."""
        self = cls()
        if text is None:
            return self
        chunks = [text] if isinstance(text, str) else list(text)
        warned: set[str] = set()
        for chunk in chunks:
            for entry in re.split(r"[,\s]+", chunk):
                if not entry:
                    continue
                problem = self._add(entry)
                if problem is not None and entry not in warned:
                    warned.add(entry)
                    logger.warning("ignoring NO_PROXY entry %r: %s", entry, problem)
        return self

    def _add(self, entry: str) -> str | None:
        """Add one rule; return why the entry is unreadable, or None."""
        if entry == "*":
            self._all = True
            return None
        if "/" in entry:
            try:
                self._nets.append(ipaddress.ip_network(_unbracket(entry), strict=False))
            except ValueError:
                return "not a valid CIDR range (CIDR entries take no port)"
            return None
        ip = _ip_or_none(_unbracket(entry))
        if ip is not None:
            self._ips.setdefault(ip, set()).add(None)
            return None
        host, port, problem = _split_port(entry)
        if problem is not None:
            return problem
        ip = _ip_or_none(host)
        if ip is not None:
            self._ips.setdefault(ip, set()).add(port)
            return None
        return self._add_name(host, port)

    def _add_name(self, name: str, port: int | None) -> str | None:
        subdomains_only = False
        if name.startswith("*."):
            name, subdomains_only = name[2:], True
        elif name.startswith("."):
            name, subdomains_only = name[1:], True
        name = name.rstrip(".").lower()
        if not name.isascii():
            try:
                name = name.encode("idna").decode("ascii")
            except UnicodeError:
                return "not a valid host name"
        if not _NAME_RE.fullmatch(name):
            return "not a host name, IP address or CIDR range"
        if not subdomains_only:
            self._exact.setdefault(name, set()).add(port)
        self._subdomains.setdefault(name, set()).add(port)
        return None

    @property
    def matches_all(self) -> bool:
        """True when the list holds `*`: nothing is proxied."""
        return self._all

    def __bool__(self) -> bool:
        return bool(self._all or self._exact or self._subdomains or self._ips or self._nets)

    def matches(self, host: str, port: int | None) -> bool:
        """Should a request to `host:port` bypass the proxy? `host` may be
        bracketed, any case, with a trailing dot; `port=None` matches only
        entries without a port."""
        if self._all:
            return True
        host = _unbracket(host).rstrip(".")
        address, zone_mark, _ = host.partition("%")
        ip = _ip_or_none(address)
        if ip is not None:
            # A zone (fe80::1%eth0) is matched by entries for the address
            # alone and by entries with that same zone (its case kept:
            # interface names are case-sensitive).
            zoned = _ip_or_none(host) if zone_mark else None
            return self._matches_ip(ip, port) or (
                zoned is not None and self._matches_port(self._ips.get(zoned), port)
            )
        host = host.lower()
        if self._matches_port(self._exact.get(host), port):
            return True
        rest = host
        while "." in rest:
            rest = rest.split(".", 1)[1]
            if self._matches_port(self._subdomains.get(rest), port):
                return True
        return False

    def _matches_ip(self, ip: IPAddress, port: int | None) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # ::ffff:10.0.0.1 is 10.0.0.1
        for addr in candidates:
            if self._matches_port(self._ips.get(addr), port):
                return True
            if any(addr.version == net.version and addr in net for net in self._nets):
                return True
        return False

    @staticmethod
    def _matches_port(ports: set[int | None] | None, port: int | None) -> bool:
        return ports is not None and (None in ports or port in ports)

    def __repr__(self) -> str:
        if self._all:
            return "NoProxy(all)"
        names = len(self._subdomains)
        return f"NoProxy(names={names}, ips={len(self._ips)}, networks={len(self._nets)})"


def _unbracket(text: str) -> str:
    """`[::1]` -> `::1`; `[fd00::]/8` -> `fd00::/8`; anything else unchanged."""
    if text.startswith("["):
        if text.endswith("]"):
            return text[1:-1]
        end = text.find("]/")
        if end > 0:
            return text[1:end] + text[end + 1 :]
    return text


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_port(entry: str) -> tuple[str, int | None, str | None]:
    """`host`, `host:port` or `[v6]:port` -> (host, port, problem)."""
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0 or not entry[end + 1 :].startswith(":"):
            return "", None, "not a bracketed IPv6 address with a port"
        host, port_text = entry[1:end], entry[end + 2 :]
        if _ip_or_none(host) is None:
            return "", None, "not an IPv6 address"
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    elif ":" in entry:
        return "", None, "not an IP address (bracket IPv6 addresses that carry a port)"
    else:
        return entry, None, None
    if not host:
        return "", None, "no host before the port"
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        return "", None, f"invalid port {port_text!r}"
    return host, int(port_text), None
