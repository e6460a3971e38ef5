"""The ``energymeter`` commands through click's CliRunner (formats, options, help, version),
plus a real SIGKILLed ``energymeter run`` read back by ``energymeter report``."""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from energymeter import __version__, measure
from energymeter.cli import cli
from energymeter.cli.probes import format_probes
from energymeter.probes.inspect import inspect_probes
from energymeter.report import LEDGER_COLUMNS, Report
from tests.cli_output import clean_stderr
from tests.fakes.nvml import FakeGPU, FakeNVML
from tests.fakes.powercap import FakePowercap

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("run", "report", "compare", "plot", "cite", "probes", "monitor", "carbon")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean ENERGYMETER_* environment with runs under tmp_path/runs; cwd = tmp_path."""
    for key in list(os.environ):
        if key.startswith("ENERGYMETER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ENERGYMETER_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("ENERGYMETER_REGION", "SE")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs"


def invoke(*args: str) -> tuple[int, str, str]:
    kwargs = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters \
        else {}
    result = CliRunner(**kwargs).invoke(cli, list(args), prog_name="energymeter",
                                        catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def make_run(out: Path, name: str, seconds: float = 0.02) -> Report:
    with measure(name, out=out, interval_s=0.01) as m, m.phase("work"):
        time.sleep(seconds)
    assert m.report is not None
    return m.report


# -- version and help --------------------------------------------------------------------------
def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0
    assert out.strip() == f"energymeter {__version__}"


def test_help_lists_commands() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out
    assert "energymeter run -- python train.py" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0
    assert "Examples:" in out
    assert f"energymeter {command}" in out.split("Examples:", 1)[1]


def test_run_help_shows_settings_defaults_from_settings() -> None:
    from energymeter.settings import Settings

    _, out, _ = invoke("run", "--help")
    for option in ("--name", "--out", "--interval", "--region", "--pue", "--carbon-table",
                   "--price", "--currency", "--json", "--quiet", "--shell"):
        assert option in out
    assert str(Settings.out) in out


def test_run_without_command_is_a_usage_error() -> None:
    code, _, err = invoke("run")
    assert code == 2
    assert "COMMAND" in err


# -- report ------------------------------------------------------------------------------------
def test_report_table(env: Path) -> None:
    report = make_run(env, "train")
    code, out, _ = invoke("report", str(report.path))
    assert code == 0
    assert out.startswith("energymeter: train completed")
    assert "channel" in out and "method" in out and "energy (J)" in out
    assert "cpu0" in out
    assert "phase" in out and "work" in out  # phase table
    assert "(estimated)" in out  # the CPU model is never shown as measured


def test_report_json_one_and_several(env: Path) -> None:
    a, b = make_run(env, "a"), make_run(env, "b")
    code, out, _ = invoke("report", "--format", "json", str(a.path / "report.json"))
    assert code == 0
    data = json.loads(out)
    assert data["run_id"] == a.run_id and data["schema"] == "energymeter.report/1"
    code, out, _ = invoke("report", "--format", "json", str(a.path), str(b.path))
    assert [d["run_id"] for d in json.loads(out)] == [a.run_id, b.run_id]


def test_report_csv_ledger_columns_and_folder(env: Path) -> None:
    runs = [make_run(env, name) for name in ("x", "y", "z")]
    code, out, _ = invoke("report", "--format", "csv", str(env))
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == LEDGER_COLUMNS
    assert [r[0] for r in rows[1:]] == [r.run_id for r in runs]  # a folder: oldest first


def test_report_markdown_and_latex(env: Path) -> None:
    report = make_run(env, "paper")
    code, out, _ = invoke("report", "--format", "markdown", str(report.path))
    assert code == 0 and "| channel |" in out and "`paper`" in out
    code, out, _ = invoke("report", "--format", "latex", str(report.path))
    assert code == 0 and r"\begin{tabular}" in out and r"\end{tabular}" in out


def test_report_bad_paths_exit_2(env: Path, tmp_path: Path) -> None:
    code, out, err = invoke("report", str(tmp_path / "missing"))
    assert code == 2 and out == ""
    assert "does not exist" in err and "missing" in err
    (tmp_path / "empty").mkdir()
    code, _, err = invoke("report", str(tmp_path / "empty"))
    assert code == 2 and "neither a run directory" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = invoke("report", str(bad))
    assert code == 2 and "not valid JSON" in err
    code, _, err = invoke("report", "--format", "yaml", str(bad))
    assert code == 2


def _wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_report_of_a_sigkilled_run(env: Path, tmp_path: Path) -> None:
    """kill -9 of energymeter and its child: no report.json, yet `report` rebuilds the run
    from samples.csv and shows it as interrupted."""
    child_env = {**os.environ, "ENERGYMETER_OUT": str(env), "ENERGYMETER_INTERVAL_S": "0.05",
                 "PYTHONPATH": os.pathsep.join(
                     p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "energymeter.cli", "run", "--", sys.executable, "-c",
         "import time; time.sleep(30)"],
        env=child_env, cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: any(env.glob("*/samples.csv")))
        time.sleep(1.5)  # the sampler flushes at least once a second
        os.killpg(proc.pid, signal.SIGKILL)  # energymeter and its child together
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    (run_dir,) = [p for p in env.iterdir() if p.is_dir()]
    assert not (run_dir / "report.json").exists()
    code, out, _ = invoke("report", str(run_dir))
    assert code == 0
    assert "interrupted" in out.splitlines()[0]
    assert "rebuilt from samples.csv" in out
    code, out, _ = invoke("report", "--format", "json", str(run_dir))
    data = json.loads(out)
    assert data["status"] == "interrupted"
    assert data["duration_s"] > 0.5
    assert data["command"][-1] == "import time; time.sleep(30)"


def _run_cli(env: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `energymeter run` (a process of its own: the command's stdout is its own)."""
    child_env = {**os.environ, "ENERGYMETER_OUT": str(env), "ENERGYMETER_INTERVAL_S": "0.05",
                 "ENERGYMETER_POWERCAP_ROOT": str(env.parent / "absent"),
                 "PYTHONPATH": os.pathsep.join(
                     p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "energymeter", "run", *args],
                          env=child_env, capture_output=True, text=True, timeout=60, check=False)


def test_run_with_an_out_it_cannot_write_still_runs_the_command(env: Path,
                                                                tmp_path: Path) -> None:
    """--out that cannot hold a run (here in a file; a full or read-only
    disk in test_full_disk.py) was exit 2 and the command never ran. Now it runs, measured in
    memory; its output and exit code pass untouched; one line says why nothing is saved."""
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    done = _run_cli(env, "--out", str(a_file / "runs"), "--", sys.executable, "-c",
                    "import sys; print('the output', flush=True); sys.exit(5)")
    assert done.stdout == "the output\n" and done.returncode == 5
    lines = clean_stderr(done.stderr)
    said = [line for line in lines if "cannot create the run directory" in line]
    assert len(said) == 1 and "measured in memory only" in said[0] and str(a_file) in said[0]
    assert lines[-1] == "  nothing was saved: this summary is all there is"
    assert "report.json" not in done.stderr
    assert a_file.read_text() == "mine\n"


def test_run_whose_report_cannot_be_written_names_no_missing_report_json(env: Path) -> None:
    """The run directory vanishes during the run. stderr had
    "energymeter: error: energymeter: ...", advice for library users (Meter.report) and the
    path of the report.json that was not written."""
    done = _run_cli(env, "--", sys.executable, "-c",
                    "import os, shutil; shutil.rmtree(os.environ['ENERGYMETER_RUN_DIR']); "
                    "print('gone')")
    assert done.stdout == "gone\n" and done.returncode == 0
    lines = clean_stderr(done.stderr)
    said = [line for line in lines if "report.json could not be written" in line]
    assert len(said) == 1 and said[0].startswith("energymeter: error: report.json"), lines
    assert not any(line.startswith("  report: ") for line in lines)
    assert "nothing was saved (the run directory" in lines[-1]
    assert "this summary is all there is" in lines[-1]


# -- compare -----------------------------------------------------------------------------------
def test_compare_groups_by_name(env: Path) -> None:
    for name in ("base", "base", "fast", "fast", "fast"):
        make_run(env, name)
    code, out, _ = invoke("compare", str(env))
    assert code == 0
    header = out.splitlines()[0]
    assert "base (n=2)" in header and "fast (n=3)" in header
    assert "±" in out and "half-width of the 95 % confidence interval" in out
    assert re.search(r"energy total \((µ|m|k|M)?J\)", out) and "peak RSS (MiB)" in out
    code, out, _ = invoke("compare", "--format", "json", str(env))
    rows = json.loads(out)
    assert [(r["name"], r["n"]) for r in rows] == [("base", 2), ("fast", 3)]
    assert rows[0]["energy_total_j_ratio"] == 1.0


def test_compare_formats_and_no_group(env: Path) -> None:
    a, b = make_run(env, "same"), make_run(env, "same")
    code, out, _ = invoke("compare", "--no-group", "--format", "csv", str(a.path), str(b.path))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run_ids"] for r in rows] == [a.run_id, b.run_id]
    assert float(rows[0]["energy_total_j_ratio"]) == 1.0
    for fmt, marker in (("markdown", "|---|"), ("latex", r"\begin{tabular}")):
        code, out, _ = invoke("compare", "--format", fmt, str(a.path), str(b.path))
        assert code == 0 and marker in out


def test_compare_bad_path_exit_2(env: Path, tmp_path: Path) -> None:
    code, _, err = invoke("compare", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


# -- probes ------------------------------------------------------------------------------------
def test_probes_text_and_json(env: Path, tmp_path: Path) -> None:
    code, out, _ = invoke("probes")
    assert code == 0
    assert out.startswith("CPU:")
    assert "Channels a run measures:" in out
    code, out, _ = invoke("probes", "--json")
    info = json.loads(out)
    assert info["cpu"]["logical_cpus"] == os.cpu_count()
    for item in info["unavailable"]:
        assert set(item) == {"source", "reason", "hint"} and item["reason"]


def test_probes_with_a_fake_powercap_tree(env: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePowercap(tmp_path / "powercap", sockets=2, dram=True)
    try:
        monkeypatch.setenv(*fake.env_item())
        code, out, _ = invoke("probes", "--json")
        assert code == 0
        info = json.loads(out)
        assert info["powercap_root"] == str(fake.root)
        assert info["powercap_root_origin"] == "env"
        assert len(info["rapl_zones"]) >= 4
        assert info["measurable"]["cpu"] == "counter"
        assert info["measurable"]["dram"] == "counter"
        assert all(c["measured"] for c in info["channels"])
        code, out, _ = invoke("probes")
        assert "RAPL:" in out and "zones under" in out
        assert "hardware energy counter (measured)" in out
    finally:
        fake.close()


def test_probes_unavailable_reason_and_fix(env: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYMETER_POWERCAP_ROOT", str(tmp_path / "no-powercap"))
    code, out, _ = invoke("probes")
    assert code == 0
    assert "Unavailable:" in out
    assert "rapl: powercap root" in out and "    fix: " in out
    assert "model" in out and "estimated by a model" in out


def test_probes_bad_setting_exit_2(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYMETER_INTERVAL_S", "fast")
    code, _, err = invoke("probes")
    assert code == 2 and "ENERGYMETER_INTERVAL_S" in err


def test_inspect_probes_lists_gpus_from_a_fake_nvml(env: Path, tmp_path: Path) -> None:
    info = inspect_probes(env={"ENERGYMETER_POWERCAP_ROOT": str(tmp_path / "none")},
                          pynvml=FakeNVML([FakeGPU(uuid="GPU-aaaa"), FakeGPU(arch="pascal")]))
    assert [g["name"] for g in info["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    assert [g["method"] for g in info["gpus"]] == ["counter", "integrated"]
    assert info["gpus"][0]["uuid"] == "GPU-aaaa"
    assert info["measurable"]["gpu"] == "counter+integrated"
    text = format_probes(info)
    assert "GPUs:  2" in text and "gpu0: NVIDIA H100" in text
    json.dumps(info, default=str)


# -- carbon ------------------------------------------------------------------------------------
def test_carbon_region(env: Path) -> None:
    code, out, _ = invoke("carbon", "FR")
    assert code == 0
    assert "FR (France), given" in out
    for field in ("intensity:", "basis:", "source:", "year:", "table:"):
        assert field in out
    code, out, _ = invoke("carbon", "se-se3", "--json")
    data = json.loads(out)
    assert data["region"] == "SE-SE3" and data["basis"] == "consumption"
    assert {"g_per_kwh", "source", "year", "table", "name"} <= set(data)


def test_carbon_default_region_from_env(env: Path) -> None:
    code, out, _ = invoke("carbon")
    assert code == 0
    assert "SE (Sweden), from $ENERGYMETER_REGION" in out


def test_carbon_list(env: Path) -> None:
    code, out, _ = invoke("carbon", "--list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["code", "name", "gCO2e/kWh"]
    assert lines[2].startswith("WLD")
    code, out, _ = invoke("carbon", "--list", "--carbon-table", "electricitymaps", "--json")
    rows = json.loads(out)
    assert any(r["code"] == "SE-SE3" for r in rows)
    assert {r["basis"] for r in rows if r["code"] != "WLD"} == {"consumption"}


def test_carbon_errors_exit_2(env: Path) -> None:
    code, out, err = invoke("carbon", "XX")
    assert code == 2 and out == ""
    assert "XX" in err and "energymeter carbon --list" in err
    code, _, err = invoke("carbon", "SE", "--list")
    assert code == 2
    code, _, _ = invoke("carbon", "--carbon-table", "nope")
    assert code == 2


# -- monitor -----------------------------------------------------------------------------------
def test_monitor_duration_writes_a_run(env: Path) -> None:
    code, out, err = invoke("monitor", "--refresh", "0.1", "--duration", "0.45")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("#") and "total" in lines[0] and "cpu0" in lines[0]
    assert lines[1].startswith("#") and "W" in lines[1]
    assert len(lines) >= 5  # header, units, about four rows
    (run_dir,) = [p for p in env.iterdir() if p.is_dir()]
    report = Report.load(run_dir)
    assert report.name == "monitor" and report.status == "completed"
    assert str(run_dir) in err


def test_monitor_bad_refresh_exit_2(env: Path) -> None:
    code, _, err = invoke("monitor", "--refresh", "0", "--duration", "1")
    assert code == 2 and "refresh_s" in err
    assert not env.exists()


def test_monitor_interval_is_the_sampling_interval_as_in_run(env: Path) -> None:
    """--interval means the same in `run` and `monitor` (the sampler's period); --refresh is
    monitor's print period."""
    code, _, _ = invoke("monitor", "--interval", "0.05", "--refresh", "0.2", "--duration", "0.3")
    assert code == 0
    (run_dir,) = [p for p in env.iterdir() if p.is_dir()]
    report = Report.load(run_dir)
    assert report.settings["interval_s"] == 0.05
    assert report.settings["origins"]["interval_s"] == "argument"
    code, _, err = invoke("monitor", "--interval", "0", "--duration", "1")
    assert code == 2 and "interval_s" in err


def test_monitor_stops_on_sigint(env: Path, tmp_path: Path) -> None:
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "energymeter", "monitor", "--refresh", "0.1", "--quiet"],
        env=child_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        for _ in range(3):  # header, units, a first row
            proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert b"monitor run written to" in err
    (run_dir,) = [p for p in env.iterdir() if p.is_dir()]
    assert Report.load(run_dir).status == "completed"


# -- report --save and rebuilt runs ------------------------------------------
def test_report_of_a_missing_report_json_rebuilds_the_run(env: Path) -> None:
    from tests.test_hostile_input import write_run

    run_dir = write_run(env / "killed")
    code, out, err = invoke("report", str(run_dir / "report.json"))
    assert code == 0, err
    assert "interrupted" in out.splitlines()[0]
    assert f"run: {run_dir} (rebuilt" in out and str(run_dir / "report.json") not in out


def test_report_save_writes_rebuilt_runs_once(env: Path) -> None:
    import socket
    from datetime import datetime, timezone

    from tests.test_hostile_input import START, write_run

    done = make_run(env, "done")
    killed = write_run(env / "killed")
    live = write_run(env / "live", [{**START, "run_id": "feedbeef" * 2, "pid": os.getpid(),
                                     "hostname": socket.gethostname(),
                                     "started_at": datetime.now(timezone.utc).isoformat()}])
    ledger_before = (env / "runs.csv").read_text()
    code, out, err = invoke("report", "--save", str(env))
    assert code == 0, err
    assert "interrupted" in out and "running" in out and "completed" in out
    assert f"saved {killed / 'report.json'}" in err and str(env / "runs.csv") in err
    assert f"not saved: {live} is still running" in err
    assert str(done.path) not in err  # it has its report.json: nothing to say
    assert (killed / "report.json").is_file() and not (live / "report.json").exists()
    saved = json.loads((killed / "report.json").read_text())
    assert saved["status"] == "interrupted" and saved["run_id"] == START["run_id"]
    rows = list(csv.DictReader(io.StringIO((env / "runs.csv").read_text())))
    assert [r["run_id"] for r in rows] == [done.run_id, START["run_id"]]
    assert rows[1]["path"] == str(killed)
    assert (env / "runs.csv").read_text().startswith(ledger_before)
    before = (killed / "report.json").read_bytes()
    code, _, err = invoke("report", "--save", str(killed))  # saved once: never again
    assert code == 0 and "saved" not in err
    assert (killed / "report.json").read_bytes() == before
    assert (env / "runs.csv").read_text().count(START["run_id"]) == 1


def test_report_help_shows_save_with_an_example(env: Path) -> None:
    code, out, _ = invoke("report", "--help")
    assert code == 0 and "--save" in out and "energymeter report --save" in out
