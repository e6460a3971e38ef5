"""The :class:`Report` value: what one run cost, and how every number was obtained.

Serialises to JSON (``energymeter.report/1``, round-trips through :meth:`Report.load`), one flat
ledger row, a pandas DataFrame (pandas imported only there), Markdown and LaTeX.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ReportError
from ..probes.base import KINDS, energy_summary
from ..store.rundir import REPORT_NAME
from . import render
from .rebuild import rebuild_fields
from .values import LEDGER_COLUMNS, SCHEMA, STATUSES, ChannelEnergy, Phase, parse_timestamp


@dataclass(frozen=True)
class Report:
    """What one run cost. Build it with :class:`energymeter.Meter`; read one with
    :meth:`Report.load`. ``path`` is the run directory (not serialised)."""

    run_id: str
    name: str
    status: str
    started_at: datetime
    ended_at: datetime
    duration_s: float
    channels: tuple[ChannelEnergy, ...] = ()
    phases: tuple[Phase, ...] = ()
    logs: tuple[Mapping[str, Any], ...] = ()
    carbon: Mapping[str, Any] | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    overhead: Mapping[str, Any] = field(default_factory=dict)
    host: Mapping[str, Any] = field(default_factory=dict)
    software: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    unavailable: tuple[Mapping[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    command: tuple[str, ...] | None = None
    exit_code: int | None = None
    # The run of an enclosing `energymeter run` (its ENERGYMETER_RUN_ID), for nested runs.
    parent_run_id: str | None = None
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ReportError(f"status {self.status!r} not in {STATUSES}")

    # -- derived -------------------------------------------------------------------------
    @property
    def energy_j(self) -> dict[str, Any]:
        """``{"total": J, "by_kind": {...}}`` (total excludes psys and sub-zones)."""
        return energy_summary([c.channel for c in self.channels],
                              {c.channel.id: c.energy_j for c in self.channels})

    @property
    def total_energy_j(self) -> float:
        return float(self.energy_j["total"])

    @property
    def mean_power_w(self) -> float:
        return self.total_energy_j / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def emissions_g(self) -> float | None:
        return None if self.carbon is None else self.carbon.get("emissions_g")

    def methods(self, kind: str) -> str:
        """The methods by which channels of ``kind`` were measured, e.g. ``"counter"``."""
        found = sorted({c.channel.method for c in self.channels
                        if c.channel.kind == kind and not c.channel.is_subzone})
        return "+".join(found)

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        channels = [c.channel for c in self.channels]
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "duration_s": self.duration_s,
            "command": list(self.command) if self.command is not None else None,
            "exit_code": self.exit_code,
            "parent_run_id": self.parent_run_id,
            "energy_j": self.energy_j,
            "mean_power_w": self.mean_power_w,
            "channels": [c.to_dict() for c in self.channels],
            "phases": [p.to_dict(channels) for p in self.phases],
            "logs": [dict(entry) for entry in self.logs],
            "carbon": dict(self.carbon) if self.carbon is not None else None,
            "resources": dict(self.resources),
            "overhead": dict(self.overhead),
            "host": dict(self.host),
            "software": dict(self.software),
            "settings": dict(self.settings),
            "unavailable": [dict(u) for u in self.unavailable],
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> Report:
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ReportError(
                f"unknown report schema {schema!r}; this energymeter reads {SCHEMA!r}"
            )
        try:
            command = data.get("command")
            return cls(
                run_id=data["run_id"],
                name=data["name"],
                status=data["status"],
                started_at=parse_timestamp(data["started_at"]),
                ended_at=parse_timestamp(data["ended_at"]),
                duration_s=float(data["duration_s"]),
                channels=tuple(ChannelEnergy.from_dict(c) for c in data.get("channels", [])),
                phases=tuple(Phase.from_dict(p) for p in data.get("phases", [])),
                logs=tuple(data.get("logs", [])),
                carbon=data.get("carbon"),
                resources=data.get("resources", {}),
                overhead=data.get("overhead", {}),
                host=data.get("host", {}),
                software=data.get("software", {}),
                settings=data.get("settings", {}),
                unavailable=tuple(data.get("unavailable", [])),
                warnings=tuple(data.get("warnings", [])),
                command=tuple(command) if command is not None else None,
                exit_code=data.get("exit_code"),
                parent_run_id=data.get("parent_run_id"),
                path=path,
            )
        except KeyError as exc:
            raise ReportError(f"report is missing the key {exc.args[0]!r}") from None

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a ``report.json`` or a run directory. A run directory without ``report.json``
        (killed with SIGKILL) is rebuilt from ``samples.csv`` and marked ``interrupted``."""
        path = Path(path)
        if path.is_dir():
            if not (path / REPORT_NAME).exists():
                return cls(**rebuild_fields(path))
            path = path / REPORT_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReportError(
                f"{path} does not exist; give a run directory or its report.json"
            ) from None
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, path=path.parent)

    # -- flat forms ----------------------------------------------------------------------
    def to_row(self) -> dict[str, Any]:
        """One flat row (the ``runs.csv`` ledger columns)."""
        by_kind = self.energy_j["by_kind"]
        res, carbon = self.resources, self.carbon or {}
        return {
            "run_id": self.run_id, "name": self.name, "status": self.status,
            "started_at": self.started_at.isoformat(), "ended_at": self.ended_at.isoformat(),
            "duration_s": self.duration_s, "energy_total_j": self.total_energy_j,
            **{f"energy_{k}_j": by_kind.get(k) for k in KINDS},
            "cpu_method": self.methods("cpu"), "gpu_method": self.methods("gpu"),
            "mean_power_w": self.mean_power_w,
            "region": carbon.get("region"), "g_per_kwh": carbon.get("g_per_kwh"),
            "pue": carbon.get("pue"), "emissions_g": carbon.get("emissions_g"),
            "cpu_time_s": res.get("cpu_time_s"), "peak_rss_bytes": res.get("peak_rss_bytes"),
            "peak_gpu_memory_bytes": res.get("peak_gpu_memory_bytes"),
            "read_bytes": res.get("read_bytes"), "write_bytes": res.get("write_bytes"),
            "exit_code": self.exit_code, "warnings": len(self.warnings),
            "command": " ".join(self.command) if self.command else "",
            "path": str(self.path) if self.path else "",
            "parent_run_id": self.parent_run_id or "",
        }

    def to_dataframe(self, table: str = "summary") -> Any:
        """A pandas DataFrame: ``summary`` (one row, the ledger columns), ``channels``,
        ``phases`` or ``logs``."""
        import pandas as pd

        if table == "summary":
            return pd.DataFrame([self.to_row()], columns=list(LEDGER_COLUMNS))
        if table == "channels":
            return pd.DataFrame([c.to_dict() for c in self.channels])
        if table == "phases":
            channels = [c.channel for c in self.channels]
            rows = []
            for p in self.phases:
                d = p.to_dict(channels)
                rows.append({"name": d["name"], "parent": d["parent"], "start_s": d["start_s"],
                             "end_s": d["end_s"], "duration_s": d["duration_s"],
                             "energy_j": d["energy_j"]["total"],
                             **{f"{k}_j": v for k, v in d["energy_j"]["by_kind"].items()}})
            return pd.DataFrame(rows)
        if table == "logs":
            return pd.DataFrame([{"t_s": e["t_s"], "energy_j": e["energy_j"], **e["metrics"]}
                                 for e in self.logs])
        raise ReportError(f"table {table!r} unknown; accepted: summary, channels, phases, logs")

    # -- human forms (rendered by :mod:`.render`) ----------------------------------------
    def summary(self) -> str:
        """A few human lines: energy by kind and method, power, carbon, resources, warnings."""
        return render.summary(self)

    def to_markdown(self) -> str:
        """The channel table with duration, total, carbon and warnings, in Markdown."""
        return render.markdown(self)

    def to_latex(self) -> str:
        """A ``tabular`` of the channels with a total row (special characters escaped)."""
        return render.latex(self)
