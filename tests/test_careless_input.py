"""What careless input gets: an option `run` does not know is refused (exit 2, the closest
valid option named), not run as the program; `--by tag:KEY` that no run has is warned; a run
too short to be sampled says its memory was not sampled instead of "0 MiB"."""

from __future__ import annotations

from pathlib import Path

import pytest

from energymeter.analysis import compare, comparison_warnings
from energymeter.report.render import memory_text
from tests.test_cli import invoke
from tests.test_compare import fake_report


@pytest.mark.parametrize("args", [["--repaet", "3", "--", "true"], ["--repaet", "3", "true"],
                                  ["-x", "--", "true"]])
def test_an_option_run_does_not_know_is_refused_not_run(args: list[str],
                                                        tmp_path: Path) -> None:
    code, out, err = invoke("run", "--out", str(tmp_path), *args)
    assert code == 2
    assert "No such option" in err
    if args[0] == "--repaet":
        assert "--repeat" in err  # the closest valid option
    assert not list(tmp_path.glob("*/report.json"))  # nothing was run


def test_a_command_that_starts_with_a_dash_still_runs_after_the_separator(
        tmp_path: Path) -> None:
    code, _, err = invoke("run", "--out", str(tmp_path), "-q", "--", "--no-such-program")
    assert code == 127 and "command not found" in err


def test_by_a_tag_no_run_has_is_warned_first() -> None:
    runs = [fake_report("a", cpu_j=10.0, minute=i, tags={"method": "dense"}) for i in range(3)]
    rows = compare(runs, by="tag:methdo")
    assert rows[0]["warnings"][0].startswith("no run has tag 'methdo'")
    assert "the runs' tags are: method" in rows[0]["warnings"][0]
    assert not any("no run has tag" in w
                   for w in comparison_warnings(compare(runs, by="tag:method")))


def test_report_by_a_missing_tag_warns_on_stderr(tmp_path: Path) -> None:
    from energymeter.store import write_json_atomic

    r = fake_report("a", cpu_j=10.0, tags={"method": "dense"})
    (tmp_path / r.run_id).mkdir()
    write_json_atomic(tmp_path / r.run_id / "report.json", r.to_dict())
    code, _, err = invoke("report", "--by", "tag:nosuch", str(tmp_path))
    assert code == 0 and "no run has tag 'nosuch'" in err


def test_memory_that_was_never_sampled_is_not_zero() -> None:
    assert memory_text({"peak_rss_bytes": 0, "max_rss_bytes_rusage": 2**24},
                       command=True) == ("peak memory not sampled (the processes ended "
                                         "before the first sample)")
    spike = memory_text({"peak_memory_bytes": 40 * 2**20, "memory_basis": "rss",
                         "max_rss_bytes_rusage": 200 * 2**20}, command=True)
    assert spike.startswith("peak memory 40 MiB (RSS), kernel high-water mark 200 MiB")
    # A measure() block: the kernel's mark covers the process's whole life, not shown.
    assert memory_text({"peak_memory_bytes": 40 * 2**20, "max_rss_bytes_rusage": 200 * 2**20}
                       ) == "peak memory 40 MiB (RSS)"
