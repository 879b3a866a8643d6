"""Case-insensitive, multi-valued, order-keeping HTTP headers.

Names keep the case they were given (HTTP/1.1 sends them as written; HTTP/2
lower-cases them on the wire) and compare case-insensitively. Values are
`str`; bytes given to the constructor are decoded as latin-1, as HTTP
defines. Validation of names and values against CR, LF and NUL happens when
a request is serialised, so that hooks may still change headers up to then.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Union

HeaderTypes = Union[
    "Headers",
    Mapping[str, str],
    Mapping[bytes, bytes],
    Sequence[tuple[str, str]],
    Sequence[tuple[bytes, bytes]],
]

_SENSITIVE = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def _name(name: str | bytes) -> str:
    if isinstance(name, str):
        return name
    if isinstance(name, bytes):
        return name.decode("latin-1")
    raise TypeError(f"header name must be str or bytes, not {type(name).__name__}")


def _value(name: str, value: str | bytes) -> str:
    # Checked here, where the header's name is known: a None or an int
    # otherwise failed much later, in a regex that named neither.
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(f"header {name!r} value must be str or bytes, not {type(value).__name__}")


class Headers(MutableMapping[str, str]):
    """HTTP headers. `h["name"]` joins repeated values with ", "; use
    `get_list()` for each value on its own (Set-Cookie)."""

    __slots__ = ("_items",)

    def __init__(self, headers: HeaderTypes | None = None) -> None:
        # Each entry: (name as given, lower-cased name, value)
        self._items: list[tuple[str, str, str]] = []
        if headers is None:
            return
        if isinstance(headers, Headers):
            self._items = list(headers._items)
            return
        pairs: Iterable[tuple[str | bytes, str | bytes]]
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in pairs:
            n = _name(name)
            self._items.append((n, n.lower(), _value(n, value)))

    @classmethod
    def from_raw(cls, items: list[tuple[str, str, str]]) -> Headers:
        """Adopt already-split (name, lower-name, value) triples without copying."""
        h = cls.__new__(cls)
        h._items = items
        return h

    # --- Mapping --------------------------------------------------------
    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        lk = key.lower()
        found: str | None = None
        more: list[str] | None = None
        for _, n, v in self._items:
            if n == lk:
                if found is None:
                    found = v
                elif more is None:
                    more = [found, v]
                else:
                    more.append(v)
        if more is not None:
            return ", ".join(more)
        return default if found is None else found

    def __setitem__(self, key: str, value: str) -> None:
        key = _name(key)
        lk = key.lower()
        value = _value(key, value)
        for i, (_, n, _v) in enumerate(self._items):
            if n == lk:
                self._items[i] = (key, lk, value)
                self._items[i + 1 :] = [t for t in self._items[i + 1 :] if t[1] != lk]
                return
        self._items.append((key, lk, value))

    def __delitem__(self, key: str) -> None:
        lk = key.lower()
        kept = [t for t in self._items if t[1] != lk]
        if len(kept) == len(self._items):
            raise KeyError(key)
        self._items = kept

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        lk = key.lower()
        for _, n, _v in self._items:  # noqa: SIM110 - a plain loop: any() + generator was a hot spot
            if n == lk:
                return True
        return False

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, lk, _ in self._items:
            if lk not in seen:
                seen.add(lk)
                yield name

    def __len__(self) -> int:
        return len({n for _, n, _v in self._items})

    # --- multi-valued access --------------------------------------------
    def get_list(self, key: str) -> list[str]:
        lk = key.lower()
        return [v for _, n, v in self._items if n == lk]

    def add(self, key: str, value: str) -> None:
        """Append a value, keeping any existing ones."""
        key = _name(key)
        self._items.append((key, key.lower(), _value(key, value)))

    def setdefault(self, key: str, default: str = "") -> str:
        if key in self:
            return self[key]
        self.add(key, default)
        return default

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in order, repeated names included."""
        return [(name, v) for name, _, v in self._items]

    def raw_items(self) -> list[tuple[str, str, str]]:
        return self._items

    def update(self, other: HeaderTypes | None = None, /, **kwargs: str) -> None:  # type: ignore[override]
        if other is not None:
            incoming = other if isinstance(other, Headers) else Headers(other)
            for name in {lk for _, lk, _v in incoming._items}:
                self._items = [t for t in self._items if t[1] != name]
            self._items.extend(incoming._items)
        for k, v in kwargs.items():
            self[k] = v

    def copy(self) -> Headers:
        return Headers.from_raw(list(self._items))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping | list) and not isinstance(other, Headers):
            other = Headers(other)
        if not isinstance(other, Headers):
            return NotImplemented
        return sorted((n, v) for _, n, v in self._items) == sorted(
            (n, v) for _, n, v in other._items
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = [
            (name, "[secure]" if lk in _SENSITIVE else v) for name, lk, v in self._items
        ]
        return f"Headers({shown!r})"
