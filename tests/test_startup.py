"""What a first ``start()`` costs in imports: the modules it must not load (each was measured
at milliseconds of start on the development VM; docs/performance.md), and the stand-ins that
replace them giving the same answers."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import uuid
from pathlib import Path

from energymeter import _ids
from energymeter.session import facts

REPO = Path(__file__).resolve().parents[1]

#: Loaded by neither ``import energymeter`` nor a first start() and stop() on Linux.
NOT_ON_THE_START_PATH = ("psutil", "socket", "uuid", "platform", "subprocess", "pandas", "logging",
                         "importlib.resources", "energymeter.report.rebuild",
                         "energymeter.report.render", "energymeter.report.fastscan")


def test_a_first_start_and_stop_import_none_of_the_heavy_modules(tmp_path: Path) -> None:
    code = f"""
import json, sys
before = set(sys.modules)
import energymeter
m = energymeter.measure("s", out={str(tmp_path)!r}, region="SE")
m.start()
started = set(sys.modules)
m.stop()
print(json.dumps({{"start": sorted(started - before), "stop": sorted(set(sys.modules) - before)}}))
"""
    # -S: no site-packages .pth files (this machine's import certifi, and so importlib.resources)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    paths = json.loads(subprocess.run([sys.executable, "-c", "import sys, json; "
                                       "print(json.dumps(sys.path))"], capture_output=True,
                                      text=True, check=True).stdout)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in paths if p]])
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env=env, check=True, cwd=tmp_path)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    for when in ("start", "stop"):
        heavy = [m for m in NOT_ON_THE_START_PATH if m in loaded[when]]
        assert not heavy, f"{when} imported {heavy}"
    assert "energymeter.probes.process" in loaded["start"]  # the process tree is measured
    # A family that cannot be here (no driver, no powercap folder) is not even imported.
    from energymeter.probes import DiscoveryContext
    from energymeter.probes.presence import PRECHECKS

    for name, missing in PRECHECKS.items():
        if missing(DiscoveryContext()) is not None:
            assert f"energymeter.probes.{name}" not in loaded["stop"], name


def test_stand_ins_give_what_the_modules_they_replace_give() -> None:
    assert _ids.hostname() == __import__("socket").gethostname()
    run_id = _ids.random_id()
    assert uuid.UUID(hex=run_id).version == 4 and uuid.UUID(hex=run_id).hex == run_id
    assert len({_ids.random_id() for _ in range(1000)}) == 1000
    assert facts._python_version() == platform.python_version()
    assert facts._os_and_machine() == (platform.platform(), platform.machine())


def test_a_check_that_fails_is_the_familys_unavailable_not_an_error(monkeypatch) -> None:
    """A presence check that raises (a powercap folder this user cannot search, say) makes
    that family unavailable, as a failing probe does; discovery goes on."""
    from energymeter.probes import DiscoveryContext, discover, presence

    def denied(ctx: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setitem(presence.PRECHECKS, "rapl", denied)
    found = discover(DiscoveryContext())
    (rapl,) = [u for u in found.unavailable if u.source == "rapl"]
    assert "PermissionError" in rapl.reason
    assert any(c.kind == "cpu" for p in found.probes for c in p.channels)  # the model instead
