"""Notebooks: the %%measure cell magic and the report's HTML, executed in a real Jupyter
kernel with nbclient; the short reprs of Report and Meter; Report.to_dataframe("samples")."""

from __future__ import annotations

from pathlib import Path

import pytest

from energymeter import Report, measure
from tests.fakes.powercap import FakePowercap


def test_magic_and_html_repr_in_a_real_kernel(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    out = tmp_path / "runs"
    cell = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        cell("%load_ext energymeter"),
        cell(f"%%measure train --region SE --out {out} --tag method=nb\n"
             "import time\n"
             "total = sum(range(2_000_000))\n"
             "with _energymeter.phase('inner'):\n"
             "    time.sleep(0.05)\n"
             "_energymeter.log(step=1)\n"),
        cell("report = _\nprint(repr(report))\nprint(repr(_energymeter))"),
        cell(f"%%measure broken --region SE --out {out}\nraise ValueError('boom')"),
        cell("print(_energymeter.report.status)"),
    ]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    shown = [o for o in nb.cells[1].outputs if o.output_type == "execute_result"]
    assert len(shown) == 1, nb.cells[1].outputs
    html = shown[0].data["text/html"]
    assert "energymeter run <code>train</code>" in html and "inner" in html
    assert "method=nb" in html and "(estimated)" in html  # no RAPL here: said so
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert "<Report 'train' completed" in printed and "<Meter 'train' stopped" in printed
    assert any(o.output_type == "error" and o.ename == "ValueError"
               for o in nb.cells[3].outputs)  # the cell's own traceback, as usual
    assert "failed" in "".join(o.get("text", "") for o in nb.cells[4].outputs)
    reports = [Report.load(p) for p in out.iterdir() if p.is_dir()]
    assert sorted(r.name for r in reports) == ["broken", "train"]
    train = next(r for r in reports if r.name == "train")
    assert train.tags == {"method": "nb"} and [p.name for p in train.phases] == ["inner"]


def test_reprs_are_short(tmp_path: Path) -> None:
    m = measure("short", out=tmp_path, powercap_root=tmp_path / "absent", region="SE")
    assert repr(m) == "<Meter 'short' new>"
    with m:
        assert repr(m).startswith("<Meter 'short' running since ")
    assert repr(m).startswith("<Meter 'short' stopped: completed, ")
    assert repr(m.report).startswith("<Report 'short' completed: ") and len(repr(m.report)) < 100
    assert m.report._repr_markdown_() == m.report.to_markdown()


def test_html_escapes_what_it_shows(tmp_path: Path) -> None:
    with measure("<script>alert(1)</script>", out=tmp_path, powercap_root=tmp_path / "absent",
                 region="SE") as m, m.phase("<b>x</b>"):
        pass
    html = m.report._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>x</b>" not in html


def test_samples_frame_power_from_the_counters(rapl40: FakePowercap) -> None:
    import time

    with measure("samples", powercap_root=rapl40.root, region="SE", interval_s=0.05) as m:
        time.sleep(1.2)
    df = m.report.to_dataframe("samples")
    assert list(df.columns) == ["t_s", "cpu0_w", "dram0_w", "total_w", "cpu0_j", "dram0_j"]
    assert len(df) >= 15
    # 40 W package + 5 W DRAM; an interval's power is off by what the fake's counters lagged
    # at its ends (measured), over its length.
    assert abs(df["total_w"].median() - 45.0) <= 0.05 * 45.0 + rapl40.lag_j(45.0) / 0.05
    binned = m.report.to_dataframe("samples", resample=0.5)
    assert len(binned) == 3  # 0-0.5, 0.5-1.0, 1.0-end
    for watts in binned["cpu0_w"][:2]:  # the last bin may be shorter than 0.5 s
        assert abs(watts - 40.0) <= 0.05 * 40.0 + rapl40.lag_j(40.0) / 0.5
    assert binned["cpu0_j"].iloc[-1] == pytest.approx(m.report.channels[0].energy_j, rel=1e-9)
    coarse = m.report.to_dataframe("samples", resample=0.01)  # bins finer than the samples
    assert coarse["cpu0_w"].notna().all() and len(coarse) >= 15
    with pytest.raises(Exception, match="accepted: seconds"):
        m.report.to_dataframe("samples", resample="soon")
