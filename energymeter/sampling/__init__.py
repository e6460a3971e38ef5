"""Sampling: the thread that reads every probe at a fixed interval and stamps the rows
(:class:`Sampler`), and the running aggregates over those rows (:class:`Aggregator`)."""

from __future__ import annotations

from .aggregate import Aggregator, peak_window_s
from .sampler import Sampler

__all__ = ["Aggregator", "Sampler", "peak_window_s"]
