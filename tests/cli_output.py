"""What every test of ``energymeter run``'s stderr checks."""

from __future__ import annotations


def clean_stderr(stderr: str) -> list[str]:
    """stderr's lines: ours begin with one ``energymeter:`` (the summary's with two spaces), no
    traceback, no advice meant for library users."""
    lines = stderr.splitlines()
    assert "Traceback" not in stderr
    assert "energymeter: energymeter:" not in stderr and ": energymeter:" not in stderr
    assert "Meter.report" not in stderr and "to_json" not in stderr
    assert all(line.startswith(("energymeter: ", "  ")) for line in lines), lines
    return lines
