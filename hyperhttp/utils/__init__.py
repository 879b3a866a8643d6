"""Small pure helpers; `hyperhttp.utils.backoff` holds the backoff strategies."""

from __future__ import annotations

from .backoff import BackoffStrategy, DecorrelatedJitterBackoff, ExponentialBackoff

__all__ = ["BackoffStrategy", "DecorrelatedJitterBackoff", "ExponentialBackoff"]
