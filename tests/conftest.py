from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from energymeter.probes import close_cached
from tests.fakes.powercap import FakePowercap

# The slurm_cluster fixture (a real single-node SLURM, started once per session).
pytest_plugins = ["tests.launch_fixtures"]

# In CI the property tests draw the same examples every time (a submission lands or not on
# its own merits, not on a new random draw); on a developer's machine they draw new ones, and
# hypothesis keeps any failure it finds in .hypothesis/ to replay it.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts with fresh probes, no ENERGYMETER_* settings from the caller, a known
    region (no time-zone guess), and runs written under its own tmp dir."""
    import os

    for name in list(os.environ):
        if name.startswith("ENERGYMETER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENERGYMETER_OUT", str(tmp_path / "runs"))
    close_cached()
    yield
    close_cached()


@pytest.fixture
def rapl40(tmp_path: Path) -> Iterator[FakePowercap]:
    """A real-time fake RAPL tree: package at 40 W, DRAM at 5 W, wrapping every ~3 s."""
    fake = FakePowercap(tmp_path / "powercap", power_w={"package-0": 40.0, "package-0/dram": 5.0},
                        max_energy_range_uj=120_000_000)
    with fake.start():
        yield fake


@pytest.fixture
def make_fake(tmp_path: Path) -> Iterator[object]:
    """A maker of fake powercap trees (:class:`FakePowercap`, ``amd=True`` for
    :meth:`FakePowercap.amd`), each under its own folder of ``tmp_path``, closed after the
    test."""
    made: list[FakePowercap] = []

    def make(*args: object, amd: bool = False, **kwargs: object) -> FakePowercap:
        root = tmp_path / f"powercap{len(made)}"
        fake = FakePowercap.amd(root, **kwargs) if amd else FakePowercap(root, *args, **kwargs)
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()
