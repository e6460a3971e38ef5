"""``energymeter run`` as a real subprocess: exit codes, signals, pass-through, memory of the
process tree; and the runner library in-process."""

from __future__ import annotations

import csv
import json
import os
import pty
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from energymeter.cli.run import status_line
from energymeter.errors import ConfigError
from energymeter.report import Report
from energymeter.session.command import (
    CommandNotExecutableError,
    CommandNotFoundError,
    build_argv,
    default_name,
    resolve_program,
    run_command,
)
from energymeter.session.signals import exit_code_of

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def em_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYMETER_")}
    env["ENERGYMETER_OUT"] = str(tmp_path / "runs")
    env["ENERGYMETER_REGION"] = "SE"
    env["ENERGYMETER_INTERVAL_S"] = "0.05"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def em(*args: str) -> list[str]:
    return [PY, "-m", "energymeter.cli", *args]


def _default_sigint() -> None:
    # A test runner started in the background may ignore SIGINT; energymeter keeps an
    # inherited "ignore" (and so would its child), so give the subprocess the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_em(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(em(*args), cwd=tmp_path, env=env or em_env(tmp_path),
                          capture_output=True, timeout=timeout, preexec_fn=_default_sigint)


def run_dirs(tmp_path: Path) -> list[Path]:
    out = tmp_path / "runs"
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def only_report(tmp_path: Path) -> Report:
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 1, dirs
    return Report.load(dirs[0])


# -- exit codes --------------------------------------------------------------------------------
def test_exit_0_completed(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--", "true")
    assert proc.returncode == 0, proc.stderr
    report = only_report(tmp_path)
    assert report.status == "completed"
    assert report.exit_code == 0
    assert report.command == ("true",)
    assert report.name == "true"


def test_exit_code_passed_on_and_failed(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--name", "three", "--", "sh", "-c", "exit 3")
    assert proc.returncode == 3
    report = only_report(tmp_path)
    assert (report.status, report.exit_code, report.name) == ("failed", 3, "three")


def test_command_not_found_127_no_run_dir(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--", "energymeter-no-such-command-xyz", "arg")
    assert proc.returncode == 127
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "energymeter-no-such-command-xyz" in lines[0]
    assert "not found" in lines[0]
    assert proc.stdout == b""
    assert not (tmp_path / "runs").exists()


def test_missing_path_127(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--", str(tmp_path / "nope.sh"))
    assert proc.returncode == 127
    assert not (tmp_path / "runs").exists()


def test_not_executable_126_no_run_dir(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    proc = run_em(tmp_path, "run", "--", str(script))
    assert proc.returncode == 126
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "permission denied" in lines[0]
    assert not (tmp_path / "runs").exists()
    # A directory is not executable either.
    proc = run_em(tmp_path, "run", "--", str(tmp_path))
    assert proc.returncode == 126
    assert not (tmp_path / "runs").exists()


def test_exec_format_error_126(tmp_path: Path) -> None:
    """Executable but not a program the kernel can run (no #! line): the meter had started,
    so the run is recorded as failed with 126."""
    script = tmp_path / "noshebang"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    proc = run_em(tmp_path, "run", "--", str(script))
    assert proc.returncode == 126
    assert b"cannot execute" in proc.stderr
    report = only_report(tmp_path)
    assert (report.status, report.exit_code) == ("failed", 126)


def test_argument_with_nul_byte_is_126_and_the_run_is_closed(tmp_path: Path) -> None:
    """Popen refuses a NUL byte with ValueError after the meter started: the run must still
    be stopped and recorded, not left running."""
    from energymeter.session.command import RunError

    with pytest.raises(RunError) as caught:
        run_command(["echo", "a\x00b"], out=tmp_path / "runs", region="SE")
    assert caught.value.exit_code == 126
    report = only_report(tmp_path)
    assert (report.status, report.exit_code) == ("failed", 126)


@pytest.mark.parametrize("option", [["--pue", "0.5"], ["--region", "XX"],
                                    ["--interval", "0"], ["--carbon-table", "nope"]])
def test_bad_settings_exit_2_before_child(tmp_path: Path, option: list[str]) -> None:
    marker = tmp_path / "ran"
    proc = run_em(tmp_path, "run", *option, "--", "touch", str(marker))
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert run_dirs(tmp_path) == []


def test_bad_setting_from_env_exit_2(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--", "true", env=em_env(tmp_path, ENERGYMETER_PUE="abc"))
    assert proc.returncode == 2
    assert b"ENERGYMETER_PUE" in proc.stderr


# -- signals -----------------------------------------------------------------------------------
SLEEPER = "import sys, time; print('ready', flush=True); time.sleep(30)"


def _start_and_signal(tmp_path: Path, sig: int, child: list[str]) -> tuple[int, float]:
    proc = subprocess.Popen(em("run", "--", *child), cwd=tmp_path, env=em_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        t0 = time.monotonic()
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # say what energymeter said, for the next look
            children = subprocess.run(["ps", "-eo", "pid,ppid,pgid,stat,args"],
                                      capture_output=True, text=True).stdout
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"energymeter run did not end within 20 s of signal {sig}; "
                                 f"its stderr:\n{err.decode(errors='replace')[-3000:]}\n"
                                 f"processes:\n{children[-3000:]}") from None
        return proc.returncode, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                           (signal.SIGHUP, 129)])
def test_signal_forwarded_python_child(tmp_path: Path, sig: int, code: int) -> None:
    rc, waited = _start_and_signal(tmp_path, sig, [PY, "-c", SLEEPER])
    assert rc == code
    assert waited < 10
    report = only_report(tmp_path)
    assert report.status == "interrupted"
    assert report.exit_code == code


def test_sigterm_forwarded_to_sleep(tmp_path: Path) -> None:
    proc = subprocess.Popen(em("run", "--", "sleep", "30"), cwd=tmp_path, env=em_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 10
        while not run_dirs(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert only_report(tmp_path).status == "interrupted"


COUNTER = textwrap.dedent("""
    import signal, sys, time
    n = 0
    def handler(signum, frame):
        global n
        n += 1
    signal.signal(signal.SIGINT, handler)
    print("ready", flush=True)
    t = time.time()
    while n == 0 and time.time() - t < 20:
        time.sleep(0.02)
    time.sleep(0.5)
    sys.exit(10 + n)
""")


def test_kill_sigint_forwarded_once(tmp_path: Path) -> None:
    """A SIGINT sent with kill() to energymeter reaches the child exactly once; the child
    handles it and exits 11: the run is interrupted, the code is the child's."""
    counter = tmp_path / "counter.py"
    counter.write_text(COUNTER)
    rc, _ = _start_and_signal(tmp_path, signal.SIGINT, [PY, str(counter)])
    assert rc == 11
    report = only_report(tmp_path)
    assert (report.status, report.exit_code) == ("interrupted", 11)


def test_terminal_ctrl_c_not_delivered_twice(tmp_path: Path) -> None:
    """Ctrl-C on a terminal signals the whole foreground process group; energymeter must not
    forward it again. Also checks the live status line shown on a terminal."""
    counter = tmp_path / "counter.py"
    counter.write_text(COUNTER)
    env = em_env(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        try:
            _default_sigint()
            os.chdir(tmp_path)
            os.execve(PY, em("run", "--", PY, str(counter)), env)
        finally:
            os._exit(99)
    output = b""
    try:
        deadline = time.monotonic() + 15
        while b"ready" not in output and time.monotonic() < deadline:
            output += os.read(fd, 4096)
        time.sleep(1.3)  # let the live status line appear (refreshed once a second)
        os.write(fd, b"\x03")
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child side closed
                break
            if not data:
                break
            output += data
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 11, output
    text = output.decode(errors="replace")
    assert "elapsed" in text  # live status on a terminal
    assert "interrupted" in text
    assert only_report(tmp_path).status == "interrupted"


# -- pass-through ------------------------------------------------------------------------------
BINARY_CHILD = ("import sys; out = sys.stdout.buffer; out.write(bytes(range(256))); "
                "out.write(b'\\xff\\xfe\\xc3\\x28 invalid utf-8 \\xed\\xa0\\x80\\r\\n\\x00end'); "
                "out.flush(); sys.stderr.write('child-stderr\\n')")


def test_stdout_byte_identical(tmp_path: Path) -> None:
    direct = subprocess.run([PY, "-c", BINARY_CHILD], capture_output=True, timeout=30)
    wrapped = run_em(tmp_path, "run", "--", PY, "-c", BINARY_CHILD)
    assert wrapped.returncode == 0
    assert wrapped.stdout == direct.stdout
    assert len(direct.stdout) > 256
    assert wrapped.stderr.startswith(b"child-stderr\n")


def test_stdin_passed_through(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    proc = subprocess.run(em("run", "--", "cat"), input=data, cwd=tmp_path,
                          env=em_env(tmp_path), capture_output=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout == data


def test_summary_on_stderr_not_stdout(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--", "echo", "hello")
    assert proc.stdout == b"hello\n"
    err = proc.stderr.decode()
    assert "energymeter: echo completed" in err
    assert "report:" in err
    assert "\r" not in err and "elapsed" not in err  # no live line without a terminal


def test_quiet_prints_nothing_of_ours(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--quiet", "--", "sh", "-c", "echo out; echo err >&2")
    assert proc.returncode == 0
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"
    assert only_report(tmp_path).status == "completed"


def test_json_path_written(tmp_path: Path) -> None:
    target = tmp_path / "cost.json"
    proc = run_em(tmp_path, "run", "--quiet", "--json", str(target), "--", "true")
    assert proc.returncode == 0
    data = json.loads(target.read_text())
    report = only_report(tmp_path)
    assert data["run_id"] == report.run_id
    assert data["schema"] == "energymeter.report/1"
    assert data["carbon"]["region"] == "SE"


def test_shell_option(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--shell", "--", "echo abc | tr a x; exit 4")
    assert proc.returncode == 4
    assert proc.stdout == b"xbc\n"
    report = only_report(tmp_path)
    assert report.command == ("sh", "-c", "echo abc | tr a x; exit 4")
    assert report.name == "echo"


def test_child_starts_with_no_blocked_or_ignored_signal(tmp_path: Path) -> None:
    """energymeter blocks signals in itself; the child must not inherit that mask, nor any
    signal energymeter ignores. What energymeter's own parent ignored stays ignored (`nohup`
    relies on it; a shell's background job starts with SIGINT and SIGQUIT ignored)."""
    proc = run_em(tmp_path, "run", "--quiet", "--", "grep", "-E", "^Sig(Blk|Ign)",
                  "/proc/self/status")
    assert proc.returncode == 0, proc.stderr
    masks = dict(line.split(":\t") for line in proc.stdout.decode().splitlines())
    ours = dict(line.split(":\t") for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("SigIgn"))
    inherited = int(ours["SigIgn"], 16) & ~(1 << (signal.SIGINT - 1))  # Python handles INT
    assert int(masks["SigBlk"], 16) == 0
    assert int(masks["SigIgn"], 16) & ~inherited == 0


def test_child_sees_run_id_and_dir(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--quiet", "--", "sh", "-c",
                  'echo "$ENERGYMETER_RUN_ID"; echo "$ENERGYMETER_RUN_DIR"')
    run_id, run_dir = proc.stdout.decode().splitlines()
    report = only_report(tmp_path)
    assert run_id == report.run_id
    assert Path(run_dir) == report.path


def test_measure_inside_a_wrapped_script_links_to_the_outer_run(tmp_path: Path) -> None:
    script = ("from energymeter import measure\n"
              "with measure('inner'):\n"
              "    sum(range(1000))\n")
    proc = run_em(tmp_path, "run", "--quiet", "--name", "outer", "--", sys.executable, "-c",
                  script)
    assert proc.returncode == 0, proc.stderr
    reports = {r.name: r for r in (Report.load(d) for d in run_dirs(tmp_path))}
    assert reports["inner"].parent_run_id == reports["outer"].run_id
    assert reports["outer"].parent_run_id is None
    with open(tmp_path / "runs" / "runs.csv", newline="") as fh:
        ledger = list(csv.DictReader(fh))  # the command's newlines are quoted in the CSV
    assert [row["name"] for row in ledger] == ["inner", "outer"]
    assert ledger[0]["parent_run_id"] == ledger[1]["run_id"]


def test_options_override_env(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    proc = run_em(tmp_path, "run", "--out", str(out), "--region", "FR", "--pue", "1.5",
                  "--price", "0.2", "--currency", "usd", "--", "true")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    report = Report.load(run_dir)
    assert report.carbon["region"] == "FR"
    assert report.carbon["pue"] == 1.5
    assert report.carbon["currency"] == "USD"
    assert report.settings["origins"]["region"] == "argument"
    assert report.settings["interval_s"] == 0.05  # from the environment
    assert report.settings["origins"]["interval_s"] == "env"


# -- the process tree --------------------------------------------------------------------------
TREE_CHILD = textwrap.dedent("""
    import subprocess, sys
    grandchild = ("import time; x = bytearray(b'\\\\x01') * (100 << 20); time.sleep(1.2)")
    procs = [subprocess.Popen([sys.executable, "-c", grandchild]) for _ in range(2)]
    sys.exit(sum(p.wait() for p in procs))
""")


def test_peak_rss_includes_grandchildren(tmp_path: Path) -> None:
    script = tmp_path / "tree.py"
    script.write_text(TREE_CHILD)
    proc = run_em(tmp_path, "run", "--", PY, str(script),
                  env=em_env(tmp_path, ENERGYMETER_GAUGE_INTERVAL_S="0.05"))
    assert proc.returncode == 0, proc.stderr
    report = only_report(tmp_path)
    # Two grandchildren holding 100 MiB each at the same time.
    assert report.resources["peak_rss_bytes"] >= 200 * 2**20
    assert report.resources["cpu_time_s"] > 0


# -- the library in-process --------------------------------------------------------------------
def test_resolve_program(tmp_path: Path) -> None:
    assert resolve_program("sh").endswith("/sh")
    with pytest.raises(CommandNotFoundError) as info:
        resolve_program("energymeter-no-such-command-xyz")
    assert info.value.exit_code == 127
    plain = tmp_path / "tool"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(CommandNotExecutableError) as info2:
        resolve_program("tool", {"PATH": str(tmp_path)})
    assert info2.value.exit_code == 126
    plain.chmod(0o755)
    assert resolve_program("tool", {"PATH": str(tmp_path)}) == str(plain)
    with pytest.raises(CommandNotFoundError):
        resolve_program("")


def test_argv_name_and_codes() -> None:
    assert build_argv(["a", "b"]) == ["a", "b"]
    assert build_argv(["echo hi", "| wc"], shell=True) == ["sh", "-c", "echo hi | wc"]
    with pytest.raises(CommandNotFoundError):
        build_argv([])
    assert default_name(["/usr/bin/python3", "x.py"]) == "x"
    assert default_name(["python", "-u", "examples/train_mlp.py", "--lr", "3"]) == "train_mlp"
    assert default_name(["python3", "-c", "print(1)"]) == "python3"
    assert default_name(["python", "-m", "pkg.train"]) == "python"
    assert default_name(["torchrun", "--nproc_per_node=8", "train.py"]) == "train"
    assert default_name(["./run.sh"]) == "run.sh"
    assert default_name(["python", "-X", "importtime", "-W", "ignore", "t.py"]) == "t"
    assert default_name(["torchrun", "--nproc-per-node", "8", "fit.py"]) == "fit"
    assert default_name(["  make -j8 && ./test"], shell=True) == "make"
    assert default_name(["CUDA_VISIBLE_DEVICES=0 python x.py"], shell=True) == "x"
    assert exit_code_of(0) == 0
    assert exit_code_of(3) == 3
    assert exit_code_of(-signal.SIGTERM) == 143


def test_run_command_in_process(tmp_path: Path) -> None:
    seen = []
    env = em_env(tmp_path)
    result = run_command([PY, "-c", "import time; time.sleep(0.35)"], name="lib", env=env,
                         on_status=seen.append, status_period_s=0.1, interval_s=0.02)
    assert result.exit_code == 0
    assert result.report.status == "completed"
    assert result.report.name == "lib"
    assert result.report.settings["interval_s"] == 0.02
    assert seen and all(s.t_s >= 0 for s in seen)
    assert "elapsed" in status_line(seen[-1])
    # The signal state is restored afterwards.
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_run_command_bad_settings_raise(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError):
        run_command(["touch", str(marker)], env=em_env(tmp_path), pue=0.2)
    assert not marker.exists()
    assert run_dirs(tmp_path) == []
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_run_charges_the_command_not_the_wrapper(tmp_path: Path) -> None:
    """`energymeter run` measures the command's processes: the wrapper's own memory (here
    this pytest process, made 300 MB bigger) and CPU time are not the command's."""
    ballast = bytearray(300 * 2**20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1  # resident
    result = run_command([PY, "-c", "import time; time.sleep(0.6)"], out=tmp_path,
                         region="SE", powercap_root=tmp_path / "absent", gauge_interval_s=0.1)
    res = result.report.resources
    assert psutil.Process().memory_info().rss > 300 * 2**20  # the wrapper is big
    assert 0 < res["peak_rss_bytes"] < 150 * 2**20  # a sleeping python, not the wrapper
    assert res["peak_memory_bytes"] == res["peak_rss_bytes"] and res["memory_basis"] == "rss"
    assert res["cpu_time_s"] < 0.5
    del ballast