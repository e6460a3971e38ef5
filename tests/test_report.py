from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from energymeter.errors import ReportError
from energymeter.probes.base import Channel, energy_summary
from energymeter.report import SCHEMA, ChannelEnergy, Phase, Report

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)
CHANNELS = (
    Channel("cpu0", "cpu", "Xeon", "rapl", "counter"),
    Channel("cpu0-core", "cpu", "Xeon", "rapl", "counter", part_of="cpu0"),
    Channel("dram0", "dram", "Xeon", "rapl", "counter"),
    Channel("psys", "psys", "platform", "rapl", "counter"),
    Channel("gpu0", "gpu", "H100", "nvml", "counter", resolution_s=0.1,
            meta={"uuid": "GPU-1", "nvml_index": 3}),
)
ENERGY = {"cpu0": 100.0, "cpu0-core": 60.0, "dram0": 10.0, "psys": 500.0, "gpu0": 200.0}


def make_report(**changes: object) -> Report:
    fields = dict(
        run_id="abc", name="train", status="completed", started_at=T0,
        ended_at=T0 + timedelta(seconds=10), duration_s=10.0,
        channels=tuple(ChannelEnergy(c, ENERGY[c.id], ENERGY[c.id] / 10, ENERGY[c.id] / 5)
                       for c in CHANNELS),
        phases=(Phase("epoch-1", 0.0, 4.0, {"cpu0": 40.0, "gpu0": 80.0}),
                Phase("fwd", 1.0, 1.05, {"cpu0": 2.0}, parent="epoch-1",
                      below_resolution=True)),
        logs=({"t_s": 4.0, "energy_j": 120.0, "metrics": {"epoch": 1, "loss": 0.5}},),
        carbon={"region": "SE", "region_source": "argument", "g_per_kwh": 36.0,
                "basis": "generation", "source": "Ember", "pue": 1.0, "emissions_g": 0.0031},
        resources={"cpu_time_s": 9.5, "peak_rss_bytes": 2**30},
        warnings=("CPU energy is estimated",), command=("python", "train.py"), exit_code=0,
    )
    fields.update(changes)
    return Report(**fields)  # type: ignore[arg-type]


def test_totals_exclude_psys_and_subzones() -> None:
    summary = energy_summary(CHANNELS, ENERGY)
    assert summary["by_kind"] == {"cpu": 100.0, "dram": 10.0, "psys": 500.0, "gpu": 200.0}
    assert summary["total"] == 310.0
    r = make_report()
    assert r.total_energy_j == 310.0 and r.mean_power_w == 31.0


def test_psys_meters_are_never_summed_but_per_socket_ones_are() -> None:
    """An ACPI meter of the whole platform contains RAPL's psys: by_kind takes the widest, not
    the sum. Two RAPL psys zones are not known to be disjoint: not summed either. Grace Hopper
    module meters (one per socket, marked so) are summed."""
    acpi = Channel("hwmon-power-meter-power1", "psys", "ACPI", "hwmon", "integrated")
    channels = (*CHANNELS, Channel("psys1", "psys", "platform", "rapl", "counter"), acpi)
    energy = {**ENERGY, "psys1": 300.0, "hwmon-power-meter-power1": 1000.0}
    summary = energy_summary(channels, energy)
    assert summary["by_kind"]["psys"] == 1000.0  # not 1800
    assert summary["total"] == 310.0
    del energy["hwmon-power-meter-power1"]
    assert energy_summary(channels, energy)["by_kind"]["psys"] == 500.0  # not 800
    modules = [Channel(f"hwmon-power-meter-module-power-socket-{i}", "psys", "GH200", "hwmon",
                       "integrated", meta={"psys_scope": "socket"}) for i in (0, 1)]
    energy = {**ENERGY, modules[0].id: 900.0, modules[1].id: 800.0}
    assert energy_summary((*CHANNELS, *modules), energy)["by_kind"]["psys"] == 1700.0


def test_json_round_trip(tmp_path: Path) -> None:
    r = make_report()
    data = r.to_dict()
    assert data["schema"] == SCHEMA
    for key in ("run_id", "name", "status", "started_at", "ended_at", "duration_s", "command",
                "energy_j", "channels", "phases", "carbon", "resources", "overhead", "host",
                "software", "warnings"):
        assert key in data
    assert data["phases"][1]["below_resolution"] is True
    assert data["phases"][0]["energy_j"] == {"total": 120.0, "by_kind": {"cpu": 40.0,
                                                                        "gpu": 80.0}}
    (tmp_path / "report.json").write_text(json.dumps(data))
    back = Report.load(tmp_path)
    assert back == r and back.path == tmp_path
    assert back.to_dict() == data
    assert back.channels[4].channel.meta == {"uuid": "GPU-1", "nvml_index": 3}


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        Report.load(tmp_path / "x.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReportError, match="not valid JSON"):
        Report.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"schema": "energymeter.report/0"}))
    with pytest.raises(ReportError, match="unknown report schema"):
        Report.load(tmp_path / "old.json")
    with pytest.raises(ReportError, match="status"):
        make_report(status="done")


def test_ledger_row_and_dataframes() -> None:
    r = make_report()
    row = r.to_row()
    assert row["energy_total_j"] == 310.0 and row["energy_psys_j"] == 500.0
    assert row["cpu_method"] == "counter" and row["emissions_g"] == 0.0031
    assert row["command"] == "python train.py"
    df = r.to_dataframe()
    assert df.shape[0] == 1 and df.loc[0, "energy_gpu_j"] == 200.0
    phases = r.to_dataframe("phases")
    assert list(phases["name"]) == ["epoch-1", "fwd"] and phases.loc[0, "gpu_j"] == 80.0
    logs = r.to_dataframe("logs")
    assert logs.loc[0, "loss"] == 0.5 and logs.loc[0, "energy_j"] == 120.0
    with pytest.raises(ReportError, match="accepted: summary"):
        r.to_dataframe("nope")


def test_markdown_latex_summary() -> None:
    r = make_report()
    md = r.to_markdown()
    assert "| cpu0 | cpu | Xeon | counter | 100.00 | 10.0 | 20.0 |" in md and "310.00 J" in md
    tex = r.to_latex()
    assert r"\begin{tabular}" in tex and r"cpu0-core (in" in tex  # long cells in lines
    assert r"total &  & 310.0 & 31.00 &  \\" in tex
    text = r.summary()
    assert "310.0 J" in text and "psys 500.0 J [not in total]" in text
    assert "warning: CPU energy is estimated" in text


def test_model_method_flagged_as_estimated() -> None:
    ch = Channel("cpu0", "cpu", "vm", "model", "model")
    r = make_report(channels=(ChannelEnergy(ch, 50.0, 5.0),), phases=())
    assert r.methods("cpu") == "model"
    assert "cpu 50.0 J (estimated)" in r.summary()
    assert r.to_row()["cpu_method"] == "model"


def test_latex_escapes_every_special_character_once() -> None:
    ch = Channel("gpu0", "gpu", "A\\B & C_{1} 100% #2 $x", "nvml", "counter")
    tex = make_report(channels=(ChannelEnergy(ch, 1.0, 0.1),), phases=()).to_latex()
    assert (r"A\textbackslash{}B \& C\_\{1\} 100\% \#2 \$x") in tex
