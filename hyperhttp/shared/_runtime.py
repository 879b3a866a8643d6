"""Where a coordinator lives on disk, and the checks that keep it private.

Layout: a runtime directory per coordinator name,
``$XDG_RUNTIME_DIR/hyperhttp/<name>`` or else ``/tmp/hyperhttp-<uid>/<name>``,
holding ``coordinator.sock`` (the Unix socket, 0600) and ``coordinator.lock``
(an flock the coordinator holds for its whole life, so the kernel releases
it when the process dies: no stale pid files).

Every directory we create or use is checked with `lstat` (never following a
symlink) on every use: it must be a real directory owned by us with no
group or other permission bits. Anything else is refused with
`CoordinatorError`, since another user could then swap the socket.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile
from pathlib import Path

from .._exceptions import CoordinatorError

__all__ = [
    "LOCK_NAME",
    "SOCKET_NAME",
    "RuntimePaths",
    "check_private_dir",
    "check_socket",
    "default_base",
    "ensure_private_dir",
    "paths_for",
    "take_lock",
]

SOCKET_NAME = "coordinator.sock"
LOCK_NAME = "coordinator.lock"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


class RuntimePaths:
    """The directory, socket and lock paths of one coordinator."""

    __slots__ = ("directory", "lock", "socket")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / SOCKET_NAME
        self.lock = directory / LOCK_NAME

    def __repr__(self) -> str:
        return f"<RuntimePaths {self.socket}>"

    @classmethod
    def for_socket(cls, socket_path: Path) -> RuntimePaths:
        """Paths for a socket given by address: the lock sits next to it."""
        paths = cls(socket_path.parent)
        paths.socket = socket_path
        if socket_path.name != SOCKET_NAME:
            paths.lock = socket_path.parent / (socket_path.name + ".lock")
        return paths


def default_base() -> Path:
    """The per-user parent of every coordinator's directory."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "hyperhttp"
    return Path(tempfile.gettempdir()) / f"hyperhttp-{os.getuid()}"


def check_name(name: str) -> str:
    if not _NAME.match(name) or name in {".", ".."}:
        raise CoordinatorError(f"invalid coordinator name {name!r}: use letters, digits, _ . -")
    return name


def paths_for(
    name: str = "default", *, runtime_dir: str | os.PathLike[str] | None = None,
    socket_path: str | os.PathLike[str] | None = None,
) -> RuntimePaths:
    """Paths for a coordinator: `socket_path` wins, then `runtime_dir`, then the default."""
    if socket_path is not None:
        paths = RuntimePaths.for_socket(Path(socket_path))
    elif runtime_dir is not None:
        paths = RuntimePaths(Path(runtime_dir))
    else:
        paths = RuntimePaths(default_base() / check_name(name))
    if len(os.fsencode(paths.socket)) > _MAX_SOCKET_PATH:
        raise CoordinatorError(f"socket path too long for a Unix socket: {paths.socket}")
    return paths


def check_private_dir(path: Path) -> None:
    """Refuse a directory that is a symlink, not ours, or open to others."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CoordinatorError(f"coordinator directory {path} does not exist") from None
    except OSError as exc:
        raise CoordinatorError(f"cannot inspect coordinator directory {path}: {exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise CoordinatorError(f"refusing coordinator directory {path}: it is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise CoordinatorError(f"refusing coordinator directory {path}: not a directory")
    if st.st_uid != os.getuid():
        raise CoordinatorError(
            f"refusing coordinator directory {path}: owned by uid {st.st_uid}, not {os.getuid()}"
        )
    if st.st_mode & 0o077:
        raise CoordinatorError(
            f"refusing coordinator directory {path}: mode {stat.S_IMODE(st.st_mode):o}, "
            "must be 0700"
        )


def ensure_private_dir(path: Path, *, create: bool) -> None:
    """Create `path` (and its parent under the default base) as 0700, then check it."""
    if create:
        # The default base is ours to create too; a given --runtime-dir's
        # parent must already exist.
        if path.parent == default_base() and not os.path.lexists(path.parent):
            _mkdir_private(path.parent)
        if not os.path.lexists(path):
            _mkdir_private(path)
    if path.parent == default_base():
        check_private_dir(path.parent)
    check_private_dir(path)


def _mkdir_private(path: Path) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass  # a racing process made it; it is checked right after
    except OSError as exc:
        raise CoordinatorError(f"cannot create coordinator directory {path}: {exc}") from None


def check_socket(path: Path) -> None:
    """Refuse a socket path that is not a socket of ours with mode 0600."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CoordinatorError(f"no coordinator socket at {path}") from None
    except OSError as exc:
        raise CoordinatorError(f"cannot inspect coordinator socket {path}: {exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise CoordinatorError(f"refusing {path}: not a socket")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise CoordinatorError(f"refusing socket {path}: not private to uid {os.getuid()}")


def take_lock(path: Path) -> int | None:
    """Open and flock `path` (created 0600, never through a symlink).

    Returns the fd holding the lock, or None if another process holds it."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise CoordinatorError(f"cannot open lock file {path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise CoordinatorError(f"cannot lock {path}: {exc}") from None
    return fd


def lock_is_held(path: Path) -> bool:
    """True when a live coordinator holds the lock at `path`."""
    fd = take_lock(path)
    if fd is None:
        return True
    os.close(fd)  # closing releases our probe lock at once
    return False
