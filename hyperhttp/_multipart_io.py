"""Where multipart part content comes from, and how it is read.

Sources: bytes in memory, a path (opened when a pass starts), an open file
handle (single use), an async iterable (single use). Files are read in
`chunk_size` pieces on one thread per pass, never on the event loop; a path
whose size changed since the body was built is refused rather than sent
with a wrong Content-Length.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from typing import Protocol

from ._exceptions import LocalProtocolError


class SupportsRead(Protocol):
    """An open binary file: anything with `read(n) -> bytes`."""

    def read(self, size: int = ..., /) -> bytes: ...


class _Source:
    """Where one part's content comes from; `used` matters only if single-use."""

    __slots__ = ("kind", "replayable", "size", "used")

    def __init__(self, size: int | None, replayable: bool, kind: str) -> None:
        self.size = size
        self.replayable = replayable
        self.kind = kind
        self.used = False


class _Memory(_Source):
    __slots__ = ("data",)

    def __init__(self, data: bytes | memoryview) -> None:
        super().__init__(len(data), True, "in-memory content")
        self.data = data


class _PathSource(_Source):
    __slots__ = ("path",)

    def __init__(self, path: str, size: int | None, regular: bool) -> None:
        kind = "a file path" if regular else "a non-regular file (pipe or device)"
        super().__init__(size, regular, kind)
        self.path = path


class _HandleSource(_Source):
    __slots__ = ("fh", "threaded")

    def __init__(self, fh: SupportsRead, size: int | None) -> None:
        super().__init__(size, False, "an open file handle")
        self.fh = fh
        # In-memory handles read without the thread hop; real files never on the loop.
        self.threaded = not isinstance(fh, io.BytesIO)


class _AsyncSource(_Source):
    __slots__ = ("iterable",)

    def __init__(self, iterable: AsyncIterable[bytes], size: int | None) -> None:
        super().__init__(size, False, "an async iterable")
        self.iterable = iterable


def _memory(value: bytes | bytearray | memoryview) -> _Memory:
    if isinstance(value, bytes):
        return _Memory(value)
    view = memoryview(value)
    # A view of a bytearray is not copied; it also stops the bytearray being
    # resized, which keeps the announced Content-Length true.
    return _Memory(view.cast("B") if view.c_contiguous else view.tobytes())


def _path_source(path: str | os.PathLike[str], size: int | None) -> tuple[_Source, str | None]:
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError("multipart file paths must be str or os.PathLike[str]")
    try:
        st = os.stat(p)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            exc.errno,
            f"{exc.strerror} (a str file value is a path; pass bytes to send text as content)",
            p,
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "a multipart file part cannot be a directory", p)
    name = os.path.basename(p)
    if not stat.S_ISREG(st.st_mode):
        return _PathSource(p, size, regular=False), name
    if size is not None and size != st.st_size:
        raise ValueError(f"size={size} does not match the {st.st_size} bytes of {p!r}")
    return _PathSource(p, st.st_size, regular=True), name


def _available(fh: SupportsRead) -> int | None:
    """Bytes left from the current position, when that can be known."""
    tell: Callable[[], int] | None = getattr(fh, "tell", None)
    try:
        fd = fh.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        fd = None
    if isinstance(fd, int) and tell is not None:
        st = os.fstat(fd)
        return max(st.st_size - tell(), 0) if stat.S_ISREG(st.st_mode) else None
    seekable = getattr(fh, "seekable", None)
    if tell is None or seekable is None or not seekable():
        return None
    pos = tell()
    end = int(fh.seek(0, os.SEEK_END))  # type: ignore[attr-defined]
    fh.seek(pos)  # type: ignore[attr-defined]
    return max(end - pos, 0)


def _handle_source(fh: SupportsRead, size: int | None) -> tuple[_Source, str | None]:
    if isinstance(fh, io.TextIOBase):
        raise TypeError("multipart files must be opened in binary mode ('rb'), not text mode")
    available = _available(fh)
    if size is None:
        size = available
    elif available is not None and size > available:
        raise ValueError(f"size={size} but only {available} bytes are left in the file")
    name = getattr(fh, "name", None)
    filename = os.path.basename(name) if isinstance(name, str) and name else None
    return _HandleSource(fh, size), filename


def _content_source(value: object, size: int | None) -> tuple[_Source, str | None]:
    """Turn any file content shape into a source and its default filename."""
    if isinstance(value, bytes | bytearray | memoryview):
        src = _memory(value)
        if size is not None and size != src.size:
            raise ValueError(f"size={size} does not match the {src.size} bytes of content")
        return src, None
    if isinstance(value, str | os.PathLike):
        return _path_source(value, size)
    if isinstance(value, io.TextIOBase):
        raise TypeError("multipart files must be opened in binary mode ('rb'), not text mode")
    if isinstance(value, AsyncIterable):
        return _AsyncSource(value, size), None
    if callable(getattr(value, "read", None)):
        return _handle_source(value, size)  # type: ignore[arg-type]
    raise TypeError(
        f"unsupported multipart file content of type {type(value).__name__}: expected bytes, "
        "a path, an open binary file or an async iterable of bytes"
    )


class _FileReader:
    """A file we opened, read in worker threads and closed exactly once.

    A cancelled `to_thread` call keeps running in its thread, so `close()` on
    the loop must not close the file under it: while a call is in flight the
    thread closes the file itself when the call returns.
    """

    __slots__ = ("_busy", "_closed", "_fh", "_lock", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: io.FileIO | None = None
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False

    def _enter(self) -> None:
        with self._lock:
            if self._closed:
                raise ValueError("multipart file reader is closed")
            self._busy = True

    def _leave(self) -> None:
        with self._lock:
            self._busy = False
            fh = self._fh if self._closed else None
        if fh is not None:
            fh.close()

    def open(self) -> int:
        """Open the file (in a worker thread); return its current size."""
        self._enter()
        try:
            self._fh = fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
            fd = fh.fileno()
            if hasattr(os, "posix_fadvise"):
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                except OSError:
                    pass  # only a hint
            return os.fstat(fd).st_size
        finally:
            self._leave()

    def read(self, n: int) -> bytes:
        self._enter()
        try:
            assert self._fh is not None
            return self._fh.read(n) or b""
        finally:
            self._leave()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fh = None if self._busy else self._fh
        if fh is not None:
            fh.close()


def _check_path_sizes(paths: list[tuple[str, _PathSource]]) -> None:
    for label, src in paths:
        size_now = os.stat(src.path).st_size
        if size_now != src.size:
            raise LocalProtocolError(_changed_message(label, src, size_now))


def _read_run(
    read: Callable[[int], bytes], chunk_size: int, remaining: int | None, count: int
) -> list[bytes]:
    """Up to `count` pieces of at most `chunk_size` bytes, stopping once
    `remaining` is read; an empty piece last means the file ended."""
    run: list[bytes] = []
    for _ in range(count):
        n = chunk_size if remaining is None else min(chunk_size, remaining)
        if n <= 0:
            break
        chunk = read(n)
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)
        run.append(chunk)
        if not chunk:
            break
        if remaining is not None:
            remaining -= len(chunk)
    return run


async def _read_runs(
    read: Callable[[int], bytes],
    threaded: bool,
    size: int | None,
    chunk_size: int,
    label: str,
    per_run: int,
) -> AsyncGenerator[list[bytes], None]:
    """Read `size` bytes (or to EOF when None) in pieces of at most
    `chunk_size`, yielded `per_run` pieces at a time (fewer at the end).

    Threaded reads run on one thread of this pass's own. With the loop's
    shared pool, a worker preempted between handing over its result and
    dropping it keeps a chunk alive while the next read runs on another
    worker: up to one stale chunk per pool thread (6 MiB peaks were
    measured on 2 cores). One thread keeps it to the pieces in flight: the
    run the caller holds and the next, read while the caller writes. Each
    run costs one thread hop, so a longer run spreads that cost over more
    bytes without making any one read bigger."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(1, thread_name_prefix="hyperhttp-upload") if threaded else None
    # Threaded: the next run is read while the caller writes this one, so
    # the socket is not left idle for a thread hop between runs.
    ahead: asyncio.Future[list[bytes]] | None = None
    try:
        remaining = size
        while remaining is None or remaining > 0:
            if executor is not None:
                if ahead is None:
                    ahead = loop.run_in_executor(
                        executor, _read_run, read, chunk_size, remaining, per_run
                    )
                run, ahead = await ahead, None
            else:
                run = _read_run(read, chunk_size, remaining, per_run)
            if not run[-1]:  # the file ended
                run.pop()
                if remaining is None:
                    if run:
                        yield run
                    return
                short = remaining - sum(map(len, run))
                raise LocalProtocolError(
                    f"multipart part {label} ended {short} bytes short of the {size} "
                    "bytes announced in Content-Length (was the file truncated?)"
                )
            if remaining is not None:
                remaining -= sum(map(len, run))
            if executor is not None and (remaining is None or remaining > 0):
                ahead = loop.run_in_executor(
                    executor, _read_run, read, chunk_size, remaining, per_run
                )
            yield run
            del run
    finally:
        if ahead is not None:
            # Abandoned read-ahead: its result (or error) is not wanted.
            ahead.cancel()
        if executor is not None:
            # A read still running finishes on its own; the reader closes the
            # file when it returns (see _FileReader).
            executor.shutdown(wait=False)


async def _stream_async(src: _AsyncSource, label: str) -> AsyncGenerator[list[bytes], None]:
    iterator = aiter(src.iterable)
    produced = 0
    try:
        async for chunk in iterator:
            if not isinstance(chunk, bytes):
                if not isinstance(chunk, bytearray | memoryview):
                    raise TypeError(
                        f"multipart part {label} yielded {type(chunk).__name__}, not bytes"
                    )
                chunk = bytes(chunk)
            if not chunk:
                continue  # an empty chunk would end a chunked body early
            produced += len(chunk)
            if src.size is not None and produced > src.size:
                raise LocalProtocolError(
                    f"multipart part {label} produced more than size={src.size} bytes"
                )
            yield [chunk]
        if src.size is not None and produced != src.size:
            raise LocalProtocolError(
                f"multipart part {label} produced {produced} bytes, not the size={src.size} announced"
            )
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def _consumed_message(label: str, src: _Source) -> str:
    return (
        f"multipart part {label} reads from {src.kind}, which can be read only once, and the "
        "request body had to be sent again (a retry, a 307/308 redirect or an authentication "
        "challenge); give a path or bytes instead so the body can be replayed"
    )


def _changed_message(label: str, src: _Source, size_now: int) -> str:
    return (
        f"multipart part {label}: the file is now {size_now} bytes but was {src.size} bytes when "
        "the body was built, so its Content-Length would be wrong; build the body again"
    )
