"""What every integration shares: a report's figures as flat metrics in base units, numeric
metrics picked from a framework's logs, and the rank rules of distributed training."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..session import Meter

if TYPE_CHECKING:
    from ..report import Report

#: The prefix of energymeter's metrics in other tools (``energy/total_j``...).
PREFIX = "energy/"


def report_metrics(report: Report, prefix: str = PREFIX, *, basis: str = "machine"
                   ) -> dict[str, float]:
    """The figures of ``report`` as flat metrics in base units (J, W, s, g):
    ``energy/total_j``, ``energy/<kind>_j``, ``energy/duration_s``, ``energy/mean_power_w``,
    ``energy/emissions_g``, ``energy/per_item_j`` on the energy ``basis`` (machine,
    attributed, net: :mod:`energymeter.report.bases`; machine where the run lacks it, and
    :func:`report_tags` says which), every basis the run has as ``energy/<basis>/total_j``,
    and each phase's ``energy/phase/<name>_j`` (the first occurrence of each name; the
    machine's)."""
    from ..report.bases import energy_on

    energy = energy_on(report, basis) or energy_on(report, "machine")
    machine = report.total_energy_j
    out: dict[str, float] = {f"{prefix}total_j": energy.total_j,
                             f"{prefix}duration_s": report.duration_s,
                             f"{prefix}mean_power_w": (energy.total_j / report.duration_s
                                                       if report.duration_s > 0 else 0.0)}
    for kind, joules in energy.by_kind.items():
        out[f"{prefix}{kind}_j"] = float(joules)
    if report.emissions_g is not None:
        out[f"{prefix}emissions_g"] = float(report.emissions_g) * (
            energy.total_j / machine if machine > 0 else 1.0)
    if report.items:
        out[f"{prefix}per_item_j"] = energy.total_j / report.items
    for name, block in report.energy_bases.items():
        out[f"{prefix}{name}/total_j"] = float(block["total_j"])
    channels = [c.channel for c in report.channels]
    for phase in report.phases:
        key = f"{prefix}phase/{phase.name}_j"
        if key not in out:
            out[key] = float(phase.to_dict(channels)["energy_j"]["total"])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def report_tags(report: Report, *, basis: str = "machine") -> dict[str, str]:
    """How the numbers were obtained, as text tags: run id, energy basis of the headline
    metrics, methods per kind, region, path."""
    from ..report.bases import energy_on

    used = (energy_on(report, basis) or energy_on(report, "machine")).basis
    tags = {"energymeter.run_id": report.run_id, "energymeter.status": report.status,
            "energymeter.basis": used}
    for kind in report.energy_j["by_kind"]:
        tags[f"energymeter.method.{kind}"] = report.methods(kind)
    if report.carbon:
        tags["energymeter.region"] = str(report.carbon.get("region"))
    if report.path is not None:
        tags["energymeter.path"] = str(report.path)
    return tags


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``metrics`` that are finite numbers (tensors of one element included)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[str(key)] = float(value)
    return out



class CallbackRun:
    """The run a training callback measures: started at the framework's begin hook (with
    ``sync`` on CUDA), phases begun and ended from other hooks by key, stopped with every
    phase still open; ``reports`` keeps each finished one."""

    def __init__(self, tags: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> None:
        self.tags = tags
        self.settings = dict(settings)
        self.meter: Meter | None = None
        self.reports: list[Any] = []
        self.phases: dict[str, Any] = {}

    def start(self, name: str, device: Any) -> None:
        sync = "torch" if getattr(device, "type", None) == "cuda" else None
        self.meter = Meter(name, sync=sync, tags=self.tags, **self.settings).start()
        self.phases = {}

    def begin(self, key: str) -> None:
        if self.meter is not None and key not in self.phases:
            self.phases[key] = self.meter.begin_phase(key)

    def end(self, key: str) -> None:
        if self.meter is not None and key in self.phases:
            self.meter.end_phase(self.phases.pop(key))

    def stop(self, status: str = "completed") -> Report | None:
        meter, self.meter = self.meter, None
        if meter is None:
            return None
        for handle in list(self.phases.values()):
            meter.end_phase(handle)
        self.phases = {}
        report = meter.stop(status)
        if report is not None:
            self.reports.append(report)
        return report


class RunOwner:
    """What a framework callback exposes of the runs it measures (``self.run``: a
    :class:`CallbackRun`)."""

    run: CallbackRun

    @property
    def meter(self) -> Meter | None:
        """The running meter (None between runs, and on ranks or processes that do not
        measure)."""
        return self.run.meter

    @property
    def reports(self) -> list[Any]:
        """The reports of the runs this callback measured, in order."""
        return self.run.reports
