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
                  st.integers(0, 1), st.booleans())
#: per read: a power (W) or None (_PMM unknown: -ENODATA on fixed kernels, 4294967295000 before)
reading = st.one_of(st.integers(0, 2000), st.none())


@settings(max_examples=40, deadline=None)
@given(meters=st.lists(meter, min_size=1, max_size=6,
                       unique_by=lambda m: (m[1], m[2]) if m[1] else object()),
       first=st.integers(0, 2000),
       reads=st.lists(st.tuples(st.floats(0.1, 30.0), st.lists(reading, min_size=6,
                                                                max_size=6)),
                      min_size=1, max_size=5))
def test_every_layout_mix_is_found_once_and_summed_once(
        tmp_path_factory: pytest.TempPathFactory, meters: list[tuple[str, str | None, int, bool]],
        first: int, reads: list[tuple[float, list[int | None]]]) -> None:
    """Power varies between reads, and some reads are _PMM's unknown: each meter's energy is
    the trapezoid over its known samples only (the gaps bridged), whatever the layout."""
    fake, clock = FakeHwmon(tmp_path_factory.mktemp("hw")), SimClock(0.0)
    made = []
    for layout, rail, socket, fixed in meters:
        m = fake.acpi_power_meter(layout=layout, fixed_unknown=fixed,
                                  oem_info=f"{rail} Power Socket {socket}" if rail else "")
        made.append((m, [(clock.s(), fake.set_meter_power(m, first) / 1e6)]))
    [probe] = discover_hwmon(DiscoveryContext(sysfs_root=fake.root), clock=clock.s, io=fake.io)
    assert isinstance(probe, HwmonProbe)
    assert len(probe.channels) == len(meters)
    energy: dict[str, float] = {}
    for dt, watts in reads:
        clock.advance(dt)
        for (m, samples), w in zip(made, watts, strict=False):
            fake.set_meter_unknown(m, w is None)
            if w is not None:
                samples.append((clock.s(), fake.set_meter_power(m, w) / 1e6))
        energy = probe.read()
    truth = [sum(0.5 * (p0 + p1) * (t1 - t0)
                 for (t0, p0), (t1, p1) in zip(samples, samples[1:], strict=False))
             for _, samples in made]
    assert sorted(energy.values()) == pytest.approx(sorted(truth), rel=1e-9, abs=1e-6)
    sockets = {s for _, rail, s, _ in meters if rail == "Grace"}
    expected = sum(e for e, (_, rail, s, _) in zip(truth, meters, strict=True)
                   if rail == "Grace" or (rail in ("CPU", "SysIO") and s not in sockets))
    assert energy_summary(probe.channels, energy)["total"] == pytest.approx(expected, abs=1e-6)
    probe.close()
