"""Property: whatever mix of acpi_power_meter layouts a machine shows (attributes on the ACPI
device through hwmonN/device, before the with_info conversion; in hwmonN/ after it, under the
ACPI or the platform device), every meter is found once with its energy, and the total counts
each Grace socket once (its rails only where the socket has no meter of its own)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.probes.base import DiscoveryContext, energy_summary
from energymeter.probes.hwmon import HwmonProbe
from energymeter.probes.hwmon import discover as discover_hwmon
from tests.fakes.hwmon import FakeHwmon
from tests.timing import SimClock

RAILS = ("Module", "Grace", "CPU", "SysIO", None)  # None: a meter without oem_info

meter = st.tuples(st.sampled_from(("acpi", "hwmon", "platform")), st.sampled_from(RAILS),
                  st.integers(0, 1), st.integers(0, 2000))


@settings(max_examples=40, deadline=None)
@given(meters=st.lists(meter, min_size=1, max_size=8,
                       unique_by=lambda m: (m[1], m[2]) if m[1] else object()),
       seconds=st.floats(0.1, 100.0))
def test_every_layout_mix_is_found_once_and_summed_once(
        tmp_path_factory: pytest.TempPathFactory, meters: list[tuple[str, str | None, int, int]],
        seconds: float) -> None:
    fake, clock = FakeHwmon(tmp_path_factory.mktemp("hw")), SimClock(0.0)
    for layout, rail, socket, watts in meters:
        m = fake.acpi_power_meter(layout=layout,
                                  oem_info=f"{rail} Power Socket {socket}" if rail else "")
        fake.set_meter_power(m, watts)
    [probe] = discover_hwmon(DiscoveryContext(sysfs_root=fake.root), clock=clock.s, io=fake.io)
    assert isinstance(probe, HwmonProbe)
    assert len(probe.channels) == len(meters)
    t0 = clock.s()
    clock.advance(seconds)
    dt = clock.s() - t0
    energy = probe.read()
    assert sorted(energy.values()) == pytest.approx(sorted(w * dt for *_, w in meters))
    sockets = {s for _, rail, s, _ in meters if rail == "Grace"}
    expected = sum(w * dt for _, rail, s, w in meters
                   if rail == "Grace" or (rail in ("CPU", "SysIO") and s not in sockets))
    assert energy_summary(probe.channels, energy)["total"] == pytest.approx(expected)
    probe.close()
