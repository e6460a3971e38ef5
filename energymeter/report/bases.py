"""Energy bases: which energy a figure is of.

* ``machine``: what the meters read, the whole machine's (every process on it): the default,
  and what every report gave before bases existed.
* ``attributed``: this run's process tree's share of each channel, interval by interval
  (:mod:`energymeter.sampling.attribute`; docs/methodology.md, "Energy bases").
* ``net``: the machine's energy minus the idle baseline's power over the run's duration, where
  an idle baseline was measured (``--baseline``).

A run has the bases it measured: :func:`bases_of`. :func:`energy_on` gives a run's energy on
one basis, with the same summing rules as the machine's (sub-zones in nothing, ``psys`` beside
the total).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..probes.base import energy_summary
from ..settings import ENERGY_BASES

if TYPE_CHECKING:
    from .model import Report

BASES = ENERGY_BASES
#: What each basis is, in a few words (figure labels, tables, `cite`).
BASIS_MEANING = {
    "machine": "the whole machine's energy, every process on it",
    "attributed": "this run's own share: its processes' CPU time and GPU use, per interval",
    "net": "the machine's energy minus its idle baseline over the same time",
}
#: The short label figures and tables add to "energy".
BASIS_LABEL = {"machine": "machine", "attributed": "attributed", "net": "net of idle"}


def check_basis(basis: str) -> str:
    """``basis`` if it is one of :data:`BASES`, else a :class:`ConfigError` saying which are."""
    if basis not in BASES:
        raise ConfigError(f"energy basis {basis!r} is not one of {', '.join(BASES)} "
                          "(machine: the whole machine's; attributed: this run's share; net: "
                          "minus the idle baseline)")
    return basis


@dataclass(frozen=True)
class BasisEnergy:
    """A run's energy on one basis: ``total_j``, ``by_kind`` and per channel, with how it was
    obtained. ``whole``: channels counted whole on the ``attributed`` basis because no share
    could be taken (say so where shown)."""

    basis: str
    total_j: float
    by_kind: Mapping[str, float]
    channels: Mapping[str, float]
    whole: tuple[str, ...] = ()
    how: str = ""


def _attributed(report: Report) -> BasisEnergy | None:
    chans = [c.channel for c in report.channels]
    machine = {c.channel.id: c.energy_j for c in report.channels}
    block = report.attribution
    if block and isinstance(block.get("channels"), Mapping):
        per: dict[str, float] = {}
        whole: list[str] = []
        for cid, joules in machine.items():
            entry = block["channels"].get(cid)
            value = entry.get("energy_j") if isinstance(entry, Mapping) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                per[cid] = float(value)
            else:
                per[cid] = joules
                whole.append(cid)
        summary = energy_summary(chans, per)
        return BasisEnergy("attributed", float(summary["total"]), summary["by_kind"], per,
                           tuple(whole), str(block.get("cpu_rule") or "per interval"))
    share = (report.cpu_attribution or {}).get("tree_share")
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        return None
    # A report from before per-interval attribution: its one run-wide CPU ratio, applied to the
    # CPU-side channels; GPUs whole.
    per, whole = {}, []
    for c in chans:
        if c.kind == "gpu":
            per[c.id] = machine[c.id]
            whole.append(c.id)
        else:
            per[c.id] = machine[c.id] * float(share)
    summary = energy_summary(chans, per)
    return BasisEnergy("attributed", float(summary["total"]), summary["by_kind"], per,
                       tuple(whole), "one run-wide CPU ratio")


def _net(report: Report) -> BasisEnergy | None:
    baseline = report.baseline
    if not baseline or not isinstance(baseline.get("channels"), Mapping):
        return None
    per: dict[str, float] = {}
    missing: list[str] = []
    for c in report.channels:
        entry = baseline["channels"].get(c.channel.id)
        idle = entry.get("idle_j") if isinstance(entry, Mapping) else None
        if isinstance(idle, (int, float)) and not isinstance(idle, bool):
            per[c.channel.id] = c.energy_j - float(idle)
        else:
            per[c.channel.id] = c.energy_j
            missing.append(c.channel.id)
    summary = energy_summary([c.channel for c in report.channels], per)
    return BasisEnergy("net", float(summary["total"]), summary["by_kind"], per,
                       tuple(missing), "idle baseline power × duration subtracted")


def energy_on(report: Report, basis: str) -> BasisEnergy | None:
    """``report``'s energy on ``basis`` (see the module docstring), or None when the run did
    not measure what that basis needs (no baseline for ``net``; no CPU time for
    ``attributed``)."""
    check_basis(basis)
    if basis == "machine":
        summary = report.energy_j
        return BasisEnergy("machine", float(summary["total"]), summary["by_kind"],
                           {c.channel.id: c.energy_j for c in report.channels}, (),
                           "as measured")
    return _attributed(report) if basis == "attributed" else _net(report)


def bases_of(report: Report) -> list[str]:
    """The bases ``report`` has, in :data:`BASES` order."""
    return [b for b in BASES if energy_on(report, b) is not None]


def common_bases(reports: Sequence[Report]) -> list[str]:
    """The bases every one of ``reports`` has."""
    have = [set(bases_of(r)) for r in reports]
    return [b for b in BASES if all(b in h for h in have)]


def bases_block(report: Report) -> dict[str, Any]:
    """The report's ``energy_bases`` (report.json): total and by kind on each basis it has,
    and which channels the attributed basis counts whole."""
    out: dict[str, Any] = {}
    for basis in BASES:
        energy = energy_on(report, basis)
        if energy is None:
            continue
        out[basis] = {"total_j": energy.total_j, "by_kind": dict(energy.by_kind),
                      "how": energy.how}
        if energy.whole:
            out[basis]["whole_channels" if basis == "attributed" else
                       "channels_without_baseline"] = list(energy.whole)
    return out
