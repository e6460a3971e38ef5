"""The machine's sampling daemon (:mod:`.server`) and its Prometheus exposition
(:mod:`.metrics`): ``energymeter daemon``."""

from __future__ import annotations
