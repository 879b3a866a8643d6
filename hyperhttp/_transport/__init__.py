"""Transport layer: dialing (DNS, Happy Eyeballs, TLS), the pool and the connection drivers."""

from __future__ import annotations
