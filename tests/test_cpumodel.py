"""The estimated CPU model: name matching, sockets, integration, warning. No hardware needed."""

from __future__ import annotations

import time
from collections import namedtuple

import pytest

from energymeter.probes.base import DiscoveryContext, Unavailable
from energymeter.probes.cpumodel import (
    DEFAULT_W_PER_LOGICAL_CPU,
    IDLE_FRACTION,
    CpuModelProbe,
    TdpEntry,
    discover,
    load_tdp_table,
    match_tdp,
    normalise_cpu_name,
    package_threads_from_name,
    parse_tdp_table,
)
from energymeter.probes.proc import count_packages, model_name_from_cpuinfo

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def times(busy_s: float, idle_s: float, iowait_s: float = 0.0, guest_s: float = 0.0) -> Times:
    # guest time is already inside user on Linux: it must not count twice.
    return Times(busy_s, 0.0, 0.0, idle_s, iowait_s, 0.0, 0.0, 0.0, guest_s, 0.0)


class Script:
    """A replayable source: each call returns the next value."""

    def __init__(self, values: list) -> None:
        self.values = list(values)

    def __call__(self):
        return self.values.pop(0)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "xeon gold 6248"),
        ("AMD Ryzen 9 5950X 16-Core Processor", "ryzen 9 5950x"),
        ("AMD EPYC 7763 64-Core Processor", "epyc 7763"),
        ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "core i7-8700"),
        ("12th Gen Intel(R) Core(TM) i7-12700K", "core i7-12700k"),
        ("AMD Ryzen 7 PRO 4750U with Radeon Graphics", "ryzen 7 pro 4750u"),
        ("AMD FX(tm)-8350 Eight-Core Processor", "fx-8350"),
        ("Intel(R) Core(TM)2 Duo CPU     E8400  @ 3.00GHz", "core 2 duo e8400"),
        ("Intel Xeon Processor (Cascadelake)", "xeon"),
        ("AMD Ryzen 5 2600 (OEM Only)", "ryzen 5 2600"),
    ],
)
def test_normalise(raw: str, normalised: str) -> None:
    assert normalise_cpu_name(raw) == normalised


@pytest.mark.parametrize(
    ("model", "name", "tdp_w"),
    [
        ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "Intel Xeon Gold 6248", 150.0),
        ("Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz", "Intel Xeon E5-2690 v4", 135.0),
        ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "Intel Core i7-8700", 65.0),
        ("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz", "Intel Core i7-8700K", 95.0),
        ("AMD Ryzen 9 5950X 16-Core Processor", "AMD Ryzen 9 5950X", 105.0),
        ("AMD EPYC 7763 64-Core Processor", "AMD EPYC 7763", 280.0),
        ("AMD Opteron(TM) Processor 6276", "AMD Opteron 6276", 115.0),
    ],
)
def test_match_real_names(model: str, name: str, tdp_w: float) -> None:
    entry = match_tdp(model)
    assert entry is not None
    assert (entry.name, entry.tdp_w) == (name, tdp_w)


@pytest.mark.parametrize(
    "model",
    ["Intel(R) Xeon(R) Processor", "Intel(R) Xeon(R) CPU @ 2.20GHz", "Frobnicator 9000 X", ""],
)
def test_unknown_names_do_not_match(model: str) -> None:
    assert match_tdp(model) is None


def test_match_prefers_longest_and_never_crosses_vendors() -> None:
    table = parse_tdp_table("Name,TDP\nIntel Xeon E5-2690,135\nIntel Xeon E5-2690 v4,135.5\n"
                            "6238,115\nIntel Xeon,1\n")
    entry = match_tdp("Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz", table)
    assert entry is not None and entry.name == "Intel Xeon E5-2690 v4"
    # a bare (AMD Opteron) number must not match an Intel part with the same digits
    assert match_tdp("Intel(R) Xeon(R) Gold 6238 CPU @ 2.10GHz", table) is None
    assert match_tdp("AMD Opteron(tm) Processor 6238", table).name == "6238"
    # family-only entries carry no model number and are never used
    assert match_tdp("Intel(R) Xeon(R) Processor", table) is None


def test_table_is_shipped_and_large() -> None:
    assert len(load_tdp_table()) > 4000


CPUINFO_2S = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
physical id\t: 0

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
physical id\t: 1

processor\t: 2
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
physical id\t: 0

processor\t: 3
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
physical id\t: 1
"""


def test_cpuinfo_parsing() -> None:
    assert count_packages(CPUINFO_2S) == 2
    assert count_packages("processor\t: 0\nmodel name\t: X\n") == 1
    assert count_packages("") == 1
    assert model_name_from_cpuinfo(CPUINFO_2S) == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"
    assert model_name_from_cpuinfo("processor\t: 0\n") is None


def test_discover_multi_socket_multiplies_tdp() -> None:
    (probe,) = discover(DiscoveryContext(), why="no RAPL", cpuinfo_text=CPUINFO_2S,
                        logical_cpus=80, cpu_times=lambda: times(1.0, 1.0))
    assert isinstance(probe, CpuModelProbe)
    assert probe.tdp_w == 300.0
    assert probe.idle_w == pytest.approx(IDLE_FRACTION * 300.0)
    meta = probe.channels[0].meta
    assert meta["tdp_source"] == "table:Intel Xeon Gold 6248"
    assert meta["tdp_w"] == 300.0
    assert meta["model_name"] == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"
    (warning,) = probe.drain_warnings()
    assert "'Intel Xeon Gold 6248'" in warning and "2 packages" in warning


def test_discover_unknown_model_uses_default() -> None:
    (probe,) = discover(DiscoveryContext(), why="rapl: no zones",
                        model_name="Intel(R) Xeon(R) Processor", cpuinfo_text="",
                        logical_cpus=6, cpu_times=lambda: times(1.0, 1.0))
    assert isinstance(probe, CpuModelProbe)
    assert probe.tdp_w == DEFAULT_W_PER_LOGICAL_CPU * 6
    assert probe.channels[0].meta["tdp_source"] == "default"
    facts = probe.describe()
    assert facts["tdp_source"] == "default" and facts["logical_cpus"] == 6
    assert facts["estimated"] is True
    (warning,) = probe.drain_warnings()
    assert "default" in warning and "6 logical CPUs" in warning


def test_integration_is_exact_for_mean_utilisation() -> None:
    # 2 CPUs: 4 s of CPU time in 2 s of wall time, half of it busy -> utilisation 0.5
    cpu = Script([times(10.0, 10.0), times(12.0, 12.0), times(12.0, 16.0)])
    clock = Script([0, 2_000_000_000, 3_000_000_000])
    probe = CpuModelProbe(100.0, 30.0, cpu_times=cpu, clock_ns=clock)
    assert probe.read() == {"cpu0": 130.0}  # (30 + 70 * 0.5) * 2
    # then 1 s fully idle: + 30 J
    assert probe.read() == {"cpu0": 160.0}


def test_integration_ignores_guest_and_iowait_and_clamps() -> None:
    cpu = Script([
        times(0.0, 0.0),
        times(1.0, 0.0, iowait_s=1.0, guest_s=1.0),  # busy 1 of 2 -> 0.5 (guest is in user)
        times(1.0, 0.0, iowait_s=1.0, guest_s=1.0),  # no tick elapsed: keep utilisation
        times(0.5, 10.0, iowait_s=1.0, guest_s=1.0),  # busy went backwards: clamp to 0
    ])
    clock = Script([0, 1_000_000_000, 2_000_000_000, 3_000_000_000])
    probe = CpuModelProbe(100.0, 30.0, cpu_times=cpu, clock_ns=clock)
    assert probe.read()["cpu0"] == pytest.approx(65.0)
    assert probe.read()["cpu0"] == pytest.approx(130.0)
    assert probe.read()["cpu0"] == pytest.approx(160.0)


def test_warning_channel_and_describe() -> None:
    probe = CpuModelProbe(100.0, 30.0, model_name="Some CPU", tdp_source="table:Some CPU",
                          why="rapl: permission denied", cpu_times=lambda: times(1.0, 1.0))
    (channel,) = probe.channels
    assert (channel.id, channel.kind, channel.source, channel.method) == (
        "cpu0", "cpu", "model", "model")
    assert channel.device == "Some CPU"
    assert dict(channel.meta) == {"tdp_w": 100.0, "idle_w": 30.0,
                                  "tdp_source": "table:Some CPU", "model_name": "Some CPU"}
    (warning,) = probe.drain_warnings()
    assert "estimated" in warning.lower()
    assert "rapl: permission denied" in warning
    assert "idle 30 %" in warning and "/proc/stat" in warning
    assert probe.drain_warnings() == []
    facts = probe.describe()
    assert facts["tdp_w"] == 100.0 and facts["idle_w"] == 30.0
    assert facts["why"] == "rapl: permission denied"


def test_rejects_impossible_parameters() -> None:
    with pytest.raises(ValueError):
        CpuModelProbe(0.0, 0.0, cpu_times=lambda: times(1.0, 1.0))
    with pytest.raises(ValueError):
        CpuModelProbe(10.0, 20.0, cpu_times=lambda: times(1.0, 1.0))


def test_on_this_machine_energy_increases_over_busy_loop() -> None:
    results = discover(DiscoveryContext(), why="no RAPL")
    (probe,) = results
    assert not isinstance(probe, Unavailable)
    assert probe.channels[0].method == "model"
    assert "no RAPL" in probe.drain_warnings()[0]
    first = probe.read()["cpu0"]
    end = time.monotonic() + 0.3
    x = 0
    while time.monotonic() < end:
        x += 1
    second = probe.read()["cpu0"]
    assert second > first >= 0.0
    # at most TDP for the elapsed time (with a generous margin for the first read's interval)
    assert second <= probe.tdp_w * 2.0


def test_candidate_filter_agrees_with_the_whole_table() -> None:
    """Discovery matches against only the lines sharing a digit run with the model name; that
    must give exactly what the whole indexed table gives."""
    from energymeter.probes.cpumodel import _tdp_table_text

    full = load_tdp_table()
    names = [line.split(",")[0].strip('"') for line in _tdp_table_text().splitlines()[1::41]]
    names += ["Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "AMD EPYC 7763 64-Core Processor",
              "AMD Ryzen 9 5950X 16-Core Processor", "Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz",
              "Intel(R) Xeon(R) Processor", "AMD Opteron(tm) Processor 6238"]
    for name in names:
        assert match_tdp(name) == match_tdp(name, full), name
    assert match_tdp("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz") is not None


# -- virtual machines and the cpu_tdp_w override -------------------------------
def _vm_cpuinfo(model: str, cpus: int = 2) -> str:
    return "\n\n".join(f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: 0\n"
                       f"flags\t\t: fpu vme sse2 hypervisor avx2\n" for i in range(cpus)) + "\n"


TABLE = {("epyc", "7763"): TdpEntry("AMD EPYC 7763", 280.0, "amd"),
         ("xeon", "gold", "6248"): TdpEntry("Intel Xeon Gold 6248", 150.0, "intel")}


def _vm_probe(model: str, **kw: object) -> CpuModelProbe:
    (probe,) = discover(DiscoveryContext(**kw), why="no RAPL", cpuinfo_text=_vm_cpuinfo(model),
                        logical_cpus=2, table=TABLE, cpu_times=lambda: times(1.0, 1.0))
    assert isinstance(probe, CpuModelProbe)
    return probe


def test_a_vm_is_charged_its_share_of_the_package_not_the_whole_package() -> None:
    probe = _vm_probe("AMD EPYC 7763 64-Core Processor")
    assert probe.tdp_w == pytest.approx(280.0 * 2 / 128)  # not 280 W for 2 vCPUs
    (warning,) = probe.drain_warnings()
    assert "2 of 128 hardware threads per package" in warning


def test_a_vm_whose_package_size_is_unknown_uses_the_per_cpu_default() -> None:
    probe = _vm_probe("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz")
    assert probe.tdp_w == DEFAULT_W_PER_LOGICAL_CPU * 2  # not 150 W
    (warning,) = probe.drain_warnings()
    assert "whole host package" in warning and "cpu_tdp_w" in warning
    # in-table and not-in-table VMs now agree within a small factor (they were ~30x apart)
    unknown = _vm_probe("Intel(R) Xeon(R) Processor")
    shared = _vm_probe("AMD EPYC 7763 64-Core Processor")
    assert 0.3 < shared.tdp_w / unknown.tdp_w < 3


def test_a_vm_spanning_two_packages_is_charged_both() -> None:
    model = "AMD EPYC 7763 64-Core Processor"
    text = "\n\n".join(f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: {i // 128}\n"
                       "flags\t\t: hypervisor\n" for i in range(256)) + "\n"
    (probe,) = discover(DiscoveryContext(), why="no RAPL", cpuinfo_text=text, logical_cpus=256,
                        table=TABLE, cpu_times=lambda: times(1.0, 1.0))
    assert probe.tdp_w == pytest.approx(560.0)  # as bare metal with two sockets


def test_cpu_tdp_w_overrides_the_model() -> None:
    probe = _vm_probe("AMD EPYC 7763 64-Core Processor", cpu_tdp_w=12.5)
    assert probe.tdp_w == 12.5 and probe.channels[0].meta["tdp_source"] == "setting"


def test_package_threads_from_name() -> None:
    assert package_threads_from_name("AMD Ryzen 9 5950X 16-Core Processor") == 32
    assert package_threads_from_name("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz") is None


def test_cpu_tdp_w_setting_reaches_the_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from energymeter import measure
    from energymeter.errors import ConfigError

    with measure("tdp", powercap_root=tmp_path / "absent", region="SE", out=tmp_path,
                 cpu_tdp_w=9.5) as m:
        pass
    (cpu,) = m.report.channels
    assert cpu.channel.method == "model" and cpu.channel.meta["tdp_w"] == 9.5
    assert cpu.channel.meta["tdp_source"] == "setting"
    for bad in (0, -3, 1e9, "hot", True):
        with pytest.raises(ConfigError, match="cpu_tdp_w"):
            measure("tdp", cpu_tdp_w=bad)


def test_proc_stat_fast_path_agrees_with_cpu_seconds(tmp_path) -> None:
    """The sampler's fast read of /proc/stat gives what the named-field path gives: steal
    busy, idle and iowait not, guest counted once (inside user and nice)."""
    from energymeter.probes.proc import ProcStatTimes, cpu_seconds

    stat = tmp_path / "stat"
    stat.write_text("cpu  4705 150 1120 16250 520 30 45 70 900 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    times = ProcStatTimes(str(stat))
    try:
        busy, total = times.busy_total_s()
        named = cpu_seconds(times())
    finally:
        times.close()
    assert busy == pytest.approx(named.busy_s + named.steal_s)
    assert total == pytest.approx(named.total_s)
    assert total == pytest.approx((4705 + 150 + 1120 + 16250 + 520 + 30 + 45 + 70) / 100)
    assert busy == pytest.approx(total - (16250 + 520) / 100)
