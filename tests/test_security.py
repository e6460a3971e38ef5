"""Security and privacy: output paths checked before a command runs,
secrets redacted from what is recorded, file modes that follow the umask, no writing through
symbolic links, control characters escaped in CLI output. (Credentials across redirects:
tests/test_carbon_live.py.)"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from energymeter import measure
from energymeter.errors import ConfigError
from energymeter.report import Report
from energymeter.session.meter import Meter
from energymeter.store import (
    EventLog,
    SamplesWriter,
    append_ledger,
    write_json_atomic,
)
from tests.test_cli import invoke
from tests.test_runner import em_env, run_dirs, run_em

SECRETS = ("tok1", "pw2", "key3", "bear4", "pass5", "basic6", "tok7")


# -- 21: a bad --json path is refused before the command runs ---------------------------------
@pytest.mark.parametrize("where", ["missing-dir", "a-directory", "parent-is-a-file"])
def test_run_bad_json_path_exit_2_before_the_command(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    path = {"missing-dir": tmp_path / "nope" / "cost.json", "a-directory": tmp_path / "a-dir",
            "parent-is-a-file": tmp_path / "a-file" / "cost.json"}[where]
    marker = tmp_path / "ran"
    proc = run_em(tmp_path, "run", "--json", str(path), "--", sys.executable, "-c",
                  f"open({str(marker)!r}, 'w').close()")
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("energymeter: error:"), err
    assert str(path) in err and "accepted:" in err
    assert not marker.exists()  # the command never ran
    assert run_dirs(tmp_path) == []  # nothing measured, no run directory


def test_run_json_path_in_an_unwritable_directory_exit_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    marker = tmp_path / "ran"
    env = em_env(tmp_path)
    preexec = None
    if os.geteuid() == 0:  # root writes anywhere: run as nobody, in folders it may write
        tmp_path.chmod(0o777)
        (tmp_path / "runs").mkdir(mode=0o777)
        (tmp_path / "runs").chmod(0o777)

        def preexec() -> None:
            os.setgid(65534)
            os.setuid(65534)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "energymeter.cli", "run", "--json", str(locked / "cost.json"),
             "--", sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
            cwd=tmp_path, env=env, capture_output=True, timeout=30, preexec_fn=preexec)
    except PermissionError as exc:  # this Python is not readable by nobody
        pytest.skip(f"cannot run energymeter as an unprivileged user here: {exc}")
    err = proc.stderr.decode()
    if "ModuleNotFoundError" in err or "PermissionError" in err:
        pytest.skip(f"cannot run energymeter as an unprivileged user here: {err[-200:]}")
    assert proc.returncode == 2, err
    assert err.startswith("energymeter: error:") and "not writable" in err
    assert not marker.exists() and run_dirs(tmp_path) == []


def test_json_path_check_refuses_a_folder_it_cannot_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The unwritable case as root too (root may write anywhere): access() says no for `locked`.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked
                        else real_access(p, mode, **kw))
    monkeypatch.setenv("ENERGYMETER_OUT", str(tmp_path / "runs"))
    marker = tmp_path / "ran"
    code, _, err = invoke("run", "--json", str(locked / "c.json"), "--", sys.executable, "-c",
                          f"open({str(marker)!r}, 'w').close()")
    assert code == 2
    assert err.startswith("energymeter: error:") and f"{locked} is not writable" in err
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_monitor_bad_json_path_exit_2_before_measuring(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "runs"
    monkeypatch.setenv("ENERGYMETER_OUT", str(out))
    monkeypatch.setenv("ENERGYMETER_REGION", "SE")
    code, stdout, err = invoke("monitor", "--duration", "0.2", "--json",
                               str(tmp_path / "nope" / "m.json"))
    assert code == 2 and err.startswith("energymeter: error:") and "nope" in err
    assert stdout == ""  # no header: nothing was measured
    assert not out.exists() or not any(out.iterdir())


# -- 22: secrets on the command line are redacted from what is recorded -----------------------
def _redact(*argv: str, setting: str | None = "default") -> list[str]:
    from energymeter.redact import redact_command

    return list(redact_command(list(argv), setting))


@pytest.mark.parametrize(("argv", "expected"), [
    (["--token", "tok1"], ["--token", "***"]),
    (["--password=pw2"], ["--password=***"]),
    (["--API-KEY", "k"], ["--API-KEY", "***"]),
    (["--api_key=k", "--apikey", "k", "--hf-token", "k"],
     ["--api_key=***", "--apikey", "***", "--hf-token", "***"]),
    (["--db-passwd", "k", "--client-secret", "k", "--credentials", "k", "--auth", "k"],
     ["--db-passwd", "***", "--client-secret", "***", "--credentials", "***", "--auth", "***"]),
    (["-key", "k"], ["-key", "***"]),
    (["--password", "my secret words", "x"], ["--password", "***", "x"]),
    (["--password=my secret words"], ["--password=***"]),
    (["--token", "--verbose"], ["--token", "--verbose"]),  # a flag, not a value
    (["--token"], ["--token"]),
    (["API_KEY=key3", "GITHUB_TOKEN=t", "db.password=p", "AWS_SECRET_ACCESS_KEY=s"],
     ["API_KEY=***", "GITHUB_TOKEN=***", "db.password=***", "AWS_SECRET_ACCESS_KEY=***"]),
    (["-H", "Authorization: Bearer bear4"], ["-H", "Authorization: Bearer ***"]),
    (["-H", "authorization: basic basic6"], ["-H", "authorization: basic ***"]),
    (["-H", "X-Api-Key: k", "-H", "Cookie: session=k"],
     ["-H", "X-Api-Key: ***", "-H", "Cookie: ***"]),
    (["https://user:pass5@example.com/repo.git"], ["https://user:***@example.com/repo.git"]),
    (["git", "clone", "https://x-access-token:tok7@github.com/o/r"],
     ["git", "clone", "https://x-access-token:***@github.com/o/r"]),
    (["https://api.example.com/v1?api_key=k&zone=SE"],
     ["https://api.example.com/v1?api_key=***&zone=SE"]),
    (["sh", "-c", "curl -H 'Authorization: Bearer b' --token t --password=p https://u:p@h/ "
                  "&& API_KEY=k ./x"],
     ["sh", "-c", "curl -H 'Authorization: Bearer ***' --token *** --password=*** "
                  "https://u:***@h/ && API_KEY=*** ./x"]),
    (["sh", "-c", 'TOKEN="a b" ./x --password "my pw" -v'],
     ["sh", "-c", "TOKEN=*** ./x --password *** -v"]),
    (["curl", "-u", "me:pw", "--max-keys", "5"], ["curl", "-u", "me:***", "--max-keys", "***"]),
])
def test_default_redaction_patterns(argv: list[str], expected: list[str]) -> None:
    assert _redact(*argv) == expected


@pytest.mark.parametrize("argv", [
    ["python", "train.py", "--epochs", "3", "--lr=0.1", "--output-dir", "out"],
    ["python", "-m", "torch.distributed.run", "--nproc_per_node=8", "x.py"],
    ["CUDA_VISIBLE_DEVICES=0,1", "OMP_NUM_THREADS=4", "make", "-j8"],
    ["https://example.com/data.tar.gz", "ssh://git@github.com/o/r", "--author", "Ada"],
    ["echo", "key points", "Authorization", "user@host"],
    ["python", "-u", "train.py", "--tokenizer", "bert", "--max_new_tokens", "64",
     "TOKENIZERS_PARALLELISM=false", "PWD=/home/me"],
])
def test_harmless_commands_are_recorded_unchanged(argv: list[str]) -> None:
    assert _redact(*argv) == argv


def test_redaction_none_and_extra_patterns() -> None:
    assert _redact("--token", "t", setting="none") == ["--token", "t"]
    assert _redact("--token", "t", setting=" NONE ") == ["--token", "t"]
    extra = r"hf_[A-Za-z0-9]{8,} --hub=(\S+)"
    assert _redact("x", "hf_abcdefgh12", "--hub=me", "--token", "t", setting=extra) == \
        ["x", "***", "--hub=***", "--token", "***"]
    with pytest.raises(ConfigError, match=r"redact.*not a valid regular expression.*accepted"):
        _redact("x", setting="(unclosed")


def _argv_script(out: Path) -> list[str]:
    return [sys.executable, "-c",
            f"import json, sys; open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))"]


ARGS = ["--token", "tok1", "--password=pw2", "API_KEY=key3", "Authorization: Bearer bear4",
        "https://user:pass5@example.com/x", "--epochs", "3"]


def test_run_records_redacted_command_and_child_gets_the_real_one(tmp_path: Path) -> None:
    seen = tmp_path / "argv.json"
    target = tmp_path / "cost.json"
    proc = run_em(tmp_path, "run", "--json", str(target), "--", *_argv_script(seen), *ARGS)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(seen.read_text()) == ARGS  # the child received the real arguments
    (run_dir,) = run_dirs(tmp_path)
    recorded = {
        "report.json": (run_dir / "report.json").read_text(),
        "events.jsonl": (run_dir / "events.jsonl").read_text(),
        "runs.csv": (tmp_path / "runs" / "runs.csv").read_text(),
        "--json": target.read_text(),
        "stderr": proc.stderr.decode(),
    }
    for where, text in recorded.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {where}"
    command = json.loads(recorded["report.json"])["command"]
    assert command[3:] == ["--token", "***", "--password=***", "API_KEY=***",
                           "Authorization: Bearer ***", "https://user:***@example.com/x",
                           "--epochs", "3"]
    row = next(csv.DictReader(io.StringIO(recorded["runs.csv"])))
    assert "--token ***" in row["command"] and "tok1" not in row["command"]


def test_redaction_configured_by_env_and_pyproject(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cmd = ["prog", "--token", "t", "--hub=me"]
    meter = Meter("x", command=cmd, env={"ENERGYMETER_REDACT": "none"})
    assert list(meter.command or ()) == cmd
    assert meter.settings.redact == "none"
    (tmp_path / "pyproject.toml").write_text("[tool.energymeter]\nredact = '--hub=(\\S+)'\n")
    meter = Meter("x", command=cmd, env={})
    assert list(meter.command or ()) == ["prog", "--token", "***", "--hub=***"]
    with pytest.raises(ConfigError, match="redact"):
        Meter("x", command=cmd, env={"ENERGYMETER_REDACT": "[z-a]"})
    (tmp_path / "pyproject.toml").write_text(
        "[tool.energymeter]\nredact = ['--hub=(\\S+)', 'x{3}']\n")
    meter = Meter("x", command=["xxx", *cmd], env={})
    assert list(meter.command or ()) == ["***", "prog", "--token", "***", "--hub=***"]


def test_bad_redact_pattern_exit_2_before_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = run_em(tmp_path, "run", "--", sys.executable, "-c",
                  f"open({str(marker)!r}, 'w').close()",
                  env=em_env(tmp_path, ENERGYMETER_REDACT="--x=(unclosed"))
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.startswith("energymeter: error: redact"), err
    assert "$ENERGYMETER_REDACT" in err and "not a valid regular expression" in err
    assert not marker.exists() and run_dirs(tmp_path) == []


def test_measure_redacts_command_in_report_events_and_ledger(tmp_path: Path) -> None:
    with Meter("m", command=["prog", *ARGS], out=tmp_path / "runs") as m:
        pass
    report = m.report
    assert report is not None and report.command is not None
    assert "tok1" not in " ".join(report.command)
    for path in (report.path / "report.json", report.path / "events.jsonl",
                 tmp_path / "runs" / "runs.csv"):
        text = path.read_text()
        assert not [s for s in SECRETS if s in text], path


# -- 23: every file follows the umask ----------------------------------------------------------
@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_files_follow_the_umask(tmp_path: Path, umask: int, file_mode: int,
                                dir_mode: int) -> None:
    target = tmp_path / "cost.json"
    proc = subprocess.run(
        [sys.executable, "-m", "energymeter.cli", "run", "--quiet", "--json", str(target), "--",
         "true"], cwd=tmp_path, env=em_env(tmp_path), capture_output=True, timeout=30,
        preexec_fn=lambda: os.umask(umask))  # the test process keeps its own umask
    assert proc.returncode == 0, proc.stderr.decode()
    (run_dir,) = run_dirs(tmp_path)
    files = [run_dir / "report.json", run_dir / "samples.csv", run_dir / "events.jsonl",
             tmp_path / "runs" / "runs.csv", target]
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == {p.name: oct(file_mode) for p in files}
    assert oct(stat.S_IMODE(run_dir.stat().st_mode)) == oct(dir_mode)


def test_atomic_write_follows_the_umask_in_process(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "a.json", {"a": 1})
        EventLog(tmp_path / "e.jsonl").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "e.jsonl").stat().st_mode) == 0o640


# -- 24: no writing through symbolic links -----------------------------------------------------
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the out folder that a planted link points at."""
    target = tmp_path / "elsewhere" / "precious.txt"
    target.parent.mkdir()
    target.write_text("precious\n")
    return target


def test_ledger_symlink_is_refused(tmp_path: Path, outside: Path) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    (out / "runs.csv").symlink_to(outside)
    with pytest.raises(OSError, match=r"runs\.csv is a symbolic link.*accepted") as caught:
        append_ledger(out, {"run_id": "1", "name": "n"}, ("run_id", "name"))
    assert type(caught.value).__name__ == "UnsafePathError"
    assert outside.read_text() == "precious\n"
    assert (out / "runs.csv").is_symlink()


def test_run_with_a_symlinked_ledger_completes_and_says_so(tmp_path: Path,
                                                           outside: Path) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    (out / "runs.csv").symlink_to(outside)
    with measure("x", out=out) as m:
        pass
    report = m.report
    assert report is not None and report.status == "completed"
    assert outside.read_text() == "precious\n"
    said = [w for w in report.warnings if "ledger row was not written" in w]
    assert said and "symbolic link" in said[0], report.warnings
    assert not [w for w in report.warnings if "report could not be written" in w]
    on_disk = Report.load(report.path)
    assert said[0] in on_disk.warnings


def test_writers_refuse_a_symlinked_run_dir(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = tmp_path / "run"
    link.symlink_to(real, target_is_directory=True)
    for make in (lambda: EventLog(link / "events.jsonl"),
                 lambda: SamplesWriter(link / "samples.csv", ["cpu0"], []),
                 lambda: write_json_atomic(link / "report.json", {"a": 1})):
        with pytest.raises(OSError, match="is a symbolic link"):
            make()
    assert list(real.iterdir()) == []


def test_writers_refuse_symlinked_files(tmp_path: Path, outside: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("events.jsonl", "samples.csv"):
        (run / name).symlink_to(outside)
    with pytest.raises(OSError, match=r"events\.jsonl is a symbolic link"):
        EventLog(run / "events.jsonl")
    with pytest.raises(OSError, match=r"samples\.csv is a symbolic link"):
        SamplesWriter(run / "samples.csv", ["cpu0"], [])
    (run / "report.json").symlink_to(outside)
    write_json_atomic(run / "report.json", {"a": 1})  # replaces the link, never its target
    assert not (run / "report.json").is_symlink()
    assert outside.read_text() == "precious\n"
    assert sorted(p.name for p in run.iterdir()) == ["events.jsonl", "report.json",
                                                     "samples.csv"]


def test_make_run_dir_refuses_a_planted_link(tmp_path: Path) -> None:
    import pickle
    from datetime import datetime, timezone

    from energymeter.store import UnsafePathError, make_run_dir

    when = datetime(2026, 11, 21, 10, 0, 0, tzinfo=timezone.utc)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "20261121T100000Z-x-abcdef01").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="cannot create the run directory"):
        make_run_dir(tmp_path / "runs", "x", "abcdef0123", when)
    assert list(elsewhere.iterdir()) == []
    error = pickle.loads(pickle.dumps(UnsafePathError("a message", "/p")))
    assert str(error) == "a message" and error.filename == "/p"


def test_ledger_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (out / "runs.csv").mkdir(parents=True)
    with pytest.raises(OSError, match=r"runs\.csv"):
        append_ledger(out, {"run_id": "1"}, ("run_id",))
    os.rmdir(out / "runs.csv")
    os.mkfifo(out / "runs.csv")
    with pytest.raises(OSError, match=r"not a regular file"):
        append_ledger(out, {"run_id": "1"}, ("run_id",))


def test_cli_json_may_go_through_a_symlinked_folder(tmp_path: Path) -> None:
    real = tmp_path / "results"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    proc = run_em(tmp_path, "run", "--quiet", "--json", str(tmp_path / "link" / "c.json"), "--",
                  "true")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((real / "c.json").read_text())["status"] == "completed"


# -- 25: control characters are escaped in CLI output ----------------------------------------
EVIL = "evil\x1b]0;pwned\x07"


def _no_raw_controls(text: str) -> bool:
    return not any(ch in text for ch in ("\x1b", "\x07", "\x9b", "\r", "\x00"))


def test_escape_controls() -> None:
    from energymeter.cli.common import escape_controls

    assert escape_controls(EVIL) == "evil\\x1b]0;pwned\\x07"
    assert escape_controls("a\tb\nc\r\x00\x7f\x9b\u2028é") == "a\tb\nc\\r\\x00\\x7f\\x9b\u2028é"
    assert escape_controls("\x7f\x9b", json=True) == "\\u007f\\u009b"


def test_report_and_compare_escape_a_hostile_run_name(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYMETER_REGION", "SE")
    out = tmp_path / "runs"
    with measure(EVIL, out=out) as m, m.phase(EVIL + "\x9b2J"):
        pass
    assert m.report is not None
    run = str(m.report.path)
    for args in (("report", run), ("report", "--format", "markdown", run),
                 ("report", "--format", "csv", run), ("compare", run, run),
                 ("compare", "--format", "markdown", run)):
        code, stdout, err = invoke(*args)
        assert code == 0, err
        assert _no_raw_controls(stdout) and _no_raw_controls(err), args
        assert "evil\\x1b]0;pwned\\x07" in stdout, args
    code, stdout, _ = invoke("report", "--format", "json", run)
    assert code == 0 and json.loads(stdout)["name"] == EVIL  # still valid, exact JSON
    code, stdout, _ = invoke("compare", "--format", "json", run)
    assert code == 0 and _no_raw_controls(stdout)
    json.loads(stdout)


def test_run_summary_and_errors_escape_controls(tmp_path: Path) -> None:
    proc = run_em(tmp_path, "run", "--name", EVIL, "--", "true")
    assert proc.returncode == 0
    err = proc.stderr.decode()
    assert "evil\\x1b]0;pwned\\x07 completed" in err and _no_raw_controls(err)
    proc = run_em(tmp_path, "run", "--", "no-such-\x1b[31m-program")
    assert proc.returncode == 127 and _no_raw_controls(proc.stderr.decode())
    code, _, err = invoke("report", str(tmp_path / "no\x1b]0;x\x07where"))
    assert code == 2 and _no_raw_controls(err) and "no\\x1b]0;x\\x07where" in err


def test_live_status_line_keeps_its_own_control_sequence() -> None:
    from energymeter.cli.run import LiveLine
    from energymeter.session.meter import Snapshot

    stream = io.StringIO()
    LiveLine(stream)(Snapshot(1.0, 2.0, 3.0, {}, {}))
    assert stream.getvalue().startswith("\r\x1b[2Kenergymeter: 0:01 elapsed")


def test_redaction_is_linear_in_the_arguments_length() -> None:
    """A long argument (a prompt, a JSON config) is redacted in milliseconds: the URL rule
    was retried from every position (9 s for 48 KB)."""
    import time

    from energymeter.redact import redact_command

    begun = time.perf_counter()
    redact_command(["python", "x" * 48_000, " ".join(["word"] * 20_000)], "default")
    assert time.perf_counter() - begun < 1.0


def test_redaction_skips_words_without_a_secret_stem_and_loses_nothing(monkeypatch) -> None:
    """Words holding no secret word's stem and no '://' skip the regular expressions (a plain
    `energymeter run -- python train.py` compiles none); with the skip disabled every case of
    the tests above gives the same record."""
    from energymeter import redact

    redact._compiled.cache_clear()
    assert redact.redact_command(["python", "train.py", "--epochs", "3"]) == (
        "python", "train.py", "--epochs", "3")
    assert redact._compiled.cache_info().currsize == 0  # nothing compiled
    cases = [argv for argv, _ in (
        (["--token", "tok1", "--password=pw2", "--API-KEY", "k", "-key", "k",
          "API_KEY=key3"], None),
        (["-H", "Authorization: Bearer b", "-H", "X-Api-Key: k", "Cookie: a=b"], None),
        (["https://user:p@h/r", "ssh://git@github.com/o/r", "--max-keys", "5"], None),
        (["sh", "-c", "curl --token t https://u:p@h/ && API_KEY=k ./x"], None),
        (["--tokenizer", "bert", "PWD=/home", "db_pwd=x", "TOKENIZERS_PARALLELISM=false"], None),
        (["curl", "-u", "me:pw", "--Passphrase", "x", "--CREDENTIALS=y", "AUTHOR=z"], None),
        (["--\u017fecret", "v", "API_\u212aEY=x"], None),  # long s, Kelvin sign: IGNORECASE
        (["--credent\u0131al=abc", "--cook\u0131e", "abc", "COOK\u0130E: abc"], None),  # ı, İ
    )]
    skipped = [redact.redact_command(argv) for argv in cases]
    assert skipped[-2] == ("--\u017fecret", "***", "API_\u212aEY=***")
    assert skipped[-1] == ("--credent\u0131al=***", "--cook\u0131e", "***", "COOK\u0130E: ***")
    monkeypatch.setattr(redact, "_may_hold_secret", lambda text: True)
    assert [redact.redact_command(argv) for argv in cases] == skipped
