from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from energymeter import Meter, Report, measure
from energymeter.errors import ConfigError, UsageError
from energymeter.store import read_samples
from tests.fakes.powercap import FakePowercap
from tests.timing import until


def test_steady_40w_over_5s_is_200j_with_wraps(rapl40: FakePowercap, tmp_path: Path) -> None:
    with measure("steady", powercap_root=rapl40.root, region="SE") as m:
        time.sleep(5.0)
    r = m.report
    cpu = next(c for c in r.channels if c.channel.id == "cpu0")
    assert cpu.channel.method == "counter" and cpu.channel.source == "rapl"
    expected_j = 40.0 * r.duration_s
    assert r.duration_s >= 5.0
    assert abs(cpu.energy_j - expected_j) <= 0.005 * expected_j + rapl40.lag_j(40.0)
    assert abs(r.energy_j["by_kind"]["dram"] - 5.0 * r.duration_s) \
        <= 0.005 * 5.0 * r.duration_s + rapl40.lag_j(5.0)
    # The highest mean power over a peak window: its ends lag as a span's do.
    window_s = r.overhead["peak_window_s"]
    assert abs(cpu.peak_power_w - 40.0) <= 4.0 + rapl40.lag_j(40.0) / window_s
    assert r.overhead["sampler_cpu_fraction"] < 0.01  # < 1 % of one core
    # Ticks skipped while the machine was too busy are counted apart; none is lost silently.
    assert r.overhead["ticks"] + r.overhead.get("skipped_ticks", 0) >= 40
    assert r.status == "completed" and r.carbon["region"] == "SE"
    assert r.carbon["emissions_g"] == pytest.approx(
        r.total_energy_j / 3.6e6 * r.carbon["g_per_kwh"])


def test_no_rapl_falls_back_to_estimated_model(tmp_path: Path) -> None:
    with measure("est", powercap_root=tmp_path / "absent", region="SE") as m:
        sum(i * i for i in range(300_000))
    r = m.report
    cpu = [c for c in r.channels if c.channel.kind == "cpu"]
    assert [c.channel.method for c in cpu] == ["model"]
    assert cpu[0].energy_j > 0
    assert any("ESTIMATED" in w and "absent" in w for w in r.warnings)
    assert any(u["source"] == "rapl" for u in r.unavailable)
    assert "(estimated)" in r.summary()


def test_nested_phases_and_logs(rapl40: FakePowercap) -> None:
    with measure("phases", powercap_root=rapl40.root, region="SE") as m:
        with m.phase("epoch-1"):
            time.sleep(0.3)
            with m.phase("forward"):
                time.sleep(0.2)
        m.log(epoch=1, loss=0.5)
        with m.phase("epoch-2"):
            time.sleep(0.2)
        m.log(epoch=2, loss=0.25)
    r = m.report
    names = [(p.name, p.parent) for p in r.phases]
    assert names == [("epoch-1", None), ("forward", "epoch-1"), ("epoch-2", None)]
    for p in r.phases:
        assert abs(p.energy_by_channel["cpu0"] - 40.0 * p.duration_s) \
            <= 0.05 * 40.0 * p.duration_s + rapl40.lag_j(40.0)
    epoch1, forward = r.phases[0], r.phases[1]
    assert epoch1.start_s <= forward.start_s and forward.end_s <= epoch1.end_s
    assert [e["metrics"]["epoch"] for e in r.logs] == [1, 2]
    assert r.logs[0]["energy_j"] < r.logs[1]["energy_j"] <= r.total_energy_j
    d = r.to_dict()["phases"][0]
    assert d["energy_j"]["by_kind"]["cpu"] == pytest.approx(epoch1.energy_by_channel["cpu0"])


def test_report_files_and_round_trip(rapl40: FakePowercap, tmp_path: Path) -> None:
    with measure("files", powercap_root=rapl40.root, region="SE", interval_s=0.02) as m:
        # As many ticks as the machine gives, however busy it is (not a tuned sleep).
        assert until(lambda: m._sampler.ticks >= 15, timeout_s=60)
    r = m.report
    assert r.path.parent == tmp_path / "runs"
    assert Report.load(r.path) == r
    header, rows = read_samples(r.path / "samples.csv")
    assert header[:3] == ["t_s", "cpu0_j", "dram0_j"] and "rss_bytes" in header
    assert len(rows) >= 15
    assert float(rows[-1][1]) == pytest.approx(r.channels[0].energy_j)
    events = [json.loads(line)["event"] for line in (r.path / "events.jsonl").open()]
    assert events[0] == "start" and events[-1] == "stop"
    ledger = (tmp_path / "runs" / "runs.csv").read_text().splitlines()
    assert len(ledger) == 2 and r.run_id in ledger[1]


def test_decorator_sync_and_async(rapl40: FakePowercap) -> None:
    @measure("infer", powercap_root=rapl40.root, region="SE")
    def infer(x: int) -> int:
        time.sleep(0.1)
        return x * 2

    @measure(powercap_root=rapl40.root, region="SE")
    async def ainfer(x: int) -> int:
        await asyncio.sleep(0.1)
        return x + 1

    assert infer(2) == 4 and infer.last_report.name == "infer"
    first = infer.last_report
    assert infer(3) == 6 and infer.last_report.run_id != first.run_id
    assert asyncio.run(ainfer(1)) == 2
    assert ainfer.last_report.name.endswith("ainfer")
    expected_j = 45.0 * ainfer.last_report.duration_s
    assert abs(ainfer.last_report.total_energy_j - expected_j) \
        <= 0.1 * expected_j + rapl40.lag_j(45.0)


def test_bare_decorator(rapl40: FakePowercap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYMETER_POWERCAP_ROOT", str(rapl40.root))
    monkeypatch.setenv("ENERGYMETER_REGION", "SE")

    @measure
    def work() -> str:
        return "done"

    assert work() == "done" and work.last_report.name.endswith("work")
    assert work.last_report.settings["origins"]["region"] == "env"


def test_exception_marks_failed_and_propagates(rapl40: FakePowercap) -> None:
    m = measure("boom", powercap_root=rapl40.root, region="SE")
    with pytest.raises(ZeroDivisionError), m, m.phase("open-phase"):
        1 / 0  # noqa: B018
    assert m.report.status == "failed"
    assert [p.name for p in m.report.phases] == ["open-phase"]
    m2 = measure("ctrl-c", powercap_root=rapl40.root, region="SE")
    with pytest.raises(KeyboardInterrupt), m2:
        raise KeyboardInterrupt
    assert m2.report.status == "interrupted"


def test_sync_runs_before_every_boundary_read(rapl40: FakePowercap) -> None:
    calls: list[float] = []
    with measure("sync", powercap_root=rapl40.root, region="SE",
                 sync=lambda: calls.append(time.monotonic())) as m:
        assert len(calls) == 1
        with m.phase("p"):
            pass
        m.log(step=1)
    assert len(calls) == 5  # start, phase enter, phase exit, log, stop


def test_misuse_and_bad_settings(rapl40: FakePowercap) -> None:
    m = measure("x", powercap_root=rapl40.root, region="SE")
    with pytest.raises(UsageError, match="phase"):
        m.log(a=1)
    with pytest.raises(UsageError):
        m.stop()
    with pytest.raises(ConfigError, match="pue"):
        measure("x", pue=0.5)
    with pytest.raises(ConfigError, match="XX"):
        measure("x", region="XX").start()


def test_probe_error_mid_run_becomes_warning(rapl40: FakePowercap) -> None:
    with measure("garbled", powercap_root=rapl40.root, region="SE", interval_s=0.02) as m:
        time.sleep(0.1)
        rapl40.stop()
        rapl40.write_raw("package-0", "garbage")
        time.sleep(0.2)
    r = m.report
    assert r.status == "completed"
    # The zone alone is out, and the report says since when; DRAM goes on.
    about = [w for w in r.warnings if w.startswith("channel cpu0 (rapl)")]
    assert any("garbage" in w for w in about)
    assert any("suspended" in w for w in about)
    assert any("had not recovered" in w for w in about)
    assert not any("dram0" in w for w in r.warnings)


def test_forked_child_never_writes_parent_run(rapl40: FakePowercap) -> None:
    with measure("fork", powercap_root=rapl40.root, region="SE", interval_s=0.01) as m:
        time.sleep(0.1)
        pid = os.fork()
        if pid == 0:  # the child's meter is inert: log(), phase() and stop() do nothing
            code = 1
            try:
                m.log(child=True)
                with m.phase("in-child"):
                    pass
                code = 0 if m.stop() is None else 2
            except BaseException:  # any exception is a failure of the test (exit code 1)
                code = 1
            time.sleep(0.2)
            os._exit(code)
        time.sleep(0.3)
        assert os.waitpid(pid, 0)[1] == 0
    r = m.report
    header, rows = read_samples(r.path / "samples.csv")
    times = [float(row[0]) for row in rows]
    assert times == sorted(times)  # no duplicated or interleaved rows from the child
    text = (r.path / "samples.csv").read_text()
    assert text.count("t_s,") == 1
    assert len(list((r.path.parent).glob("*-fork-*"))) == 1
    assert not r.logs and not r.phases


def test_killed_run_is_rebuilt_as_interrupted(rapl40: FakePowercap, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import time
        from energymeter import measure
        with measure("victim", out={str(out)!r}, powercap_root={str(rapl40.root)!r},
                     region="SE") as m:
            with m.phase("done-phase"):
                time.sleep(0.2)
            print("ready", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(2.0)  # rows are on disk within FLUSH_EVERY_S (1 s) of being taken
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_dir,) = out.glob("*-victim-*")
    assert not (run_dir / "report.json").exists()
    r = Report.load(run_dir)
    assert r.status == "interrupted"
    assert r.duration_s > 1.0
    expected_j = 40.0 * r.duration_s
    assert abs(r.channels[0].energy_j - expected_j) <= 0.05 * expected_j + rapl40.lag_j(40.0)
    assert [p.name for p in r.phases] == ["done-phase"]
    assert any("rebuilt from samples.csv" in w for w in r.warnings)
    assert r.carbon["region"] == "SE" and r.carbon["emissions_g"] > 0


def test_cpu_time_counts_children_too_short_to_sample(rapl40: FakePowercap) -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    with measure("short-child", powercap_root=rapl40.root, region="SE",
                 gauge_interval_s=30.0) as m:  # no gauge read during the child's life
        subprocess.run([sys.executable, "-c", burn], check=True)
    assert m.report.resources["cpu_time_s"] >= 0.3


def test_unwritable_run_directory_keeps_the_report_in_memory(rapl40: FakePowercap) -> None:
    import shutil

    m = measure("disk", powercap_root=rapl40.root, region="SE")
    with m:
        time.sleep(0.05)
        shutil.rmtree(m.path)  # the run directory vanishes under us
    assert m.report.status == "completed" and m.report.total_energy_j > 0
    assert "could not be written" in m.report.warnings[-1]


def test_log_accepts_numpy_and_non_finite_values(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    with measure("np-log", powercap_root=tmp_path / "absent", region="SE") as m:
        m.log(loss=np.float32(0.5), step=np.int64(3), acc=np.array([0.25, 1.0]),
              grad=float("nan"), ok=np.bool_(True), lr=float("inf"))
    r = m.report
    assert not any("could not be written" in w for w in r.warnings)
    assert r.logs[0]["metrics"] == {"loss": 0.5, "step": 3, "acc": [0.25, 1.0], "grad": None,
                                    "ok": True, "lr": None}
    assert Report.load(r.path) == r
    (event,) = [json.loads(line) for line in (r.path / "events.jsonl").open()
                if '"log"' in line]
    assert event["metrics"]["loss"] == 0.5 and event["metrics"]["grad"] is None


def test_runs_leave_no_file_descriptor_open(tmp_path: Path) -> None:
    import shutil

    def run(vanish: bool = False) -> None:
        with measure("fds", powercap_root=tmp_path / "absent", region="SE") as m:
            if vanish:  # the report cannot be written
                shutil.rmtree(m.path)

    run()  # discovery opens (and caches) the probes' files once
    before = len(os.listdir("/proc/self/fd"))
    for i in range(6):
        run(vanish=i % 2 == 1)
    assert len(os.listdir("/proc/self/fd")) == before


def test_relative_out_is_fixed_at_start_when_the_program_changes_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "later").mkdir()
    monkeypatch.chdir(tmp_path)
    with measure("cd", out="rel-runs", powercap_root=tmp_path / "absent", region="SE") as m:
        os.chdir(tmp_path / "later")  # e.g. Hydra moving into its output directory
    r = m.report
    assert not any("could not be written" in w for w in r.warnings)
    assert r.path.is_absolute() and r.path.parent == tmp_path / "rel-runs"
    assert (r.path / "report.json").exists()
    assert (tmp_path / "rel-runs" / "runs.csv").exists()
    assert not (tmp_path / "later" / "rel-runs").exists()


def test_phases_of_concurrent_tasks_and_threads_keep_their_own_times(tmp_path: Path) -> None:
    import threading

    # What each task really waited (a busy machine wakes them late): the phases must match
    # these, within the time a boundary read takes, however late the wake-ups were.
    slept: dict[str, float] = {}

    async def main() -> Meter:
        with measure("async", powercap_root=tmp_path / "absent", region="SE") as m:
            async def task(name: str, seconds: float) -> None:
                with m.phase(name):
                    t0 = time.monotonic()
                    await asyncio.sleep(seconds)
                    slept[name] = time.monotonic() - t0

            with m.phase("outer"):
                await asyncio.gather(task("short", 0.05), task("long", 0.3))
        return m

    r = asyncio.run(main()).report
    phases = {p.name: p for p in r.phases}
    assert slept["short"] >= 0.05 and slept["long"] >= 0.3
    assert phases["short"].duration_s == pytest.approx(slept["short"], abs=0.04)
    assert phases["long"].duration_s == pytest.approx(slept["long"], abs=0.04)
    assert phases["short"].duration_s < phases["long"].duration_s
    assert phases["short"].parent == phases["long"].parent == "outer"

    with measure("threads", powercap_root=tmp_path / "absent", region="SE") as m:
        def loader() -> None:
            with m.phase("load"):
                t0 = time.monotonic()
                time.sleep(0.3)
                slept["load"] = time.monotonic() - t0

        t = threading.Thread(target=loader)
        t.start()
        time.sleep(0.05)
        with m.phase("step"):  # opened and closed while "load" is open in another thread
            time.sleep(0.05)
        t.join()
    phases = {p.name: p for p in m.report.phases}
    assert phases["step"].parent is None and phases["load"].parent is None
    assert phases["load"].duration_s == pytest.approx(slept["load"], abs=0.04)


def test_phase_opened_in_one_thread_and_closed_in_another(tmp_path: Path) -> None:
    import threading

    with measure("handover", powercap_root=tmp_path / "absent", region="SE") as m:
        ph = m.phase("handed-over")
        t = threading.Thread(target=ph.__enter__)
        t.start()
        t.join()
        with m.phase("mine"):
            pass
        ph.__exit__(None, None, None)
        with m.phase("after"):
            pass
    assert [(p.name, p.parent) for p in m.report.phases] == [
        ("handed-over", None), ("mine", None), ("after", None)]


def test_sync_failing_at_stop_still_stops_and_reports(tmp_path: Path) -> None:
    armed = []

    def sync() -> None:  # e.g. torch.cuda.synchronize() after a device-side assert
        if armed:
            raise RuntimeError("CUDA error: device-side assert triggered")

    m = measure("sync-fails", powercap_root=tmp_path / "absent", region="SE", sync=sync)
    with pytest.raises(ValueError, match="the user's error"), m:
        armed.append(True)
        raise ValueError("the user's error")  # not masked by the sync's error
    assert m.report is not None and m.report.status == "failed"
    assert any("device-side assert" in w for w in m.report.warnings)
    assert not m._sampler._thread.is_alive()
    assert (m.report.path / "report.json").exists()


def test_stop_with_an_unknown_status_is_refused_before_anything_ends(tmp_path: Path) -> None:
    m = measure("status", powercap_root=tmp_path / "absent", region="SE").start()
    with pytest.raises(UsageError, match="accepted: completed, failed, interrupted"):
        m.stop("done")
    assert m.stop("failed").status == "failed"  # the run was still running, nothing lost


def test_sys_exit_status(tmp_path: Path) -> None:
    statuses = []
    for code in (0, None, 3, "bad input"):
        m = measure("exit", powercap_root=tmp_path / "absent", region="SE")
        with pytest.raises(SystemExit), m:
            sys.exit(code)
        statuses.append(m.report.status)
    assert statuses == ["completed", "completed", "failed", "failed"]


def test_out_that_is_not_a_directory_is_a_config_error_before_anything_runs(
        tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    m = measure("out", out=tmp_path / "a-file", powercap_root=tmp_path / "absent", region="SE")
    with pytest.raises(ConfigError, match="a-file.*accepted: a directory"):
        m.start()
    assert m._state == "new"


def test_a_start_that_fails_leaves_no_run_directory_and_no_open_file(tmp_path: Path) -> None:
    from energymeter.session import forks

    def sync() -> None:
        raise RuntimeError("no CUDA device")

    with measure("warm", powercap_root=tmp_path / "absent", region="SE"):
        pass  # discovery opens (and caches) the probes' files once
    before = len(os.listdir("/proc/self/fd"))
    m = measure("no-gpu", powercap_root=tmp_path / "absent", region="SE", sync=sync)
    with pytest.raises(RuntimeError, match="no CUDA"), m:
        pass
    assert len(os.listdir("/proc/self/fd")) == before
    assert not list((tmp_path / "runs").glob("*-no-gpu-*"))  # no phantom 'interrupted' run
    assert not forks.registered(m) and m._state == "new"


def test_rebuilding_a_long_run_streams_its_samples(tmp_path: Path) -> None:
    import tracemalloc

    with measure("long", powercap_root=tmp_path / "absent", region="SE") as m:
        pass
    run_dir = m.report.path
    (run_dir / "report.json").unlink()
    header = (run_dir / "samples.csv").read_text().splitlines()[0]
    width = header.count(",")
    with (run_dir / "samples.csv").open("w") as fh:  # 8 hours at 1 Hz, then a torn row
        fh.write(header + "\n")
        fh.writelines(f"{i:.6f}" + f",{i * 10.0}" * width + "\n" for i in range(28_800))
        fh.write("28800.0,12")
    tracemalloc.start()
    r = Report.load(run_dir)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r.duration_s == 28_799.0 and r.overhead["samples"] == 28_800
    assert peak < 5_000_000  # the whole file as rows took 23 MB


def test_rebuild_skips_garbled_sample_rows(tmp_path: Path) -> None:
    with measure("garbled", powercap_root=tmp_path / "absent", region="SE") as m:
        pass
    run_dir = m.report.path
    (run_dir / "report.json").unlink()
    width = (run_dir / "samples.csv").read_text().splitlines()[0].count(",")
    with (run_dir / "samples.csv").open("a") as fh:
        fh.write("2.5" + ",7.0" * width + "\n")
        fh.write("x\x00" + ",??" * width + "\n")  # what a power loss can leave behind
    r = Report.load(run_dir)
    assert r.duration_s == 2.5
    assert "1 unreadable row(s) of samples.csv skipped" in r.warnings


def test_start_end_and_duration_come_from_the_same_boundary_reads(rapl40: FakePowercap) -> None:
    with measure("aligned", powercap_root=rapl40.root, region="SE") as m:
        time.sleep(0.3)
    r = m.report
    assert (r.ended_at - r.started_at).total_seconds() == pytest.approx(r.duration_s, abs=2e-6)
    expected_j = 40.0 * r.duration_s
    assert abs(r.channels[0].energy_j - expected_j) <= 0.01 * expected_j + rapl40.lag_j(40.0)


def test_a_suspended_run_counts_its_skipped_ticks(rapl40: FakePowercap, tmp_path: Path) -> None:
    """SIGSTOP freezes the sampler; the ticks it missed are counted and reported."""
    out = tmp_path / "stopped"
    script = textwrap.dedent(f"""
        import time
        from energymeter import measure
        with measure("frozen", out={str(out)!r}, powercap_root={str(rapl40.root)!r},
                     region="SE", interval_s=0.05) as m:
            print("ready", flush=True)
            time.sleep(2.0)
        print(m.report.overhead["skipped_ticks"], len(m.report.warnings), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=20) == 0
    (run_dir,) = out.glob("*-frozen-*")
    r = Report.load(run_dir)
    assert r.overhead["skipped_ticks"] >= 10  # about 20 ticks of 50 ms in a 1 s freeze
    assert any("sampling ticks were skipped" in w for w in r.warnings)


def test_a_failed_start_leaves_no_live_carbon_poller(tmp_path: Path) -> None:
    import threading

    (tmp_path / "a-file").write_text("")
    env = {**os.environ, "ENERGYMETER_GB_CARBON_URL": "http://127.0.0.1:9"}
    m = measure("leak", out=tmp_path / "a-file", powercap_root=tmp_path / "absent",
                region="GB", carbon_provider="gb", env=env)
    with pytest.raises(ConfigError):
        m.start()
    time.sleep(0.3)  # the poller is stopped with a short join
    assert not [t for t in threading.enumerate() if t.name.startswith("energymeter-carbon")]


def test_a_full_disk_mid_run_never_reaches_the_users_code(tmp_path: Path) -> None:
    """events.jsonl and samples.csv on a full device (/dev/full: every write is ENOSPC): the
    user's own exception comes out unchanged and the report is kept in memory."""
    m = measure("full", out=tmp_path, powercap_root=tmp_path / "absent", region="SE",
                interval_s=0.02)
    with pytest.raises(ValueError, match="the user's own"), m:
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, m._events._fd)
        os.dup2(full, m._writer._fd)
        os.close(full)
        with m.phase("epoch"):
            m.log(loss=0.5)
            time.sleep(1.2)  # the sampler flushes (and fails) meanwhile
        raise ValueError("the user's own error")
    r = m.report
    assert r.status == "failed" and [p.name for p in r.phases] == ["epoch"]
    assert r.logs[0]["metrics"] == {"loss": 0.5}
    assert any("events.jsonl could not be written" in w for w in r.warnings)
    assert any("samples.csv could not be written" in w for w in r.warnings)


def test_other_tenants_cpu_is_reported_and_attributed(tmp_path: Path) -> None:
    """A process outside the measured tree burns a core during the run: the report says so and
    gives the tree's share of the CPU energy beside the machine-wide figure."""
    burn = f"{sys.executable} -c 'while True: pass'"
    shell = subprocess.run(["sh", "-c", f"{burn} >/dev/null 2>&1 & echo $!"], check=True,
                           capture_output=True, text=True)  # orphaned: not in our tree
    burner = int(shell.stdout)
    try:
        time.sleep(0.2)
        with measure("tenant", out=tmp_path, powercap_root=tmp_path / "absent",
                     region="SE") as m:
            time.sleep(1.5)
    finally:
        os.kill(burner, signal.SIGKILL)
    r = m.report
    a = r.cpu_attribution
    assert a is not None and a["machine_busy_cpu_s"] > 1.0
    assert a["other_share"] > 0.6 and a["tree_share"] < 0.4
    cpu_j = r.energy_j["by_kind"]["cpu"]
    assert a["cpu_energy_j"] == cpu_j  # the machine figure is unchanged
    assert a["attributed_cpu_energy_j"] == pytest.approx(a["tree_share"] * cpu_j)
    assert any("other processes used" in w for w in r.warnings)
    assert Report.load(r.path).cpu_attribution == a  # round trip


def test_attribution_is_the_trees_share_of_busy_cpu_time(rapl40: FakePowercap) -> None:
    def spin() -> None:
        end = time.process_time() + 0.8
        while time.process_time() < end:
            pass

    with measure("alone", powercap_root=rapl40.root, region="SE") as m:
        spin()
    a = m.report.cpu_attribution
    assert a["tree_cpu_s"] >= 0.75 and a["machine_busy_cpu_s"] >= a["tree_cpu_s"] * 0.9
    assert a["tree_share"] == pytest.approx(min(1.0, a["tree_cpu_s"] / a["machine_busy_cpu_s"]))
    assert a["other_share"] == pytest.approx(1 - a["tree_share"])
    assert a["attributed_cpu_energy_j"] == pytest.approx(a["tree_share"] * a["cpu_energy_j"])


def test_a_sync_that_fails_at_a_phase_end_never_replaces_the_users_exception(
        tmp_path: Path) -> None:
    calls = []

    def sync() -> None:
        calls.append(1)
        if len(calls) > 2:  # start and the phase's start work; then the device fails
            raise RuntimeError("CUDA error: device-side assert triggered")

    m = measure("cuda", out=tmp_path, powercap_root=tmp_path / "absent", region="SE", sync=sync)
    with pytest.raises(ValueError, match="the user's own"), m, m.phase("step"):
        raise ValueError("the user's own error")
    assert m.report.status == "failed" and [p.name for p in m.report.phases] == ["step"]
    assert any("sync before the end of phase 'step' failed" in w for w in m.report.warnings)


def test_a_boundary_read_racing_a_stop_is_dropped_not_raised(tmp_path: Path) -> None:
    """SIGTERM's thread began the stop between log()'s look at the run's
    state and its boundary read; log() raised "meter is stopping" into the program, which
    then died before the report was written. Here the stop is held inside its final sync
    (after the state became "stopping"), exactly in that window."""
    import threading

    in_final_sync, release = threading.Event(), threading.Event()

    def sync() -> None:
        if threading.current_thread().name == "stopper":
            in_final_sync.set()
            assert release.wait(30)

    m = measure("race", powercap_root=tmp_path / "absent", region="SE", sync=sync).start()
    m.log(step=0)
    stopper = threading.Thread(target=m.stop, args=("interrupted",), name="stopper")
    stopper.start()
    try:
        assert in_final_sync.wait(30)
        # What log(), phase() and end_phase() call once they have seen a running meter.
        assert m._boundary("log()") is None
        with m.phase("late"):  # nothing raised, nothing recorded
            pass
    finally:
        release.set()
        stopper.join(30)
    r = m.report
    assert r.status == "interrupted" and [e["metrics"] for e in r.logs] == [{"step": 0}]
    assert not r.phases and (r.path / "report.json").is_file()
    with pytest.raises(UsageError, match="is stopped"):  # after the stop: the user's mistake
        m._boundary("log()")


def test_warn_puts_a_caveat_on_the_runs_record_once(tmp_path: Path) -> None:
    with measure("caveat", powercap_root=tmp_path / "absent", region="SE") as m:
        m.warn("the data loader was cached from an earlier run")
        m.warn("the data loader was cached from an earlier run")
    assert m.report.warnings.count("the data loader was cached from an earlier run") == 1
    saved = json.loads((m.report.path / "report.json").read_text())
    assert "the data loader was cached from an earlier run" in saved["warnings"]
    with pytest.raises(UsageError, match="warn\\(\\) works only while it runs"):
        m.warn("too late")
