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
from ..store.readers import check_plain, mean_power_w, parse_json
from ..store.rundir import EVENTS_NAME, REPORT_NAME
from .values import (
    LEDGER_COLUMNS,
    LOADABLE_STATUSES,
    SCHEMA,
    ChannelEnergy,
    Fields,
    Phase,
    read_log,
    read_tags,
)

#: The largest ``report.json`` that is read (128 MiB): one energymeter writes is a few KB, or a
#: few MB with many ``log()`` entries; a larger file is refused before it is read.
MAX_REPORT_BYTES = 128 * 2**20

#: Figures of the ``carbon`` and ``resources`` blocks that must be numbers (or null) when
#: present: reports render and compare them.
CARBON_NUMBERS = ("g_per_kwh", "pue", "emissions_g", "it_energy_j", "facility_energy_j",
                  "it_energy_kwh", "facility_energy_kwh", "price_per_kwh", "cost",
                  "live_energy_share", "table_g_per_kwh")
#: Every figure of ``resources`` is an amount (bytes, seconds): never negative.
RESOURCE_NUMBERS = ("cpu_time_s", "peak_rss_bytes", "peak_gpu_memory_bytes", "read_bytes",
                    "write_bytes", "peak_pss_bytes", "peak_memory_bytes",
                    "max_rss_bytes_rusage")
ATTRIBUTION_NUMBERS = ("tree_cpu_s", "machine_busy_cpu_s", "tree_share", "other_share",
                       "cpu_energy_j", "attributed_cpu_energy_j")


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
    # The measured process tree's share of the machine's CPU energy, beside (never instead of)
    # the machine-wide figure: see docs/methodology.md.
    cpu_attribution: Mapping[str, Any] | None = None
    # This run's share of each channel, per interval (the ``attributed`` energy basis; see
    # report/bases.py and sampling/attribute.py).
    attribution: Mapping[str, Any] | None = None
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
    # Experiment metadata: tags (grouping: method=sparse, lr=3e-4), values set with
    # Meter.set() (final_acc=0.91), items counted with Meter.count() (samples, tokens), the
    # repeat group the run belongs to, whether it was a warm-up run (recorded, not compared),
    # and the idle baseline measured before it.
    tags: Mapping[str, Any] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    items: float | None = None
    group_id: str | None = None
    warmup: bool = False
    baseline: Mapping[str, Any] | None = None
    # Under a launcher (torchrun, SLURM, MPI): the job, node and rank of this run and what it
    # measured (docs/distributed.md); a merged job report holds its nodes and merge notes.
    job: Mapping[str, Any] | None = None
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.status not in LOADABLE_STATUSES:
            raise ReportError(f"status {self.status!r} is unknown; accepted: "
                              f"{', '.join(LOADABLE_STATUSES)}")

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
        return mean_power_w(self.total_energy_j, self.duration_s)

    @property
    def emissions_g(self) -> float | None:
        return None if self.carbon is None else self.carbon.get("emissions_g")

    def energy_on(self, basis: str = "machine") -> Any:
        """This run's energy on ``basis`` (``machine``, ``attributed``, ``net``): a
        :class:`~energymeter.report.bases.BasisEnergy` (``total_j``, ``by_kind``, per channel,
        how), or None where the run did not measure what the basis needs."""
        from .bases import energy_on

        return energy_on(self, basis)

    @property
    def energy_bases(self) -> dict[str, Any]:
        """Total and by kind on each basis this run has (``energy_bases`` of report.json)."""
        from .bases import bases_block

        return bases_block(self)

    @property
    def energy_per_item_j(self) -> float | None:
        """Total energy per item counted with ``Meter.count()`` (None when none was)."""
        return self.total_energy_j / self.items if self.items else None

    def energy_to(self, metric: str, target: float, direction: str = ">=") -> dict[str, Any]:
        """Energy, time and emissions until the logged ``metric`` first reaches ``target``
        (``direction`` ``">="``: at or above, e.g. accuracy; ``"<="``: at or below, e.g.
        loss), interpolated linearly between the two logs around the crossing.

        Returns ``reached`` and, when reached, ``energy_j``, ``duration_s``, ``emissions_g``
        (at this run's intensity and PUE) and ``log_index`` (the first log at the target)."""
        from .target import energy_to

        return energy_to(self, metric, target, direction)

    def methods(self, kind: str) -> str:
        """The methods by which channels of ``kind`` were measured, e.g. ``"counter"``."""
        found = sorted({c.channel.method for c in self.channels
                        if c.channel.kind == kind and not c.channel.is_subzone})
        return "+".join(found)

    def plot(self, kind: str = "timeline", ax: Any = None, **kw: Any) -> Any:
        """A matplotlib Figure of this run (extra ``plot``): ``timeline`` (power per channel
        over time, phases shaded), ``breakdown`` (energy by kind) or ``energy-to-target``
        (``metric=``, ``target="val_acc=0.9"``); on ``ax`` when given. Also ``width=``,
        ``height=`` (inches), ``window_s=``. See :mod:`energymeter.report.plot`."""
        from .plot import plot_report

        return plot_report(self, kind, ax, **kw)

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
            "group_id": self.group_id,
            "warmup": self.warmup,
            "tags": dict(self.tags),
            "values": dict(self.values),
            "items": self.items,
            "energy_per_item_j": self.energy_per_item_j,
            "energy_j": self.energy_j,
            "mean_power_w": self.mean_power_w,
            "channels": [c.to_dict() for c in self.channels],
            "phases": [p.to_dict(channels) for p in self.phases],
            "logs": [dict(entry) for entry in self.logs],
            "carbon": dict(self.carbon) if self.carbon is not None else None,
            "resources": dict(self.resources),
            "cpu_attribution": (dict(self.cpu_attribution)
                                if self.cpu_attribution is not None else None),
            "attribution": (dict(self.attribution)
                            if self.attribution is not None else None),
            "energy_bases": self.energy_bases,
            "overhead": dict(self.overhead),
            "host": dict(self.host),
            "software": dict(self.software),
            "settings": dict(self.settings),
            "unavailable": [dict(u) for u in self.unavailable],
            "warnings": list(self.warnings),
            "baseline": dict(self.baseline) if self.baseline is not None else None,
            "job": dict(self.job) if self.job is not None else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None, *,
                  source: str | Path | None = None) -> Report:
        """The report of ``data`` (the JSON form of :meth:`to_dict`), every key checked.

        ``path`` is the run directory; ``source`` names the file in messages (default
        ``<path>/report.json``). Raises :class:`ReportError` naming the file, the key and what
        is expected; a report it returns serialises again as strict JSON."""
        where = str(source if source is not None
                    else path / REPORT_NAME if path is not None else "report")
        f = Fields(data, where)
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ReportError(f"{where}: unknown report schema {schema!r}; this energymeter "
                              f"reads {SCHEMA!r}")
        check_plain(data, where)  # NaN, infinities, non-JSON values, depth: anywhere
        carbon = f.optional_obj("carbon")
        if carbon is not None:
            carbon.numbers(CARBON_NUMBERS)
        resources = f.obj("resources", {})
        for key in RESOURCE_NUMBERS:  # amounts, as the probes measure them: >= 0
            if key in resources.data:
                resources.number(key, optional=True, minimum=0.0)
        attribution = f.optional_obj("cpu_attribution")
        if attribution is not None:
            attribution.numbers(ATTRIBUTION_NUMBERS)
        report = cls(
            run_id=f.text("run_id"),
            name=f.text("name"),
            status=f.choice("status", LOADABLE_STATUSES),
            started_at=f.timestamp("started_at"),
            ended_at=f.timestamp("ended_at"),
            duration_s=f.seconds("duration_s"),
            channels=tuple(ChannelEnergy.from_dict(c.data, where, c.key)
                           for c in f.objects("channels", [])),
            phases=tuple(Phase.from_dict(p.data, where, p.key)
                         for p in f.objects("phases", [])),
            logs=tuple(read_log(entry) for entry in f.objects("logs", [])),
            carbon=carbon.plain() if carbon is not None else None,
            resources=resources.plain(),
            cpu_attribution=attribution.plain() if attribution is not None else None,
            attribution=_checked_attribution(f.optional_obj("attribution")),
            overhead=f.obj("overhead", {}).plain(),
            host=f.obj("host", {}).plain(),
            software=f.obj("software", {}).plain(),
            settings=f.obj("settings", {}).plain(),
            unavailable=tuple(u.plain() for u in f.objects("unavailable", [])),
            warnings=f.texts("warnings", ()),
            command=f.texts("command", None, optional=True),
            exit_code=f.integer("exit_code", None, optional=True),
            parent_run_id=f.text("parent_run_id", None, optional=True),
            tags=read_tags(f.obj("tags", {})),
            values=f.obj("values", {}).plain(),
            items=f.number("items", None, optional=True, minimum=0.0),  # as count() accepts
            group_id=f.text("group_id", None, optional=True),
            warmup=f.flag("warmup", False),
            baseline=baseline.plain() if (baseline := f.optional_obj("baseline")) else None,
            job=_checked_job(f.optional_obj("job"), where),
            path=path,
        )
        return report._checked(where)

    def _checked(self, where: str) -> Report:
        """``self`` if its JSON form is strict JSON: figures derived from values read (sums,
        means) must be finite too."""
        try:
            check_plain(self.to_dict(), where)
        except ReportError as exc:
            raise ReportError(f"{exc} (computed from the values read)") from None
        return self

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a ``report.json`` or a run directory. A run directory without ``report.json``
        (killed with SIGKILL) is rebuilt from ``samples.csv`` and marked ``interrupted`` (or
        ``running`` while it is measured), and so is ``DIR/report.json`` when that file is
        missing but ``DIR`` is a run directory.

        Raises :class:`ReportError` naming the file (and key or line) that could not be read."""
        path = Path(path)
        if path.is_dir():
            if not (path / REPORT_NAME).exists():
                return cls(**_rebuild_fields(path))._checked(str(path))
            path = path / REPORT_NAME
        elif (path.name == REPORT_NAME and not path.exists()
              and (path.parent / EVENTS_NAME).is_file()):
            return cls(**_rebuild_fields(path.parent))._checked(str(path.parent))
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_REPORT_BYTES + 1)
        except FileNotFoundError:
            raise ReportError(
                f"{path} does not exist; give a run directory or its report.json"
            ) from None
        except OSError as exc:
            raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(raw) > MAX_REPORT_BYTES:
            raise ReportError(f"{path} is larger than {MAX_REPORT_BYTES // 2**20} MiB, the most "
                              "a report.json is read up to (energymeter writes a few KB); "
                              "it is not an energymeter report")
        return cls.from_dict(parse_json(raw, str(path)), path=path.parent, source=path)

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
            "group_id": self.group_id or "",
            "warmup": self.warmup,
            "tags": json.dumps(dict(self.tags), sort_keys=True) if self.tags else "",
            "values": json.dumps(dict(self.values), sort_keys=True) if self.values else "",
            "items": self.items,
            "energy_per_item_j": self.energy_per_item_j,
            "job_id": _job_text(self.job, "id"), "node": _job_text(self.job, "node"),
            "rank": _job_text(self.job, "rank"),
        }

    def to_dataframe(self, table: str = "summary", *, resample: str | float | None = None,
                     basis: str = "machine") -> Any:
        """A pandas DataFrame: ``summary`` (one row, the ledger columns and ``energy_basis``),
        ``bases`` (one row per energy basis the run has: ``basis``, ``total_j``,
        ``<kind>_j``, ``how``), ``channels``, ``phases``, ``logs`` or ``samples`` (the
        timeline from ``samples.csv``: ``t_s``, the power of each channel ``<id>_w`` over the
        interval ending there, derived from the counters, ``total_w`` over the channels in
        the total, and the cumulative ``<id>_j``). ``resample`` (``samples`` only): seconds,
        or a pandas offset such as ``"1s"``: one row per bin, the power being the energy
        between bins over the time between them. ``basis`` (``summary`` only): the energy
        basis of its energy, power, per-item and emissions columns (machine, attributed,
        net: :mod:`~energymeter.report.bases`); a run without it raises
        :class:`ReportError` saying which it has."""
        import pandas as pd

        from .bases import check_basis

        check_basis(basis)
        if basis != "machine" and table != "summary":
            raise ReportError(f"basis applies to table 'summary' only (table {table!r})")
        if table == "bases":
            return pd.DataFrame([{"basis": name, "total_j": b["total_j"],
                                  **{f"{k}_j": v for k, v in b["by_kind"].items()},
                                  "how": b["how"]} for name, b in self.energy_bases.items()])
        if table == "summary":
            return pd.DataFrame([self.row_on(basis)],
                                columns=[*LEDGER_COLUMNS, "energy_basis"])

        if table == "samples":
            return self._samples_frame(pd, resample)
        if resample is not None:
            raise ReportError("resample applies to table 'samples' only")

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
        raise ReportError(f"table {table!r} unknown; accepted: summary, bases, channels, "
                          "phases, logs, samples")

    def row_on(self, basis: str, *, fallback: bool = False) -> dict[str, Any]:
        """:meth:`to_row` with its energy figures on ``basis`` (and ``energy_basis``); a run
        without that basis raises :class:`ReportError`, or with ``fallback`` gives its
        machine figures (``energy_basis`` says so)."""
        row = {**self.to_row(), "energy_basis": basis}
        if basis == "machine":
            return row
        energy = self.energy_on(basis)
        if energy is None and fallback:
            return {**row, "energy_basis": "machine"}
        if energy is None:
            from .bases import bases_of

            raise ReportError(f"run {self.run_id} has no {basis} energy (it has: "
                              f"{', '.join(bases_of(self))}); "
                              + ("measure with --baseline / baseline_s= for net" if
                                 basis == "net" else "its CPU time was not read"))
        machine = self.total_energy_j
        row.update({"energy_total_j": energy.total_j,
                    **{f"energy_{k}_j": energy.by_kind.get(k) for k in KINDS},
                    "mean_power_w": mean_power_w(energy.total_j, self.duration_s),
                    "energy_per_item_j": energy.total_j / self.items if self.items else None})
        if row.get("emissions_g") is not None and machine > 0:
            row["emissions_g"] = float(row["emissions_g"]) * energy.total_j / machine
        return row

    def _samples_frame(self, pd: Any, resample: str | float | None) -> Any:
        from .samples import iter_energy

        ids = [c.channel.id for c in self.channels]
        summed = [c.channel.id for c in self.channels if c.channel.in_total]
        rows = [{"t_s": t, **{f"{c}_j": e.get(c) for c in ids}}
                for t, e in iter_energy(self, ids)]
        energy = pd.DataFrame(rows, columns=["t_s", *(f"{c}_j" for c in ids)], dtype=float)
        if resample is not None:
            try:
                width = pd.to_timedelta(resample, unit="s") if isinstance(resample, (int, float)) \
                    else pd.to_timedelta(resample)
            except (ValueError, TypeError) as exc:
                raise ReportError(f"resample={resample!r} is not understood ({exc}); accepted: "
                                  "seconds (2.5) or a pandas offset ('1s', '500ms')") from None
            if width <= pd.Timedelta(0):
                raise ReportError(f"resample={resample!r}; accepted: a positive duration")
            bins = (energy["t_s"] // width.total_seconds()).astype(int)
            # The first sample (t = 0) starts the first bin; each bin ends at its last sample.
            energy = pd.concat([energy.iloc[:1], energy.groupby(bins).last()],
                               ignore_index=True).drop_duplicates("t_s", ignore_index=True)
        dt = energy["t_s"].diff()
        out = pd.DataFrame({"t_s": energy["t_s"]})
        for c in ids:
            out[f"{c}_w"] = energy[f"{c}_j"].diff() / dt
        out["total_w"] = sum((out[f"{c}_w"] for c in summed), start=pd.Series(0.0,
                                                                             index=out.index))
        for c in ids:
            out[f"{c}_j"] = energy[f"{c}_j"]
        return out.iloc[1:].reset_index(drop=True)

    # -- human forms (rendered by :mod:`.render`) ----------------------------------------
    def __repr__(self) -> str:
        return (f"<Report {self.name!r} {self.status}: {self.duration_s:.3g} s, "
                f"{self.total_energy_j:.4g} J, run {self.run_id[:8]}>")

    def _repr_html_(self) -> str:
        """A notebook shows a report as a small table (see :mod:`.html`)."""
        from .html import report_html

        return report_html(self)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def summary(self) -> str:
        """A few human lines: energy by kind and method, power, carbon, resources, warnings."""
        from . import render

        return render.summary(self)

    def to_markdown(self) -> str:
        """The run in Markdown: duration, energy (and per item), the channel table with a
        total, how emissions were computed, phases, logs and warnings (see
        :func:`.render.markdown`)."""
        from . import render

        return render.markdown(self)

    def to_latex(self) -> str:
        """The run as booktabs LaTeX tables (figures, channels with a total, phases, logs;
        warnings as comments; every value escaped; see :func:`.render.latex`)."""
        from . import render

        return render.latex(self)


def _job_text(job: Mapping[str, Any] | None, key: str) -> str | None:
    """One fact of a report's ``job`` block as ledger text (None when absent)."""
    value = None if job is None else job.get(key)
    return None if value is None else str(value)


#: The keys of a report's ``job`` block whose type is checked on load, and what each must be.
_JOB_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str, int), "text"), "node": ((str,), "text"), "launcher": ((str,), "text"),
    "rank": ((int,), "an integer"), "local_rank": ((int,), "an integer"),
    "node_rank": ((int,), "an integer"), "nodes": ((int, list), "a count or a list"),
    "world_size": ((int,), "an integer"), "local_world_size": ((int,), "an integer"),
    "slurm": ((dict,), "an object"), "measures": ((str,), "text"),
    "missing_nodes": ((list,), "a list"), "deduplicated": ((list,), "a list"),
    "expected_nodes": ((int, list), "a count or a list of names"),
}


def _checked_job(job: Any, where: str) -> dict[str, Any] | None:
    """The ``job`` block read, its known keys of the expected types (``None`` allowed);
    :class:`ReportError` naming the key otherwise. A merged block's ``nodes`` are objects."""
    if job is None:
        return None
    data = job.plain()
    for key, (types, what) in _JOB_TYPES.items():
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise ReportError(f"{where}: job.{key} must be {what} or null, got "
                              f"{type(value).__name__}")
    if data.get("merged"):
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or not all(
                isinstance(n, dict) and isinstance(n.get("energy_j", {}), dict)
                and isinstance((n.get("energy_j") or {}).get("by_kind", {}), dict)
                for n in nodes):
            raise ReportError(f"{where}: job.nodes of a merged job must be a list of node "
                              "objects (node, ranks, energy_j {total, by_kind})")
    return data


def _rebuild_fields(run_dir: Path) -> dict[str, Any]:
    """:func:`.rebuild.rebuild_fields`, imported on first use: a run being measured never
    needs the rebuild (nor its vectorised scanner), only a run read back does."""
    from .rebuild import rebuild_fields

    return rebuild_fields(run_dir)


def _checked_attribution(block: Any) -> dict[str, Any] | None:
    """The ``attribution`` block read: each channel's attributed joules (or null) and share
    must be numbers in range."""
    if block is None:
        return None
    block.numbers(("run_share", "cpu_time_scale", "sampled_tree_cpu_s", "sampled_busy_cpu_s",
                   "cpu_time_placed_at_end_s",
                   "cpu_intervals"))
    channels = block.obj("channels", {})
    for cid in list(channels.data):
        entry = channels.obj(cid)
        if entry.data.get("energy_j") is not None:
            entry.joules("energy_j")
        entry.number("share", None, optional=True, minimum=0.0, maximum=1.0)
    return block.plain()
