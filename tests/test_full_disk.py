"""A real full disk and a real read-only file system: a small tmpfs
filled up gives ENOSPC, one remounted read-only gives EROFS. Mounting needs root (CI runs as
root); elsewhere these tests are skipped, saying why.

The library raises one typed error for an ``out`` it cannot write, leaving nothing behind;
``energymeter run`` runs the command all the same (measured in memory, said so once), its
output and exit code untouched; a ledger row lost to a full disk is a warning on the report."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from energymeter import measure
from energymeter.errors import ConfigError, EnergyMeterError, OutputError
from energymeter.session.meter import Meter
from energymeter.store import append_ledger
from tests.cli_output import clean_stderr
from tests.timing import until

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("run_id", "name", "payload")


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no `mount` here: a real full disk needs a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(where)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = done.stderr.strip() or "mount failed"
        pytest.skip(f"a small tmpfs cannot be mounted here ({why}): a real full disk needs one "
                    "(CI runs as root)")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: room for a run, until :func:`fill` fills it."""
    where = tmp_path / "fs"
    _mount_tmpfs(where, "256k")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def full_fs(small_fs: Path) -> Path:
    fill(small_fs)
    return small_fs


@pytest.fixture
def read_only_fs(small_fs: Path) -> Path:
    done = subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {done.stderr.strip()}")
    return small_fs


def fill(fs: Path, name: str = "filler") -> None:
    """Fill the file system of ``fs``: every write that needs a new block fails with ENOSPC."""
    fd = os.open(fs / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _quiet_meter(out: Path, tmp_path: Path, **kwargs: object) -> Meter:
    return measure("full", out=out, powercap_root=tmp_path / "absent", region="SE",
                   interval_s=0.02, **kwargs)


def _our_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name in ("energymeter-sampler", "energymeter-carbon")]


# -- the library: one typed error, nothing left behind -----------------------------------------
@pytest.mark.parametrize("fs_kind", ["full", "read-only"])
def test_start_on_an_unwritable_out_raises_output_error_and_leaves_nothing(
        fs_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    fs = request.getfixturevalue("full_fs" if fs_kind == "full" else "read_only_fs")
    before = sorted(os.listdir(fs))
    m = _quiet_meter(fs, tmp_path)
    ran = False
    with pytest.raises(OutputError) as info, m:
        ran = True
    assert not ran  # the block never runs: nothing was measured
    exc = info.value
    assert isinstance(exc, ConfigError) and isinstance(exc, OSError)
    assert isinstance(exc, EnergyMeterError)
    why = "No space left on device" if fs_kind == "full" else "Read-only file system"
    assert exc.errno == (errno.ENOSPC if fs_kind == "full" else errno.EROFS)
    text = str(exc)
    assert why in text and str(fs) in text and "accepted: a directory" in text
    assert "Errno" not in text and "\n" not in text
    assert sorted(os.listdir(fs)) == before  # the run directory was removed
    assert m.path is None
    assert until(lambda: not _our_threads()), _our_threads()


def test_fallback_to_memory_measures_with_no_file(full_fs: Path, tmp_path: Path) -> None:
    """``energymeter run``'s mode: the run goes on in memory, with phases and logs, and says
    that nothing is saved and why."""
    with _quiet_meter(full_fs, tmp_path, fallback_to_memory=True) as m, m.phase("epoch"):
        m.log(loss=0.5)
        time.sleep(0.1)
    r = m.report
    assert r is not None and r.status == "completed" and r.path is None and m.path is None
    assert [p.name for p in r.phases] == ["epoch"] and r.logs[0]["metrics"] == {"loss": 0.5}
    (said,) = [w for w in r.warnings if "measured in memory only" in w]
    assert "No space left on device" in said and str(full_fs) in said
    m.set(final=1)  # after stop: in memory, no file to rewrite
    assert m.report.values == {"final": 1}
    assert sorted(os.listdir(full_fs)) == ["filler"]


# -- the ledger (6b) ---------------------------------------------------------------------------
def test_a_ledger_row_lost_to_a_full_disk_is_a_warning(small_fs: Path, tmp_path: Path) -> None:
    """The disk fills during the run: the ledger row and report.json cannot be written; the
    report in memory says both, and why."""
    with _quiet_meter(small_fs, tmp_path) as m:
        fill(small_fs)
    r = m.report
    assert r is not None and r.status == "completed"
    (ledger,) = [w for w in r.warnings if "ledger row was not written" in w]
    assert "No space left on device" in ledger and "runs.csv" in ledger
    (report,) = [w for w in r.warnings if "report.json could not be written" in w]
    assert "No space left on device" in report
    assert not (r.path / "report.json").exists()
    assert "Meter.report" not in " ".join(r.warnings)


def test_a_full_disk_never_leaves_a_torn_ledger_row(small_fs: Path) -> None:
    """A full disk takes the part of a row that fits, then refuses the rest: the part is cut
    off again, so the next row is not glued to it."""
    append_ledger(small_fs, {"run_id": "0", "name": "a", "payload": "x"}, COLUMNS)
    ledger = small_fs / "runs.csv"
    size = ledger.stat().st_size
    with ledger.open("a") as fh:  # end the ledger 100 bytes short of its block
        fh.write("1,b," + "y" * (4096 - 100 - size - 5) + "\n")
    before = ledger.read_bytes()
    assert len(before) == 4096 - 100
    fill(small_fs)
    with pytest.raises(OSError) as info:
        append_ledger(small_fs, {"run_id": "2", "name": "c", "payload": "z" * 500}, COLUMNS)
    assert info.value.errno == errno.ENOSPC
    assert ledger.read_bytes() == before
    (small_fs / "filler").unlink()
    append_ledger(small_fs, {"run_id": "3", "name": "d", "payload": "w"}, COLUMNS)
    assert ledger.read_text().splitlines()[-1] == "3,d,w"


# -- the CLI: the command runs, its output and exit code untouched -----------------------------
def _run_cli(out: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYMETER_")}
    env.update(ENERGYMETER_POWERCAP_ROOT=str(cwd / "absent"), ENERGYMETER_REGION="SE",
               ENERGYMETER_INTERVAL_S="0.05",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", "energymeter", "run", "--out", str(out), "--",
                           *command], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("fs_kind", ["full", "read-only"])
def test_run_on_an_unwritable_out_still_runs_the_command(
        fs_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    fs = request.getfixturevalue("full_fs" if fs_kind == "full" else "read_only_fs")
    before = sorted(os.listdir(fs))
    done = _run_cli(fs, sys.executable, "-c",
                    "import sys; print('the output', flush=True); sys.exit(3)", cwd=tmp_path)
    assert done.stdout == "the output\n"
    assert done.returncode == 3  # the command's own
    lines = clean_stderr(done.stderr)
    why = "No space left on device" if fs_kind == "full" else "Read-only file system"
    said = [line for line in lines if why in line]
    assert len(said) == 1, done.stderr  # one line for the problem
    assert "measured in memory only" in said[0] and str(fs) in said[0]
    assert lines[-1] == "  nothing was saved: this summary is all there is"
    assert "report.json" not in done.stderr
    assert any(" failed in " in line for line in lines)  # the summary
    assert sorted(os.listdir(fs)) == before


def test_run_on_a_disk_that_fills_during_the_run(small_fs: Path, tmp_path: Path) -> None:
    """The command fills the disk: its output and exit code pass; stderr says once each that
    the ledger row and report.json were not written, and names the partial run directory,
    never a report.json that does not exist."""
    filler = ("import os, sys\n"
              f"fd = os.open({str(small_fs / 'filler')!r}, os.O_WRONLY | os.O_CREAT)\n"
              "try:\n"
              "    while True: os.write(fd, bytes(4096))\n"
              "except OSError: pass\n"
              "print('filled')\n"
              "sys.exit(0)\n")
    done = _run_cli(small_fs, sys.executable, "-c", filler, cwd=tmp_path)
    assert done.stdout == "filled\n" and done.returncode == 0
    lines = clean_stderr(done.stderr)
    for problem in ("ledger row was not written", "report.json could not be written"):
        said = [line for line in lines if problem in line]
        assert len(said) == 1 and "No space left on device" in said[0], done.stderr
    (run_dir,) = [p for p in small_fs.iterdir() if p.is_dir()]
    assert not (run_dir / "report.json").exists()
    assert not any(line.startswith("  report: ") for line in lines)
    assert lines[-1].startswith(f"  run: {run_dir} (no report.json")


def test_a_summary_never_names_a_report_json_that_was_not_written(tmp_path: Path) -> None:
    """In the library: the summary of a run whose files could not be
    written named its report.json all the same."""
    with measure("vanish", out=tmp_path / "out", powercap_root=tmp_path / "absent",
                 region="SE") as m:
        shutil.rmtree(m.path)
    lines = m.report.summary().splitlines()
    assert not any(line.startswith("  report: ") for line in lines)
    assert lines[-1] == f"  nothing was saved (the run directory {m.report.path} is gone)"
    with measure("partial", out=tmp_path / "out", powercap_root=tmp_path / "absent",
                 region="SE") as m:
        pass
    (m.report.path / "report.json").unlink()  # as a disk that refused it leaves the run
    last = m.report.summary().splitlines()[-1]
    assert last.startswith(f"  run: {m.report.path} (no report.json: its samples.csv")
