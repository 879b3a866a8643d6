"""The coordinator's footprint on disk: its lifetime lock and its listening socket.

Rules
-----
1. One coordinator serves a path: the one holding the flock on the lock
   file next to the socket. It takes the lock before it binds and lets it
   go only after its socket is gone.
2. What is ours is what we made: the socket's and the lock file's
   (st_dev, st_ino) are recorded when they are bound and locked. We only
   ever unlink a socket that is still ours; one bound by a successor at
   the same path is left alone.
3. The paths can be taken from under a live coordinator (a tmp cleaner, an
   operator's ``rm -rf``): `is_intact` notices, and `reclaim` takes the
   path back (directory, lock, socket) if the lock can be had. If another
   coordinator already holds it, we step down: two never serve one path.
4. The lock file records that a coordinator served here (our pid is written
   into it). Only a lock file that no coordinator ever wrote (`first_start`)
   proves that no worker holds a connection granted at this path, which is
   what lets the server skip its grace period; worker probes create the
   file but never write it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time

from .._exceptions import CoordinatorError
from ._runtime import RuntimePaths, ensure_private_dir, take_lock

__all__ = ["Endpoint"]

_FileId = tuple[int, int]


def _file_id(path: os.PathLike[str]) -> _FileId | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Endpoint:
    """The lock and the listening socket of one coordinator (see the rules above)."""

    def __init__(self, paths: RuntimePaths) -> None:
        self.paths = paths
        self.lock_fd: int | None = None
        self.listener: socket.socket | None = None
        self.first_start = False
        self._lock_id: _FileId | None = None
        self._socket_id: _FileId | None = None

    def __repr__(self) -> str:
        state = "serving" if self.listener is not None else "closed"
        return f"<Endpoint {self.paths.socket} {state}>"

    def open(self) -> None:
        """Take the directory, the lock and the socket; raises CoordinatorError."""
        ensure_private_dir(self.paths.directory, create=True)
        for attempt in range(5):
            # A worker probing the lock (auto-spawn) holds it for an instant: retry briefly.
            if self._lock():
                break
            time.sleep(0.02 * (attempt + 1))
        else:
            raise CoordinatorError(f"a coordinator is already running at {self.paths.socket}")
        self._bind()

    def is_intact(self) -> bool:
        """True while the lock file and the socket at our paths are still ours."""
        return (
            self._lock_id is not None
            and _file_id(self.paths.lock) == self._lock_id
            and _file_id(self.paths.socket) == self._socket_id
        )

    def reclaim(self) -> bool:
        """Serve the paths again after they were removed or replaced (rule 3).

        True: we hold the lock and a new listener (the old one is closed).
        False: another coordinator holds the path, or it cannot be made;
        the caller steps down."""
        try:
            ensure_private_dir(self.paths.directory, create=True)
            if _file_id(self.paths.lock) != self._lock_id:
                old_fd = self.lock_fd
                if not self._lock():
                    return False
                if old_fd is not None:
                    os.close(old_fd)
            if _file_id(self.paths.socket) != self._socket_id:
                old = self.listener
                self._socket_id = None  # not ours any more: never unlink it on close
                self._bind()
                if old is not None:
                    old.close()
        except (CoordinatorError, OSError):
            return False
        return True

    def close(self) -> None:
        """Unlink our socket (only if still ours), then release the lock."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        with contextlib.suppress(OSError):
            if self._socket_id is not None and _file_id(self.paths.socket) == self._socket_id:
                os.unlink(self.paths.socket)
        self._socket_id = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the flock last: the socket is gone first
            self.lock_fd = None
        self._lock_id = None

    # --- internals ----------------------------------------------------------------------
    def _lock(self) -> bool:
        fd = take_lock(self.paths.lock)
        if fd is None:
            return False
        try:
            st = os.fstat(fd)
            if self.lock_fd is None:
                self.first_start = st.st_size == 0  # rule 4
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            os.close(fd)
            raise
        self.lock_fd = fd
        self._lock_id = (st.st_dev, st.st_ino)
        return True

    def _bind(self) -> None:
        path = self.paths.socket
        if os.path.lexists(path):
            if not _is_socket(path):
                raise CoordinatorError(f"refusing to replace {path}: not a socket")
            os.unlink(path)  # safe: we hold the lock, so its owner is dead or stepping down
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                listener.bind(os.fspath(path))
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            listener.listen(512)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self.listener = listener
        self._socket_id = _file_id(path)


def _is_socket(path: os.PathLike[str]) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False
