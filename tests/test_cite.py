"""`energymeter cite`: the methods paragraph built from reports, the citation of
energymeter and CITATION.cff."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

import energymeter
from energymeter.analysis import find_runs
from energymeter.analysis.cite import CITATION, bibtex, cite_facts, methods_paragraph
from energymeter.errors import ReportError
from energymeter.probes.base import Channel
from energymeter.report import ChannelEnergy, Report
from energymeter.store import write_json_atomic
from tests.test_cli import invoke, make_run
from tests.test_hostile_input import FUZZ, mutated
from tests.test_latex import compile_latex, needs_tex

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)

RAPL_CPU = Channel("cpu0", "cpu", "Intel Xeon Gold 6248", "rapl", "counter")
RAPL_CPU1 = Channel("cpu1", "cpu", "Intel Xeon Gold 6248", "rapl", "counter")
RAPL_DRAM = Channel("dram0", "dram", "Intel Xeon Gold 6248", "rapl", "counter")
NVML_GPU = Channel("gpu0", "gpu", "NVIDIA A100-SXM4-40GB", "nvml", "counter")
NVML_GPU1 = Channel("gpu1", "gpu", "NVIDIA A100-SXM4-40GB", "nvml", "counter")
POLLED_GPU = Channel("gpu0", "gpu", "Tesla P100", "nvml", "integrated", resolution_s=0.02)
MODEL_CPU = Channel("cpu0", "cpu", "AMD EPYC 7742", "model", "model",
                    meta={"tdp_w": 225.0, "idle_w": 67.5, "tdp_source": "table:AMD EPYC 7742"})
DEFAULT_CPU = Channel("cpu0", "cpu", "AMD EPYC", "model", "model",
                      meta={"tdp_w": 8.0, "idle_w": 2.4, "tdp_source": "default"})
SE = {"region": "SE", "region_source": "argument", "name": "Sweden", "g_per_kwh": 35.89,
      "basis": "generation", "source": "Ember (2025), Yearly Electricity Data", "year": 2024,
      "provider": "table", "pue": 1.0, "emissions_g": 0.01}
DE = {**SE, "region": "DE", "name": "Germany", "g_per_kwh": 344.0, "pue": 1.4}
_ids = iter(range(10**6))


def report(name: str = "train", channels: tuple[Channel, ...] = (RAPL_CPU, RAPL_DRAM,
                                                                  NVML_GPU),
           *, carbon: dict[str, Any] | None = SE, interval_s: float = 0.1,
           version: str | None = "0.1.0", logical_cpus: int = 80,
           fraction: float = 0.004, **fields: Any) -> Report:
    start = T0 + timedelta(minutes=next(_ids))
    settings = {"interval_s": interval_s, "pue": (carbon or {}).get("pue", 1.0),
                "origins": {"interval_s": "default", "pue": "argument"}}
    return Report(
        run_id=f"{next(_ids):08x}run", name=name, status=fields.pop("status", "completed"),
        started_at=start, ended_at=start + timedelta(seconds=60), duration_s=60.0,
        channels=tuple(ChannelEnergy(c, 100.0, 100.0 / 60) for c in channels),
        carbon=carbon, settings=settings,
        overhead={"sampler_cpu_fraction": fraction, "interval_s": interval_s},
        host={"logical_cpus": logical_cpus},
        software={"energymeter": version} if version else {}, **fields)


# -- methods -----------------------------------------------------------------------------------
def test_counters_hardware_interval_carbon_overhead_version() -> None:
    text = methods_paragraph([report(channels=(RAPL_CPU, RAPL_CPU1, RAPL_DRAM, NVML_GPU,
                                               NVML_GPU1))])
    assert "with energymeter 0.1.0 [1]" in text
    assert "one run (train)" in text
    assert ("Hardware: 2 × Intel Xeon Gold 6248 CPUs (80 logical CPUs) and 2 × "
            "NVIDIA A100-SXM4-40GB GPUs.") in text
    assert ("CPU package and DRAM energy were read from RAPL energy counters (Linux powercap); "
            "GPU energy was read from cumulative energy counters read through NVIDIA's "
            "NVML") in text
    assert "estimated" not in text.replace("otherwise estimates energy from a model", "")
    assert "every 0.1 s in between" in text
    assert ("with a PUE of 1 and 35.89 gCO2e/kWh, the generation-based annual average for "
            "2024 for Sweden (SE) from Ember (2025), Yearly Electricity Data") in text
    assert "used 0.4 % of one CPU core" in text
    assert "single run, so their variability is not known" in text
    assert "no energy of storage" in text and "DRAM or GPUs" not in text
    assert text.endswith("[1] energymeter developers. energymeter (version 0.1.0) [Computer "
                         "software]. MIT License.\n")


def test_integrated_gpu_polled_and_model_cpu_estimated_with_its_tdp() -> None:
    text = methods_paragraph([report(channels=(MODEL_CPU, POLLED_GPU), logical_cpus=128)])
    assert ("GPU energy was obtained by polling power through NVIDIA's NVML every 0.02 s and "
            "integrating it over time (trapezoid rule)") in text
    assert "CPU energy was not measured" in text and "estimated by energymeter's model" in text
    assert ("a TDP of 225 W (the TDP of AMD EPYC 7742 in energymeter's CPU table (derived "
            "from CodeCarbon's)) and an idle power of 30 % of TDP") in text
    assert "can differ substantially from the real consumption" in text
    assert "no energy of DRAM, nor of storage" in text
    default = methods_paragraph([report(channels=(DEFAULT_CPU,), logical_cpus=2)])
    assert ("a TDP of 8 W (energymeter's default of 4 W per logical CPU, as the CPU model is "
            "not in its TDP table)") in default
    assert "no energy of DRAM or GPUs" in default
    setting = Channel("cpu0", "cpu", "x", "model", "model",
                      meta={"tdp_w": 95.0, "tdp_source": "setting"})
    assert "set by the experimenter (the cpu_tdp_w setting)" in methods_paragraph(
        [report(channels=(setting,))])


def test_groups_warmup_statistics_and_estimates_in_latex() -> None:
    runs = ([("runs/dense/", report("train")) for _ in range(3)]
            + [("runs/dense/", report("train", warmup=True))]
            + [("runs/sparse/", report("train")) for _ in range(3)]
            + [("runs/sparse/", report("train", warmup=True))])
    text = methods_paragraph(runs)
    assert "6 runs in 2 groups (dense: n = 3; sparse: n = 3)" in text
    assert "In each group, 1 warm-up run ran first and was excluded from the figures." in text
    assert ("mean ± the half-width of the 95 % confidence interval of the mean (Student's t, "
            "n − 1 degrees of freedom) over the runs of each group") in text
    assert "difference from dense as the ratio of the means − 1" in text
    assert "Welch's two-sided t-test (significance level 0.05)" in text
    one = methods_paragraph([report("a"), report("a"), report("a")])
    assert "3 runs (a)" in one and "over the runs." in one and "Welch" not in one
    two = methods_paragraph([("x/", report("a")), ("x/", report("a")), ("y/", report("a"))])
    assert "with fewer than 3 runs in a group, its interval is wide" in two
    facts = cite_facts(runs)
    assert facts["groups"] == [{"label": "dense", "n": 3, "warmup": 1},
                               {"label": "sparse", "n": 3, "warmup": 1}]
    assert facts["methods"]["cpu"] == {"counter:rapl": 6}


def test_mixed_methods_regions_hardware_versions_are_said() -> None:
    runs = [report("a", (RAPL_CPU,)), report("a", (RAPL_CPU,)),
            report("a", (DEFAULT_CPU,), carbon=DE, interval_s=0.5, version="0.2.0",
                     logical_cpus=2)]
    text = methods_paragraph(runs)
    assert ("CPU package energy was obtained by different methods across runs (hardware "
            "counter (rapl) (2 runs), estimated (1 run)): those figures are not directly "
            "comparable") in text
    assert "CPU package energy was read from RAPL energy counters" in text
    assert "CPU energy was not measured" in text  # the estimated runs are said so
    assert "but the runs differ in these inputs" in text
    assert ("or 344 gCO2e/kWh for DE (generation, Ember (2025), Yearly Electricity Data, "
            "2024) (1 run)") in text
    assert "a PUE of 1 (2 runs) or 1.4 (1 run)" in text
    assert "Hardware differs between runs" in text
    assert "every 0.1 s (2 runs) or 0.5 s (1 run)" in text
    assert "energymeter 0.1.0 (2 runs) or 0.2.0 (1 run)" in text


def test_carbon_inference_live_provider_status_baseline_and_no_version() -> None:
    inferred = {**SE, "region_source": "timezone"}
    live = {**SE, "provider": "electricitymaps", "live_energy_share": 0.8}
    text = methods_paragraph([report(carbon=inferred, version=None, status="interrupted",
                                     baseline={"duration_s": 30.0, "gross_total_j": 1.0})])
    assert "the region inferred from the system time zone" in text
    assert "energymeter (version not recorded)" in text
    assert "Not every run completed (1 interrupted)" in text
    assert "An idle baseline of the machine, measured over 30 s, was recorded" in text
    assert "taken live from electricitymaps for 80 % of the energy" in methods_paragraph(
        [report(carbon=live)])
    assert "Emissions" not in methods_paragraph([report(carbon=None)])


def test_formats_markdown_latex_bibtex() -> None:
    hostile = report("exp_1 & 100% #2 $x {y}", channels=(DEFAULT_CPU,))
    md = methods_paragraph([hostile], "markdown")
    assert "energymeter 0.1.0[^energymeter]" in md and r"exp\_1 & 100% #2" in md
    assert "\n\n[^energymeter]: energymeter developers." in md
    tex = methods_paragraph([hostile], "latex")
    assert r"energymeter 0.1.0~\cite{energymeter}" in tex
    assert r"exp\_1 \& 100\% \#2 \$x \{y\}" in tex
    assert r"$\times$ CPU utilisation" in tex and r"gCO\textsubscript{2}e/kWh" in tex
    assert "% @software{energymeter," in tex and "%   version = {0.1.0}," in tex
    body = [line for line in tex.splitlines() if not line.startswith("%")]
    assert not any(re.search(r"(?<!\\)[%#_&]", line) for line in body)
    assert not any("±" in line or "×" in line or "−" in line for line in body)
    entry = methods_paragraph([hostile], "bibtex")
    assert entry == bibtex("0.1.0") and entry.startswith("@software{energymeter,\n")
    assert "author  = {{energymeter developers}}" in entry and "url" not in entry
    with pytest.raises(ReportError, match="accepted: text, markdown, latex, bibtex"):
        methods_paragraph([hostile], "html")
    with pytest.raises(ReportError, match="no run given"):
        methods_paragraph([])
    with pytest.raises(ReportError, match="warm-up"):
        methods_paragraph([report(warmup=True)])


@needs_tex
def test_latex_paragraph_compiles(tmp_path: Path) -> None:
    tex = methods_paragraph([report("exp_1 & 100% #2 $x {y} ~^", channels=(DEFAULT_CPU,)),
                             report("b", (MODEL_CPU, POLLED_GPU), carbon=DE)], "latex")
    (tmp_path / "energymeter.bib").write_text(bibtex("0.1.0"))
    compile_latex(tmp_path, tex)


def test_built_from_the_reports_not_this_machine() -> None:
    """Nothing of the machine reading the reports: only what they recorded."""
    text = methods_paragraph([report(logical_cpus=4096, version="9.9.9")])
    assert "4096 logical CPUs" in text and "energymeter 9.9.9" in text
    assert energymeter.__version__ not in text.replace("9.9.9", "")


# -- hostile reports ---------------------------------------------------------------------------
RICH = report("x", (MODEL_CPU, POLLED_GPU, RAPL_DRAM),
              baseline={"duration_s": 30.0, "gross_total_j": 1.0},
              cpu_attribution={"tree_share": 0.5}).to_dict()
RICH["host"]["probes"] = [{"source": "model", "packages": 2, "tdp_w": 225.0}]
RICH["carbon"]["live_energy_share"] = 0.5
RICH["carbon"]["provider"] = "gb"


@FUZZ
@given(mutated(RICH))
def test_fuzz_any_loadable_report_can_be_cited(data: Any) -> None:
    try:
        loaded = Report.from_dict(data)
    except ReportError:
        return
    for fmt in ("text", "markdown", "latex", "bibtex"):
        try:
            assert methods_paragraph([loaded, report("y")], fmt)
        except ReportError as exc:  # e.g. every run a warm-up run
            assert "warm-up" in str(exc)


# -- CITATION.cff ------------------------------------------------------------------------------
def _cff() -> dict[str, str]:
    fields = {}
    for line in (REPO / "CITATION.cff").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([a-z-]+): (.+)$", line)
        if m:
            fields[m.group(1)] = m.group(2).strip().strip("\"'")
        m = re.match(r"^  - name: (.+)$", line)
        if m:
            fields["author"] = m.group(1).strip("\"'")
    return fields


def test_citation_cff_matches_the_package() -> None:
    cff = _cff()
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == energymeter.__version__
    assert cff["title"] == CITATION["title"] and cff["license"] == CITATION["license"]
    assert cff["author"] == CITATION["authors"]
    assert "repository-code" not in cff and "url" not in cff  # no invented address


def test_citation_cff_is_valid_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert data["authors"] == [{"name": "energymeter developers"}]
    assert data["message"] and data["type"] == "software"
    assert str(data["version"]) == energymeter.__version__


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_cite_real_runs_and_bad_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("ENERGYMETER_REGION", "SE")
    out = tmp_path / "runs"
    make_run(out, "real")
    make_run(out, "real")
    code, text, err = invoke("cite", str(out))
    assert code == 0, err
    assert "2 runs (real)" in text and f"energymeter {energymeter.__version__} [1]" in text
    assert "every 0.01 s in between" in text and "Sweden (SE)" in text
    code, tex, _ = invoke("cite", "--format", "latex", str(out))
    assert code == 0 and r"\cite{energymeter}" in tex
    code, entry, _ = invoke("cite", "--format", "bibtex", str(out))
    assert code == 0 and entry.startswith("@software{energymeter,")
    code, text, _ = invoke("cite", "--help")
    assert code == 0 and "energymeter cite" in text.split("Examples:", 1)[1]
    code, text, err = invoke("cite", str(tmp_path / "missing"))
    assert code == 2 and text == "" and "does not exist" in err
    code, _, err = invoke("cite", "--by", "nonsense", str(out))
    assert code == 2 and "accepted" in err


def test_cli_cite_saved_reports_with_groups(tmp_path: Path) -> None:
    for folder, n in (("dense", 3), ("sparse", 3)):
        for i in range(n):
            r = report("train", channels=(DEFAULT_CPU,), logical_cpus=2)
            run_dir = tmp_path / folder / f"2026-{i}"
            run_dir.mkdir(parents=True)
            write_json_atomic(run_dir / "report.json", r.to_dict())
    code, text, err = invoke("cite", "--format", "markdown", str(tmp_path / "dense"),
                             str(tmp_path / "sparse"))
    assert code == 0, err
    assert "6 runs in 2 groups (dense: n = 3; sparse: n = 3)" in text
    assert "CPU energy was not measured" in text and "Welch" in text
    assert find_runs([tmp_path / "dense"])  # the files are real runs


def test_cite_says_what_was_measured_and_estimated_the_spread_and_the_target() -> None:
    from energymeter.analysis.cite import methods_paragraph
    from energymeter.report import Report
    from tests.test_compare import CPU_MODEL, fake_report

    runs = [fake_report("a", cpu_j=100.0 + 10 * i, gpu_j=50.0, minute=i, cpu=CPU_MODEL)
            for i in range(3)]
    text = methods_paragraph(runs)
    assert text.startswith("We measured (GPU) and estimated (CPU package) the energy of 3 runs")
    assert "coefficient of variation of 6.2 %" in text  # 150, 160, 170 J: std 10 / mean 160
    all_model = methods_paragraph([fake_report("b", cpu_j=5.0, cpu=CPU_MODEL)])
    assert all_model.startswith("We estimated the energy of one run")
    assert "coefficient of variation" not in all_model  # one run: no spread to state
    logged = [Report(**{**r.__dict__, "logs": (
        {"t_s": 1.0, "energy_j": 40.0, "metrics": {"acc": 0.5}},
        {"t_s": 2.0, "energy_j": 80.0, "metrics": {"acc": 0.9 if i else 0.6}})})
        for i, r in enumerate(runs)]
    with_target = methods_paragraph(logged, target="acc=0.8")
    assert "energy to reach acc ≥ 0.8" in with_target
    assert "2 of 3 runs reached it" in with_target
