"""`energymeter run` and `monitor` under job control, timeout, group kills and schedulers:
the command gets each signal exactly once, and a stop/continue is survived."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

# The measured command: counts the SIGTERMs it gets, lives a while after the first, then
# prints the count and exits 0 (a program that checkpoints on SIGTERM behaves like this).
COUNTER = (
    "import signal, time\n"
    "seen = []\n"
    "signal.signal(signal.SIGTERM, lambda *a: seen.append(time.monotonic()))\n"
    "print('ready', flush=True)\n"
    "end = time.monotonic() + 8\n"
    "while time.monotonic() < end and not (seen and time.monotonic() > seen[0] + 1.0):\n"
    "    time.sleep(0.02)\n"
    "print('count', len(seen), flush=True)\n"
)


def _env(out: Path) -> dict[str, str]:
    return {**os.environ, "ENERGYMETER_OUT": str(out), "ENERGYMETER_REGION": "SE",
            "ENERGYMETER_POWERCAP_ROOT": str(out / "absent"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                          if p)}


def _run_cmd(*cmd: str) -> list[str]:
    return [PY, "-m", "energymeter", "run", "--quiet", "--", *cmd]


def _report(out: Path) -> dict:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and (p / "report.json").exists()]
    return json.loads((run_dir / "report.json").read_text())


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"


def _count(stdout: bytes) -> int:
    (line,) = [ln for ln in stdout.decode().splitlines() if ln.startswith("count")]
    return int(line.split()[1])


@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout not found")
def test_timeout_sigterm_reaches_the_command_once(tmp_path: Path) -> None:
    """GNU timeout signals its child (energymeter) and then its whole process group.

    It does so when its time is up and, the same way, when it is itself sent the signal
    (coreutils src/timeout.c, ``cleanup``): that is how the test fires it, once the command is
    ready, so that a loaded machine's slow start cannot make it fire earlier."""
    proc = subprocess.Popen(["timeout", "-s", "TERM", "600", *_run_cmd(PY, "-c", COUNTER)],
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_ready(proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert _count(out) == 1, err.decode()
    assert _report(tmp_path)["status"] == "interrupted"


def test_a_group_kill_reaches_the_command_once(tmp_path: Path) -> None:
    proc = subprocess.Popen(_run_cmd(PY, "-c", COUNTER), env=_env(tmp_path),
                            stdout=subprocess.PIPE, start_new_session=True)
    _wait_ready(proc)
    os.killpg(proc.pid, signal.SIGTERM)  # `kill -TERM -- -PGID`
    out, _ = proc.communicate(timeout=30)
    assert _count(out) == 1
    assert proc.returncode == 0  # the command's own exit code
    assert _report(tmp_path)["status"] == "interrupted"


def test_a_direct_kill_is_forwarded_once(tmp_path: Path) -> None:
    proc = subprocess.Popen(_run_cmd(PY, "-c", COUNTER), env=_env(tmp_path),
                            stdout=subprocess.PIPE, start_new_session=True)
    _wait_ready(proc)
    os.kill(proc.pid, signal.SIGTERM)  # only energymeter: it must pass it on
    out, _ = proc.communicate(timeout=30)
    assert _count(out) == 1


def test_a_scheduler_that_signals_every_process_is_not_forwarded(tmp_path: Path) -> None:
    """slurmstepd (scancel, preemption) signals every process of the step itself."""
    fake_stepd = tmp_path / "bin" / "slurmstepd"  # its comm is what identifies the sender
    fake_stepd.parent.mkdir()
    fake_stepd.symlink_to(PY)
    proc = subprocess.Popen(_run_cmd(PY, "-c", COUNTER), env=_env(tmp_path),
                            stdout=subprocess.PIPE, start_new_session=True)
    _wait_ready(proc)

    (child,) = _command(proc.pid)
    subprocess.run([str(fake_stepd), "-c",
                    f"import os, signal\nfor pid in ({proc.pid}, {child.pid}):\n"
                    "    os.kill(pid, signal.SIGTERM)"], check=True)
    out, _ = proc.communicate(timeout=30)
    assert _count(out) == 1
    assert _report(tmp_path)["status"] == "interrupted"


def test_run_survives_stop_and_continue(tmp_path: Path) -> None:
    """SIGSTOP/SIGCONT (or Ctrl-Z, fg) of energymeter: it goes on waiting for the command
    (it crashed with OSError Errno 22 and orphaned the child)."""
    proc = subprocess.Popen(_run_cmd(PY, "-c", "import time; print('ready', flush=True); "
                                     "time.sleep(2.5)"),
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    _wait_ready(proc)
    for _ in range(3):
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.4)  # longer than the wait's 0.25 s timeout
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.1)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert _report(tmp_path)["status"] == "completed"


def test_monitor_survives_stop_and_continue(tmp_path: Path) -> None:
    proc = subprocess.Popen([PY, "-m", "energymeter", "monitor", "--refresh", "0.2",
                             "--duration", "2.5", "--quiet"],
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(0.6)
    os.kill(proc.pid, signal.SIGCONT)
    begun = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert time.monotonic() - begun > 0.4  # it did not end early at the continue
    assert _report(tmp_path)["status"] == "completed"


def test_ctrl_c_on_a_terminal_reaches_the_command_once(tmp_path: Path) -> None:
    """In the foreground of a terminal the command shares energymeter's process group: the
    terminal's SIGINT reaches it directly and is not forwarded again."""
    import pty

    counter = COUNTER.replace("SIGTERM", "SIGINT")
    pid, master = pty.fork()
    if pid == 0:  # the child: session leader on the pty, the terminal's foreground job
        try:
            os.execvpe(PY, _run_cmd(PY, "-c", counter), _env(tmp_path))
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + 30
    try:
        while b"ready" not in output and time.monotonic() < deadline:
            output += os.read(master, 1024)
        os.write(master, b"\x03")  # Ctrl-C
        while time.monotonic() < deadline:  # read to the end: EIO once every writer exited
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(master)
    assert b"count 1" in output, output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0


def test_forwarder_rules() -> None:
    from energymeter.session.signals import SI_KERNEL, SI_USER, Forwarder, Received

    now = [100.0]
    same_group = Forwarder(os.getpid(), group=None, clock=lambda: now[0])
    assert not same_group.should_forward(Received(signal.SIGINT, SI_KERNEL, 0))  # terminal
    assert same_group.should_forward(Received(signal.SIGTERM, SI_USER, 4242))
    own_group = Forwarder(os.getpid(), group=os.getpgrp(), clock=lambda: now[0])
    assert own_group.should_forward(Received(signal.SIGINT, SI_KERNEL, 0))
    own_group._last[(signal.SIGTERM, 4242)] = now[0]  # just forwarded
    assert not own_group.should_forward(Received(signal.SIGTERM, SI_USER, 4242))
    assert own_group.should_forward(Received(signal.SIGTERM, SI_USER, 4343))
    now[0] += 1.0
    assert own_group.should_forward(Received(signal.SIGTERM, SI_USER, 4242))
    assert own_group.should_forward(Received(signal.SIGTERM))  # caught by the handler


def test_the_command_dies_with_energymeter_when_it_has_its_own_group(tmp_path: Path) -> None:
    """A SIGKILL of energymeter's group (`timeout -k`, `kill -9 -- -PGID`) cannot be passed
    on; the command, in its own group, must not outlive it."""

    proc = subprocess.Popen(_run_cmd(PY, "-c", COUNTER), env=_env(tmp_path),
                            stdout=subprocess.PIPE, start_new_session=True)
    _wait_ready(proc)
    (child,) = _command(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert _ends(child)


def test_the_commands_whole_group_dies_with_energymeter(tmp_path: Path) -> None:
    """Workers the command started (torchrun's, a shell's background jobs) die too."""
    import psutil

    script = ("sleep 300 & echo $! > " + str(tmp_path / "worker.pid")
              + "; echo ready; wait")
    proc = subprocess.Popen(_run_cmd("sh", "-c", script), env=_env(tmp_path),
                            stdout=subprocess.PIPE, start_new_session=True)
    _wait_ready(proc)
    worker = psutil.Process(int((tmp_path / "worker.pid").read_text()))
    os.killpg(proc.pid, signal.SIGKILL)  # `timeout -k`, `kill -9 -- -PGID`
    proc.wait(timeout=10)
    assert _ends(worker), "the command's worker outlived energymeter"


def test_the_watchdog_is_not_measured_and_does_not_outlive_the_run(tmp_path: Path) -> None:
    import psutil

    proc = subprocess.Popen(_run_cmd(PY, "-c", "print('ready', flush=True); "
                                     "import time; time.sleep(1.5)"),
                            env=_env(tmp_path), stdout=subprocess.PIPE,
                            start_new_session=True)
    _wait_ready(proc)
    helpers = [c for c in psutil.Process(proc.pid).children() if c.name() == "sh"]
    assert len(helpers) == 1  # the watchdog
    proc.wait(timeout=30)
    assert not helpers[0].is_running()
    report = _report(tmp_path)
    assert report["status"] == "completed"
    assert report["resources"]["peak_rss_bytes"] < 60 * 2**20  # a python, not python + sh


def _ends(proc, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    """Whether the ``psutil.Process`` ``proc`` ends within ``timeout_s`` (a zombie has ended:
    an orphan waits for a reaper that a container's init may never be)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _command(pid: int) -> list:  # type: ignore[type-arg]
    """The command energymeter (``pid``) runs: its children but the ``sh`` watchdog."""
    import psutil

    return [c for c in psutil.Process(pid).children() if c.name() != "sh"]


def test_off_the_main_thread_the_command_shares_our_group(tmp_path: Path) -> None:
    """No signal can be forwarded from another thread: the command must then stay in our
    process group, where group signals reach it directly."""
    import threading

    from energymeter.session.command import run_command

    out: dict = {}
    pgid_file = tmp_path / "pgid"

    def host() -> None:
        out["result"] = run_command(
            [PY, "-c", f"import os; open({str(pgid_file)!r}, 'w').write(str(os.getpgrp()))"],
            out=tmp_path, region="SE", powercap_root=tmp_path / "absent")

    thread = threading.Thread(target=host)
    thread.start()
    thread.join(30)
    assert out["result"].exit_code == 0
    assert int(pgid_file.read_text()) == os.getpgrp()
