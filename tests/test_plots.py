"""Figures: ``Report.plot``, ``energymeter.plot`` and ``energymeter plot``, drawn
from real runs of ``examples/train_mlp.py`` under ``energymeter run`` (made once for the
module: 3 dense and 3 pruned runs, each with the run nested in it that logged the metrics), and
from a fake RAPL run with a sub-zone, DRAM and psys. matplotlib draws with the Agg backend."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from energymeter import Report, measure
from energymeter.analysis import compare, find_runs, target_results
from energymeter.errors import ConfigError, ReportError
from energymeter.report.samples import timeline
from tests.fakes.powercap import FakePowercap
from tests.test_cli import invoke

REPO = Path(__file__).resolve().parents[1]


def test_importing_energymeter_and_its_cli_loads_no_matplotlib() -> None:
    code = ("import sys, energymeter, energymeter.cli, energymeter.report.plot, "
            "energymeter.analysis.plots, energymeter.cli.plot\n"
            "energymeter.plot, energymeter.Report.plot\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')\n"
            "print(loaded)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_matplotlib_the_cli_says_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    code, _, err = invoke("plot", str(tmp_path), "-o", str(tmp_path / "f.png"))
    assert code == 2
    assert err.strip().splitlines() == [
        "energymeter: error: figures need matplotlib, which is not installed: "
        "pip install 'energymeter-ml[plot]'"]
    from energymeter.report.plot import PlotDependencyError, require_matplotlib

    with pytest.raises(PlotDependencyError, match=r"energymeter-ml\[plot\]"):
        require_matplotlib()


mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")

from energymeter import plot  # noqa: E402  (after the skip: needs matplotlib to draw)
from energymeter.analysis.groups import group_runs  # noqa: E402
from energymeter.analysis.plots import (  # noqa: E402
    KINDS_OF_FIGURE,
    _Curve,
    level_band,
    nested_runs,
)
from energymeter.cli.plot import KINDS as CLI_KINDS  # noqa: E402


# -- runs ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An out folder of 3 dense and 3 pruned runs of the example under ``energymeter run``."""
    out = tmp_path_factory.mktemp("plots") / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYMETER_")}
    env.update(ENERGYMETER_REGION="SE", PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "energymeter", "run", "--repeat", "3", "--out", str(out)]
    script = [sys.executable, "examples/train_mlp.py", "--epochs", "4", "--samples", "12000"]
    for tag, extra in (("dense", []), ("pruned", ["--prune", "0.75"])):
        subprocess.run([*base, "--tag", f"method={tag}", "--", *script, *extra], cwd=REPO,
                       env=env, check=True, capture_output=True)
    yield out


def parents(out: Path) -> list[Path]:
    return [p for p in sorted(out.iterdir())
            if p.is_dir() and Report.load(p).command is not None]


def nested(out: Path) -> list[Path]:
    return [p for p in sorted(out.iterdir())
            if p.is_dir() and Report.load(p).parent_run_id is not None]


def dashed(line: object) -> bool:
    return line.get_linestyle() == "--"  # type: ignore[attr-defined]


def spans(ax: object) -> list[object]:
    """The shaded phases (zero-width legend entry left out)."""
    return [p for p in ax.patches if p.get_width() > 0]  # type: ignore[attr-defined]


def legend_texts(fig: object, ax: object | None = None) -> list[str]:
    legends = [*fig.legends] + ([ax.get_legend()] if ax is not None else [])  # type: ignore
    return [t.get_text() for lg in legends if lg is not None for t in lg.get_texts()]


def saved(path: Path, min_bytes: int = 5_000) -> Path:
    assert path.is_file() and path.stat().st_size > min_bytes, path
    return path


# -- timeline ------------------------------------------------------------------------------------
def test_timeline_of_a_run_under_energymeter_run(runs: Path, tmp_path: Path) -> None:
    run = parents(runs)[0]
    report = Report.load(run)
    fig = plot(run, "timeline", tmp_path / "t.png")
    saved(tmp_path / "t.png")
    (ax,) = fig.axes
    (line,) = ax.lines  # cpu0, estimated by the CPU model here
    assert dashed(line) and line.get_label() == "cpu0 (estimated)"
    t, w = line.get_xdata(), line.get_ydata()
    # A line (the run lasts ~0.3 s: two or three windows of 0.1 s, as fast as the VM is).
    assert len(t) >= 2 and all(0 < x < report.duration_s for x in t)
    assert all(math.isfinite(p) and p > 0 for p in w)
    # What report.samples.timeline gives over windows of ten updates of the model's counter.
    expected = timeline(report, ["cpu0"], min_interval_s=10 * report.channels[0].channel
                        .resolution_s)
    assert list(t) == pytest.approx(expected.t_s)
    assert list(w) == pytest.approx(expected.power_w["cpu0"])
    assert ax.get_xlim() == pytest.approx((0, report.duration_s))
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "power, machine (W)"
    # The phases of the run nested in it (the script's measure()), on the parent's clock.
    (child,) = [Report.load(p) for p in nested(runs) if Report.load(p).parent_run_id
                == report.run_id]
    offset = (child.started_at - report.started_at).total_seconds()
    shaded = spans(ax)
    assert len(shaded) == 4
    assert shaded[0].get_x() == pytest.approx(child.phases[0].start_s + offset)
    assert "phases (epoch-1 … epoch-4)" in legend_texts(fig, ax)
    assert fig.get_size_inches()[0] == pytest.approx(3.4)
    assert mpl.image.imread(tmp_path / "t.png").shape[1] == 680  # 3.4 in at 200 dpi


def test_report_plot_on_given_axes_and_nested_run_phases(runs: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from matplotlib.figure import Figure

    # As in a notebook that never imported pyplot (another test may have: lightning does).
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)

    report = Report.load(nested(runs)[0])
    fig = Figure()
    ax = fig.subplots()
    assert report.plot("timeline", ax=ax) is fig
    assert len(spans(ax)) == 4 and len(ax.lines) == 1
    # Labelled where the name fits: which phases that is depends on how long each epoch took
    # (on a loaded machine the first may be too short for "epoch-1" and the next fit "2").
    # The first phase's label is its whole name; the others' drop the prefix they share.
    labels = ["epoch-1", "2", "3", "4"]
    drawn = [t.get_text() for t in ax.texts]
    assert set(drawn) <= set(labels) and drawn == sorted(drawn, key=labels.index)
    fig = report.plot()  # the default kind is the timeline
    assert isinstance(fig, Figure) and fig._repr_png_()[:4] == b"\x89PNG"  # Jupyter shows it


def test_timeline_one_panel_per_run(runs: Path, tmp_path: Path) -> None:
    chosen = parents(runs)[:3]
    fig = plot(chosen, "timeline", tmp_path / "t.pdf")
    assert saved(tmp_path / "t.pdf").read_bytes()[:4] == b"%PDF"
    assert b"/Type3" not in (tmp_path / "t.pdf").read_bytes()  # TrueType fonts (publishers)
    assert len(fig.axes) == 3
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == [f"train_mlp ({Report.load(p).run_id[:8]})" for p in chosen]
    assert all(len(ax.lines) == 1 and len(spans(ax)) == 4 for ax in fig.axes)
    assert "cpu0 (estimated)" in legend_texts(fig)


def test_timeline_marks_subzones_and_psys_as_not_in_the_total(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path / "powercap", core=True, dram=True, psys=True,
                        power_w={"package-0": 40.0, "package-0/core": 25.0,
                                 "package-0/dram": 5.0, "psys": 60.0})
    with fake.start(), measure("rapl", out=tmp_path / "runs", powercap_root=fake.root,
                               region="SE", interval_s=0.01) as m, m.phase("a"):
        import time

        time.sleep(0.4)
    fake.close()
    report = m.report
    # Windows of 50 ms: the fake's counters are advanced by a thread that may lag under load.
    fig = report.plot("timeline", window_s=0.05)
    ax = fig.axes[0]
    styles = {line.get_label(): line.get_linestyle() for line in ax.lines}
    total = next(label for label in styles if label.startswith("total"))
    assert total == "total" and styles[total] == "-"
    core = next(label for label in styles if "core" in label)
    psys = next(label for label in styles if label.startswith("psys"))
    assert core == "cpu0-core (part of cpu0, not in total)" and styles[core] == ":"
    assert psys == "psys (platform, not in total)" and styles[psys] == ":"
    assert styles["cpu0"] == styles["dram0"] == "-"  # measured: solid

    def mean_w(label: str) -> float:
        power = next(line for line in ax.lines if line.get_label() == label).get_ydata()
        return sum(power) / len(power)

    assert mean_w("cpu0") == pytest.approx(40.0, rel=0.2)
    assert mean_w("total") == pytest.approx(45.0, rel=0.2)  # cpu0 + dram0, not core or psys
    assert mean_w("psys (platform, not in total)") == pytest.approx(60.0, rel=0.2)
    fig = report.plot("breakdown")
    ax = fig.axes[0]
    assert not any(p.get_hatch() for p in ax.patches)  # measured: no hatching
    outline = [p for p in ax.patches if not p.get_fill()]
    assert len(outline) == 1  # psys beside the stack, not in it
    assert "psys (platform, not in total)" in legend_texts(fig, ax)


def test_timeline_without_samples_names_the_missing_file(runs: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(parents(runs)[0] / "report.json", bare / "report.json")
    with pytest.raises(ReportError, match=r"bare/samples\.csv.*timeline"):
        plot(bare, "timeline")
    report = Report.load(bare)
    with pytest.raises(ReportError, match=r"samples\.csv"):
        report.plot("timeline")
    code, _, err = invoke("plot", str(bare), "-o", str(tmp_path / "x.png"))
    assert code == 2 and "samples.csv" in err and not (tmp_path / "x.png").exists()


# -- breakdown -----------------------------------------------------------------------------------
def test_breakdown_per_group_hatches_estimated_energy(runs: Path, tmp_path: Path) -> None:
    fig = plot(runs, "breakdown", tmp_path / "b.svg", by="tag:method")
    assert b"<svg" in saved(tmp_path / "b.svg").read_bytes()[:400]
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_fill()]
    assert len(bars) == 2 and all(p.get_hatch() == "////" for p in bars)
    rows = compare(find_runs([runs]), by="tag:method")
    assert [b.get_height() for b in bars] == pytest.approx([r["energy_cpu_j"] for r in rows])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["method=dense\nn=3", "method=pruned\nn=3"]
    assert ax.get_ylabel() == "energy, machine (J)"
    assert "estimated (model)" in legend_texts(fig, ax)
    assert len(ax.collections) == 2  # an error bar (95 % CI of the total) per group


def test_breakdown_per_run(runs: Path) -> None:
    fig = plot(runs, "breakdown", group=False)
    bars = [p for p in fig.axes[0].patches if p.get_fill()]
    assert len(bars) == 6  # the parents; their nested runs are part of them


# -- compare -------------------------------------------------------------------------------------
def test_compare_draws_what_compare_computed(runs: Path, tmp_path: Path) -> None:
    fig = plot(runs, "compare", tmp_path / "c.png", by="tag:method")
    saved(tmp_path / "c.png")
    ax = fig.axes[0]
    rows = compare(find_runs([runs]), by="tag:method")
    bars = [p for p in ax.patches if p.get_width() == pytest.approx(0.6) and p.get_fill()]
    hatches = [p for p in ax.patches if p.get_hatch()]
    assert hatches and all(not p.get_fill() for p in hatches)  # over the bar, visible in SVG
    assert [b.get_height() for b in bars] == pytest.approx([r["energy_total_j"] for r in rows])
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == 6
    notes = [t.get_text() for t in ax.texts]
    assert notes[0] == "reference"
    rel = rows[1]["energy_total_j_rel_diff"]
    assert notes[1].startswith(f"{100 * rel:+.1f} %".replace("-", "−"))
    assert "p " in notes[1]
    assert ax.get_ylabel() == "energy total, machine (J)"
    fig = plot(runs, "compare", by="tag:method", metric="duration_s")
    assert fig.axes[0].get_ylabel() == "duration (s)"
    assert not any(p.get_hatch() for p in fig.axes[0].patches)  # durations are not estimated


def test_compare_rejects_unknown_metrics(runs: Path) -> None:
    with pytest.raises(ReportError, match="accepted: energy_total_j, .*duration_s"):
        plot(runs, "compare", metric="joules")
    with pytest.raises(ReportError, match="needs a target"):
        plot(runs, "compare", metric="energy_to_target_j")
    with pytest.raises(ReportError, match="no run has a value of energy_gpu_j; accepted"):
        plot(runs, "compare", metric="energy_gpu_j")


# -- energy to target ----------------------------------------------------------------------------
def test_energy_to_target_curves_band_and_marks(runs: Path, tmp_path: Path) -> None:
    fig = plot(runs, "energy-to-target", tmp_path / "e.png", by="tag:method",
               target="val_acc=0.45")
    saved(tmp_path / "e.png")
    ax = fig.axes[0]
    thin = [line for line in ax.lines if line.get_linewidth() == pytest.approx(0.6)]
    thick = [line for line in ax.lines if line.get_linewidth() == pytest.approx(1.7)]
    assert len(thin) == 6 and all(len(line.get_xdata()) == 4 for line in thin)  # 4 logs each
    assert len(thick) == 2
    assert len([c for c in ax.collections if type(c).__name__ in ("PolyCollection",
                                                                 "FillBetweenPolyCollection")
                ]) == 2
    assert ax.get_ylabel() == "val_acc"
    assert ax.get_xlabel() == "cumulative energy, machine, incl. estimated (J)"
    # Each group's mark is its mean energy to the target, as `report --target` computes it.
    results = target_results(find_runs([runs]), "val_acc=0.45", by="tag:method")
    marks = [line for line in ax.lines if line.get_marker() in ("D", "s")]  # per series
    expected = [g["energy_to_target_j"]["mean"] for g in results["groups"]
                if g["energy_to_target_j"]["mean"] is not None]
    assert len(marks) == len(expected) >= 1
    assert [m.get_xdata()[0] for m in marks] == pytest.approx(expected)
    assert all(m.get_ydata()[0] == pytest.approx(0.45) for m in marks)
    # Thin lines: the nested runs' logs, shifted by what the parent spent before them.
    energies = sorted(line.get_xdata()[-1] for line in thin)
    totals = sorted(Report.load(p).total_energy_j for p in parents(runs))
    assert all(e <= t * 1.01 for e, t in zip(energies, totals, strict=True))


def test_the_band_at_the_target_is_the_mean_energy_to_target(runs: Path) -> None:
    found = find_runs([runs])
    grouping = group_runs(found, by="tag:method")
    dense = grouping.groups[0]
    curves = []
    for r in dense.runs:
        (child,) = nested_runs(r, grouping)
        from energymeter.analysis.target import energy_before

        before = energy_before(r, (child.started_at - r.started_at).total_seconds())
        curves.append(_Curve(r, child, before, "val_acc"))
    band = level_band(curves, ">=", levels=5)
    assert band is not None
    levels, mean, low, high = band
    assert all(lo <= m <= hi for lo, m, hi in zip(low, mean, high, strict=True))
    level = levels[-1]
    results = target_results(found, f"val_acc={level!r}", by="tag:method")
    assert mean[-1] == pytest.approx(results["groups"][0]["energy_to_target_j"]["mean"])


def test_energy_to_target_from_parent_runs_alone(runs: Path) -> None:
    """Given only the runs of `energymeter run`, the logs of the runs nested in them (beside
    them in the folder) are found; the default metric is the first that is not a counter."""
    fig = plot(parents(runs), "energy-to-target", group=False)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "loss"  # `epoch` is logged first: a counter
    assert len(ax.lines) == 6
    with pytest.raises(ReportError, match="logged no 'bleu'; accepted: epoch, loss, val_acc"):
        plot(runs, "energy-to-target", metric="bleu")
    with pytest.raises(ReportError,
                       match=r"logged no numeric metric.*measure\(\) under energymeter run"):
        Report.load(parents(runs)[0]).plot("energy-to-target")


def test_single_run_energy_to_target(runs: Path) -> None:
    report = Report.load(nested(runs)[0])
    fig = report.plot("energy-to-target", target="val_acc=0.3", width=3.0, height=2.0)
    ax = fig.axes[0]
    assert tuple(fig.get_size_inches()) == pytest.approx((3.0, 2.0))
    (line,) = [line for line in ax.lines if line.get_marker() == "o"]
    assert list(line.get_ydata()) == [e["metrics"]["val_acc"] for e in report.logs]
    (mark,) = [line for line in ax.lines if line.get_marker() == "D"]
    assert mark.get_xdata()[0] == pytest.approx(report.energy_to("val_acc", 0.3)["energy_j"])


# -- API and CLI ---------------------------------------------------------------------------------
def test_arguments_are_checked(runs: Path, tmp_path: Path) -> None:
    assert CLI_KINDS == KINDS_OF_FIGURE
    with pytest.raises(ReportError, match="accepted: timeline, breakdown, compare, "
                                          "energy-to-target"):
        plot(runs, "pie")
    with pytest.raises(ReportError, match=r"accepted file extensions: \.png, \.pdf, \.svg"):
        plot(runs, "breakdown", tmp_path / "f.jpg")
    with pytest.raises(ReportError, match="accepted: timeline, breakdown, energy-to-target"):
        Report.load(parents(runs)[0]).plot("compare")
    with pytest.raises(ReportError, match="apply to the compare and energy-to-target"):
        plot(runs, "timeline", metric="val_acc")


@pytest.mark.parametrize(("kind", "extra", "name"), [
    ("timeline", [], "t.png"),
    ("breakdown", ["--by", "tag:method"], "b.pdf"),
    ("compare", ["--by", "tag:method", "--metric", "mean_power_w"], "c.svg"),
    ("energy-to-target", ["--by", "tag:method", "--target", "val_acc=0.45"], "e.png"),
])
def test_cli_writes_each_kind(runs: Path, tmp_path: Path, kind: str, extra: list[str],
                              name: str) -> None:
    target = parents(runs)[0] if kind == "timeline" else runs
    out = tmp_path / name
    code, stdout, err = invoke("plot", str(target), "--kind", kind, *extra, "-o", str(out),
                               "--width", "3.3", "--dpi", "100")
    assert code == 0, err
    assert err.strip().splitlines()[-1] == f"energymeter: wrote {out}"
    saved(out, 3_000)


def test_cli_errors(runs: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "f.png")
    code, _, err = invoke("plot", str(runs), "--kind", "pie", "-o", out)
    assert code == 2 and "'timeline', 'breakdown', 'compare', 'energy-to-target'" in err
    code, _, err = invoke("plot", str(runs), "--kind", "compare", "--metric", "x", "-o", out)
    assert code == 2 and "accepted: energy_total_j" in err
    code, _, err = invoke("plot", str(runs), "--kind", "energy-to-target", "--metric", "x",
                          "-o", out)
    assert code == 2 and "accepted: epoch, loss, val_acc" in err
    code, _, err = invoke("plot", str(runs), "-o", str(tmp_path / "f.gif"))
    assert code == 2 and ".png, .pdf, .svg" in err
    code, _, err = invoke("plot", str(runs), "-o", str(tmp_path / "no" / "f.png"))
    assert code == 2 and "does not exist" in err
    code, _, err = invoke("plot", str(tmp_path / "nothing"), "-o", out)
    assert code == 2 and "does not exist" in err
    assert not os.path.exists(out)


def test_reports_can_be_given_instead_of_paths(runs: Path) -> None:
    reports = [Report.load(p) for p in parents(runs)]
    fig = plot(reports, "compare", by="tag:method")
    assert len([t for t in fig.axes[0].get_xticklabels()]) == 2
    assert json.loads(Report.load(parents(runs)[0]).to_json())["tags"]["method"] == "dense"


def test_breakdown_and_compare_figures_on_a_basis(tmp_path: Path) -> None:
    from energymeter.analysis.plots import plot
    from tests.test_bases import _study

    runs = _study([50, 51, 49], [100, 160, 90], "dense") + _study([30, 31, 29], [80, 60, 120],
                                                                  "sparse")
    fig = plot(runs, "compare", basis="attributed")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "energy total, attributed (J)"
    assert max(bar.get_height() for bar in ax.patches) == pytest.approx(50.0)
    fig = plot(runs, "breakdown", basis="attributed")
    assert fig.axes[0].get_ylabel() == "energy, attributed (J)"
    with pytest.raises(ReportError, match="breakdown and compare"):
        plot(runs, "timeline", basis="attributed")
    with pytest.raises(ConfigError, match="machine, attributed, net"):
        plot(runs, "compare", basis="own")


def test_runs_are_labelled_by_the_tags_that_tell_them_apart() -> None:
    from energymeter.report.render import run_labels
    from tests.test_compare import fake_report

    runs = [fake_report("t1", cpu_j=1.0, minute=i, tags={"method": m, "study": "s1"})
            for i, m in enumerate(["dense", "dense", "sparse"])]
    labels = run_labels(runs)
    assert labels[2] == "t1 method=sparse"  # unique: no id needed; study is the same
    assert labels[0].startswith("t1 method=dense (") and labels[0] != labels[1]
    assert run_labels(runs[:1]) == ["t1"]
    untagged = fake_report("t1", cpu_j=1.0, minute=9)
    assert run_labels([runs[2], untagged])[1] == "t1 method=-"


def test_energy_to_target_marks_each_groups_ci_in_its_colour_and_estimated_energy(
        tmp_path: Path) -> None:
    from matplotlib.colors import to_hex

    from energymeter.report.plot import CurveSeries, draw_energy_curves, new_figure

    series = [CurveSeries("a", "#0072b2", (((1.0, 2.0, 3.0), (0.5, 0.7, 0.9)),),
                          at_target=(2.5, 2.0, 3.0), estimated=True),
              CurveSeries("b", "#e69f00", (((1.0, 2.0, 3.0), (0.5, 0.7, 0.9)),),
                          at_target=(2.5, 2.0, 3.0))]
    fig, (ax,) = new_figure(None, None)
    draw_energy_curves(ax, series, "val_acc", ("val_acc", 0.8, ">="))
    assert "incl. estimated" in ax.get_xlabel()
    bars = [c for c in ax.containers if hasattr(c, "lines") and c.lines[2]]
    colours = {to_hex(c.lines[2][0].get_color()) for c in bars}
    assert colours == {"#0072b2", "#e69f00"}  # not both black
    # The same energy for both: drawn apart (offset), not on top of one another.
    ys = [c.lines[0].get_transform().transform((2.5, 0.8))[1] for c in bars]
    assert abs(ys[0] - ys[1]) > 1.0
    markers = {c.lines[0].get_marker() for c in bars}
    assert len(markers) == 2  # told apart in greyscale too
