"""A fake hwmon sysfs tree (``<root>/class/hwmon/hwmonN/``) for the hwmon probe's tests.

    fake = FakeHwmon(tmp_path / "sys")
    grace = fake.device("grace", [("power", 1, "Module Power Socket 0"),
                                   ("power", 2, "Grace Power Socket 0")])
    fake.set(grace, "power", 1, 250.0)      # watts (written as microwatts)
    fake.add_energy(amd, 3, 12.5)           # joules added to energy3_input (microjoules)

Values are written with one ``pwrite`` of a fixed-width field, so a concurrent read never sees
a torn number. File modes can be set to 0 to simulate unreadable sensors (root ignores them:
tests use an opener-free check by removing read permission and running as non-root, or a
directory in place of a file).
"""

from __future__ import annotations

import os
from pathlib import Path

WIDTH = 24


def write_value(path: Path, value: float) -> None:
    """Write the integer ``value`` as a sysfs attribute does: one ``pwrite`` of a fixed-width
    field (a concurrent reader never sees a torn number)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, f"{round(value):<{WIDTH - 1}d}\n".encode(), 0)
    finally:
        os.close(fd)


class FakeHwmon:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.base = self.root / "class" / "hwmon"
        self.base.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._energy_uj: dict[tuple[str, int], int] = {}

    def device(self, name: str, sensors: list[tuple[str, int, str | None]]) -> str:
        """A device ``hwmonN`` named ``name`` with ``(kind, index, label)`` sensors (kind
        ``energy`` or ``power``; label None: no label file); returns its directory name."""
        hw = f"hwmon{self._count}"
        self._count += 1
        d = self.base / hw
        d.mkdir()
        (d / "name").write_text(name + "\n")
        for kind, index, label in sensors:
            self._write(d / f"{kind}{index}_input", 0)
            if label is not None:
                (d / f"{kind}{index}_label").write_text(label + "\n")
            if kind == "energy":
                self._energy_uj[(hw, index)] = 0
        return hw

    @staticmethod
    def _write(path: Path, value: int) -> None:
        write_value(path, value)

    def set_power(self, hw: str, index: int, watts: float) -> None:
        self._write(self.base / hw / f"power{index}_input", round(watts * 1e6))

    def add_energy(self, hw: str, index: int, joules: float) -> int:
        """Add ``joules`` to the counter; returns the new value in microjoules."""
        value = self._energy_uj[(hw, index)] + round(joules * 1e6)
        self.set_energy_uj(hw, index, value)
        return value

    def set_energy_uj(self, hw: str, index: int, value: int) -> None:
        self._energy_uj[(hw, index)] = value
        self._write(self.base / hw / f"energy{index}_input", value)
