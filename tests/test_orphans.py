"""Processes a measured command leaves running when it exits: ``energymeter run --
sh -c '(sleep 6)& exit 5'`` used to measure 0.02 s and say nothing. They are now found (this
process is their subreaper), named in a warning, reaped, and with ``wait_orphans`` measured
until they end. No tuned sleeps: every wait is a deadline with polls."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from energymeter.errors import ConfigError
from energymeter.probes.proc import child_pids, read_pid_stat
from energymeter.session.command import run_command
from energymeter.session.signals import Adoption, _group_members, child_subreaper
from energymeter.settings import resolve_settings
from tests.timing import until

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

pytestmark = pytest.mark.skipif(child_subreaper() is None,
                                reason="needs Linux's PR_SET_CHILD_SUBREAPER")

#: A grandchild that runs this long (the run must last at least as long with wait_orphans).
WORK_S = 1.0

# Forks twice and leaves the second child in a session of its own (a classic daemon), which
# writes its pid, works WORK_S seconds (or until signalled) and writes "done".
DAEMON = textwrap.dedent(f"""\
    import os, sys, time
    folder = sys.argv[1]
    if os.fork():
        sys.exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    with open(os.path.join(folder, "pid.tmp"), "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(os.path.join(folder, "pid.tmp"), os.path.join(folder, "pid"))
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else {WORK_S})
    open(os.path.join(folder, "done"), "w").close()
    """)


def _settings(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    return {"out": tmp_path / "runs", "region": "SE", "powercap_root": tmp_path / "absent"}


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended and been reaped (no zombie left)."""
    return read_pid_stat(pid) is None


def _zombie_children() -> list[int]:
    zombies = []
    for pid in child_pids(os.getpid()):
        stat = read_pid_stat(pid)
        if stat is not None and stat.zombie:
            zombies.append(pid)
    return zombies


def _orphan_warning(report) -> str:  # type: ignore[no-untyped-def]
    found = [w for w in report.warnings if "still running when it exited" in w]
    assert len(found) == 1, report.warnings
    return found[0]


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # ended already
        os.kill(pid, signal.SIGKILL)
    assert until(lambda: _gone(pid)), f"pid {pid} was left a zombie"


def test_a_background_job_left_running_is_named_in_a_warning(tmp_path: Path) -> None:
    """The reproducer: the run still ends with the command (exit 5), and its report says
    which process went on unmeasured and how to measure it; the process is reaped later."""
    before = set(child_pids(os.getpid()))
    # Once the job has become `sleep` (its fork is named as its shell until then).
    script = "sleep 30 & until read c < /proc/$!/comm && [ $c = sleep ]; do :; done; exit 5"
    result = run_command(["sh", "-c", script], **_settings(tmp_path))
    assert result.exit_code == 5
    assert result.report.status == "failed"
    assert result.report.exit_code == 5
    warning = _orphan_warning(result.report)
    match = re.search(r"pid (\d+): sleep 30", warning)
    assert match, warning
    assert warning.startswith("1 process the command started was still running")
    assert "--wait-orphans" in warning
    assert result.report.settings["wait_orphans"] is False
    pid = int(match.group(1))
    assert read_pid_stat(pid) is not None and not read_pid_stat(pid).zombie  # still working
    # It is ours (adopted), and reaped by us once it ends: no zombie is left behind.
    _kill_and_reap(pid)
    assert not set(_zombie_children()) - before
    assert child_subreaper() is False  # put back as it was


def test_wait_orphans_measures_until_they_end(tmp_path: Path) -> None:
    """With wait_orphans the run lasts until the grandchild's work is done, the exit code is
    still the command's own, and every adopted process is reaped."""
    done = tmp_path / "done"
    before = set(child_pids(os.getpid()))
    result = run_command(["sh", "-c", f"(sleep {WORK_S}; : > {done})& exit 5"],
                         wait_orphans=True, **_settings(tmp_path))
    assert done.exists()  # the grandchild finished before the run ended
    assert result.exit_code == 5
    assert result.report.duration_s >= WORK_S
    warning = _orphan_warning(result.report)
    assert "measured until it ended" in warning
    assert result.report.settings["wait_orphans"] is True
    assert set(child_pids(os.getpid())) <= before  # nothing of the command is left: reaped
    assert child_subreaper() is False


def test_wait_orphans_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "ENERGYMETER_WAIT_ORPHANS": "yes"}
    result = run_command(["sh", "-c", f"(sleep {WORK_S})& exit 0"], env=env,
                         **_settings(tmp_path))
    assert result.exit_code == 0
    assert result.report.duration_s >= WORK_S
    assert result.report.settings["origins"]["wait_orphans"] == "env"


@pytest.mark.parametrize("value", ["maybe", "2", ""])
def test_wait_orphans_accepts_true_or_false_only(value: str) -> None:
    if value == "":  # empty: not set
        assert resolve_settings(env={"ENERGYMETER_WAIT_ORPHANS": value}).wait_orphans is False
        return
    with pytest.raises(ConfigError, match="accepted: 1/true/yes/on or 0/false/no/off"):
        resolve_settings(env={"ENERGYMETER_WAIT_ORPHANS": value})


def test_a_daemonised_grandchild_is_noticed(tmp_path: Path) -> None:
    """A daemon (fork, setsid, fork) leaves the command's session and group: the subreaper
    still adopts it, so it is named, and waited for with wait_orphans."""
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    result = run_command([PY, str(script), str(tmp_path), "30"], **_settings(tmp_path))
    assert result.exit_code == 0
    pid = int((tmp_path / "pid").read_text())
    assert f"pid {pid}: " in _orphan_warning(result.report)
    _kill_and_reap(pid)

    (tmp_path / "pid").unlink()
    result = run_command([PY, str(script), str(tmp_path)], wait_orphans=True,
                         **_settings(tmp_path))
    assert (tmp_path / "done").exists()
    assert result.report.duration_s >= WORK_S
    assert not _zombie_children()


def test_a_command_leaving_nothing_has_no_warning(tmp_path: Path) -> None:
    result = run_command(["sh", "-c", "sleep 0.1 & wait; exit 3"], wait_orphans=True,
                         **_settings(tmp_path))
    assert result.exit_code == 3
    assert not [w for w in result.report.warnings if "still running" in w]


def test_children_we_had_before_are_not_ours_to_count(tmp_path: Path) -> None:
    """A child of the host program that predates the run is neither counted nor reaped."""
    own = subprocess.Popen(["sleep", "30"])
    try:
        result = run_command(["true"], **_settings(tmp_path))
        assert not [w for w in result.report.warnings if "still running" in w]
        assert own.poll() is None
    finally:
        own.kill()
        assert own.wait(timeout=10) == -signal.SIGKILL  # its status was left to its Popen


def test_children_another_thread_starts_meanwhile_are_left_to_it(tmp_path: Path) -> None:
    """Found in review: a child another thread of the host started during the run was taken
    for the command's: reaped (its Popen saw exit status 0 instead of 7), and named in the
    warning while it ran. The command's processes carry the run's id in their environment;
    the other thread's do not."""
    import threading

    codes: dict[str, int] = {}
    started = threading.Event()
    release = threading.Event()

    def other_thread() -> None:
        quick = subprocess.Popen(["sh", "-c", "exit 7"])
        slow = subprocess.Popen(["sleep", "30"])
        started.set()
        release.wait(30)
        codes["quick"] = quick.wait(timeout=10)
        slow.kill()
        codes["slow"] = slow.wait(timeout=10)

    thread = threading.Thread(target=other_thread)
    # The command waits until the other thread has started both children, then exits.
    marker = tmp_path / "go"
    waiter = threading.Thread(target=lambda: (started.wait(30), marker.touch()))
    waiter.start()
    thread.start()
    try:
        result = run_command(["sh", "-c", f"while [ ! -e {marker} ]; do sleep 0.01; done"],
                             **_settings(tmp_path))
    finally:
        release.set()
        thread.join(30)
        waiter.join(30)
    assert not [w for w in result.report.warnings if "still running" in w]
    assert codes == {"quick": 7, "slow": -signal.SIGKILL}


def test_without_a_subreaper_the_command_group_is_looked_at() -> None:
    """Where this process cannot be a subreaper only the command's own group is searched."""
    proc = subprocess.Popen(["sleep", "30"], process_group=0) if sys.version_info >= (3, 11) \
        else subprocess.Popen(["sleep", "30"], preexec_fn=os.setpgrp)
    try:
        assert _group_members(proc.pid, ()) == [proc.pid]
        assert _group_members(proc.pid, (proc.pid,)) == []
        adoption = Adoption(enabled=True)  # not entered: no subreaper
        adoption.group = proc.pid
        assert adoption.left_behind() == [proc.pid]
    finally:
        proc.kill()
        proc.wait(timeout=10)


# -- the command line ----------------------------------------------------------------------------
def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYMETER_")}
    env.update(ENERGYMETER_OUT=str(tmp_path / "runs"), ENERGYMETER_REGION="SE",
               ENERGYMETER_POWERCAP_ROOT=str(tmp_path / "absent"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p))
    env.update(extra)
    return env


def _report(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    import json

    (path,) = (tmp_path / "runs").glob("*/report.json")
    return json.loads(path.read_text())


def test_cli_wait_orphans_passes_output_and_exit_code_through(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PY, "-m", "energymeter.cli", "run", "--wait-orphans", "--", "sh", "-c",
         f"echo out; (sleep {WORK_S}; echo late)& exit 5"],
        env=_env(tmp_path), capture_output=True, timeout=60, start_new_session=True)
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout == b"out\nlate\n"  # the grandchild's output too, untouched
    report = _report(tmp_path)
    assert report["duration_s"] >= WORK_S
    assert report["exit_code"] == 5
    assert any("measured until it ended" in w for w in report["warnings"])


@pytest.mark.parametrize("daemon", [False, True], ids=["background-job", "daemon"])
def test_cli_signals_reach_the_processes_waited_for(tmp_path: Path, daemon: bool) -> None:
    """SIGTERM to energymeter while it waits for what the command left running is passed on
    to it (in the command's group, or by itself for a daemon in its own session): the run
    ends, interrupted, with the command's exit code."""
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    left = (f"{PY} {script} {tmp_path} 60;" if daemon else "(exec sleep 60)&")
    proc = _waiting_run(tmp_path, f"{left} exit 5")
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 5
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    report = _report(tmp_path)
    assert report["status"] == "interrupted"
    assert report["exit_code"] == 5
    if daemon:
        pid = int((tmp_path / "pid").read_text())
        assert until(lambda: _gone(pid))
        assert not (tmp_path / "done").exists()  # ended by the signal, not by finishing


def test_cli_a_second_interrupt_ends_the_wait(tmp_path: Path) -> None:
    """A background job of ``sh`` ignores SIGINT, so the first Ctrl-C cannot end it: the
    second ends the wait (and the run, interrupted, with the command's code); the warning
    says what was still running."""
    proc = _waiting_run(tmp_path, "(exec sleep 60)& exit 5",
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        proc.send_signal(signal.SIGINT)
        _read_until(proc, b"send it again to stop waiting")
        # From another sender: the same sender's repeat within 0.2 s counts as the same signal.
        subprocess.run(["kill", "-INT", str(proc.pid)], check=True)
        assert proc.wait(timeout=30) == 5
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    report = _report(tmp_path)
    assert report["status"] == "interrupted"
    (warning,) = [w for w in report["warnings"] if "still running when it exited" in w]
    assert "until the run was interrupted with 1 still running" in warning
    # Named by its command line when the command exited: on a busy machine the subshell may
    # not have exec'd sleep yet ("sh -c (exec sleep 60)..."), or be in the middle of it (its
    # name, "sleep", where the command line reads empty).
    match = re.search(r"pid (\d+): (sleep 60|sleep\)|sh -c \(exec sleep 60\))", warning)
    assert match, warning
    with contextlib.suppress(ProcessLookupError):  # init's child now, not ours
        os.kill(int(match.group(1)), signal.SIGKILL)


def _waiting_run(tmp_path: Path, shell: str, **popen: Any) -> subprocess.Popen:  # type: ignore[type-arg]
    """``energymeter run --wait-orphans -- sh -c SHELL`` in a session of its own, once it
    says it measures until the processes the command left have ended."""
    proc = subprocess.Popen(
        [PY, "-m", "energymeter.cli", "run", "--wait-orphans", "--", "sh", "-c", shell],
        env=_env(tmp_path), stderr=subprocess.PIPE, start_new_session=True, **popen)
    try:
        _read_until(proc, b"measuring until")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc


def _read_until(proc: subprocess.Popen, text: bytes) -> None:  # type: ignore[type-arg]
    """Read ``proc``'s stderr until a line holding ``text`` (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        assert line, f"energymeter ended before saying {text!r}"
        if text in line:
            return
    raise AssertionError(f"energymeter did not say {text!r} in 30 s")
