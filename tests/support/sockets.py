"""What the OS says a process holds: its TCP sockets, by peer port."""

from __future__ import annotations

import os
import socket
import stat


def sockets_connected_to(ports: list[int]) -> dict[int, int]:
    """Open TCP sockets of this process per peer port, as the OS sees them
    (whatever the client's own bookkeeping believes)."""
    counts = dict.fromkeys(ports, 0)
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            dup = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if dup.family in (socket.AF_INET, socket.AF_INET6):
                port = dup.getpeername()[1]
                if port in counts:
                    counts[port] += 1
        except OSError:
            pass
        finally:
            dup.close()
    return counts
