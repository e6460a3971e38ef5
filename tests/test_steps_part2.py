"""Property tests of the pure steps that long probe and sampler functions were split into
(select_visible, the NVML opening, the CPU model's TDP choice, the probes inspection): each
step on its own, and each step agreeing with the function that composes it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.errors import ConfigError
from energymeter.probes import cpumodel, nvml, visible
from energymeter.probes import inspect as probes_inspect
from energymeter.probes.base import KINDS, METHODS, Channel
from energymeter.probes.cpumodel import DEFAULT_W_PER_LOGICAL_CPU, TdpEntry
from energymeter.probes.visible import (
    ACCEPTED_VISIBLE_DEVICES,
    GpuIdentity,
    select_visible,
)

# -- select_visible: CUDA_VISIBLE_DEVICES entries ---------------------------------------------

UUIDS = ["GPU-8932f937-d72c-4106-c12f-20bd9faed9f6", "GPU-8932aaaa-0000-1111-2222-333344445555",
         "GPU-1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718"]
MIGS = ["MIG-0aa11bb2-cc33-5d44-8e55-ff6677889900", "MIG-1bb22cc3-dd44-5e55-8f66-007788990011"]


def _gpus(count: int, with_mig: bool = False) -> list[GpuIdentity]:
    return [GpuIdentity(i, UUIDS[i], f"GPU model {i}",
                        tuple(MIGS) if with_mig and i == 0 else ())
            for i in range(count)]


ENTRIES = st.one_of(
    st.integers(-2, 4).map(str),
    st.sampled_from([*UUIDS, *MIGS, "GPU-8932", "GPU-1f2e", "gpu-1F2E3D4C", "MIG-0aa1", "MIG-",
                     "MIG-GPU-8932f937-d72c-4106-c12f-20bd9faed9f6/1/0", "MIG-GPU-8932/1/0",
                     "MIG-GPU-ffff/0/0", "banana", "", " 1 ", "+1"]),
)


@settings(max_examples=200)
@given(number=st.integers(-50, 50), count=st.integers(0, 3))
def test_an_index_entry_is_a_gpu_the_terminator_or_out_of_range(number: int,
                                                                  count: int) -> None:
    gpus = _gpus(count)
    entry = visible._index_entry(number, gpus)
    if number < 0:
        assert entry.terminator and entry.index is None and not entry.problem
    elif number < count:
        assert (entry.index, entry.by_index, entry.problem) == (gpus[number].nvml_index, True, "")
    else:
        assert entry.index is None and not entry.by_index
        assert entry.problem == (f"there is no GPU with index {number} (NVML sees {count}: "
                                 f"0..{count - 1})")


@settings(max_examples=200)
@given(which=st.integers(0, 2), cut=st.integers(4, 40), upper=st.booleans())
def test_a_uuid_prefix_names_its_gpu_exactly_when_it_is_unique(which: int, cut: int,
                                                               upper: bool) -> None:
    gpus = _gpus(3)
    prefix = UUIDS[which][:cut]
    entry = visible._parse_entry(prefix.upper() if upper else prefix, gpus)
    matches = [g.nvml_index for g in gpus if g.uuid.startswith(prefix)]
    if len(matches) == 1:
        assert (entry.index, entry.mig_uuid, entry.problem) == (which, "", "")
    else:
        assert entry.index is None and "ambiguous" in entry.problem
    assert not entry.by_index


@settings(max_examples=100)
@given(which=st.integers(0, 1), cut=st.integers(4, 40))
def test_a_mig_entry_names_the_parent_gpu_and_the_full_mig_uuid(which: int, cut: int) -> None:
    prefix = MIGS[which][:cut]
    entry = visible._parse_entry(prefix, _gpus(2, with_mig=True))
    if sum(m.startswith(prefix) for m in MIGS) == 1:
        assert (entry.index, entry.mig_uuid, entry.problem) == (0, MIGS[which], "")
    else:
        assert entry.index is None and entry.problem


@settings(max_examples=200)
@given(entries=st.lists(st.sampled_from(["0", "1", "GPU-x", "7"]), min_size=1, max_size=5),
       position=st.integers(0, 4), kept=st.integers(0, 4))
def test_an_invalid_entry_is_fatal_first_and_a_warning_naming_the_rest_later(
        entries: list[str], position: int, kept: int) -> None:
    position = min(position, len(entries) - 1)
    value = ",".join(entries)
    if position == 0:
        with pytest.raises(ConfigError, match="CUDA stops at the first invalid entry"):
            visible._invalid_entry(value, entries, position, "why", kept)
        return
    warning = visible._invalid_entry(value, entries, position, "why", kept)
    assert warning.startswith(f"CUDA_VISIBLE_DEVICES={value!r}: entry {entries[position]!r} "
                              "is invalid: why. Like CUDA, energymeter ignores it")
    assert f"({','.join(entries[position:])!r})" in warning
    assert f"measures only the {kept} GPU(s) listed before" in warning
    assert warning.endswith(ACCEPTED_VISIBLE_DEVICES)


@given(st.dictionaries(st.integers(0, 7), st.lists(st.sampled_from(MIGS), min_size=1,
                                                   max_size=2), max_size=4))
def test_one_mig_warning_per_gpu_in_the_order_named(migs: dict[int, list[str]]) -> None:
    warnings = visible._mig_warnings(migs)
    assert len(warnings) == len(migs)
    for warning, (index, names) in zip(warnings, migs.items(), strict=True):
        assert f"MIG device(s) {', '.join(names)} on GPU {index}:" in warning
        assert "the whole GPU's" in warning


@settings(max_examples=300)
@given(entries=st.lists(ENTRIES, min_size=1, max_size=6), count=st.integers(1, 3),
       with_mig=st.booleans())
def test_select_visible_is_its_steps(entries: list[str], count: int, with_mig: bool) -> None:
    """select_visible = each entry parsed and added in turn, up to CUDA's terminator, an
    invalid entry or a repeat (fatal when it is the first entry)."""
    gpus = _gpus(count, with_mig)
    value = ",".join(entries)
    expected: list[int] = []
    named_migs: set[tuple[int, str]] = set()
    by_index = fatal = False
    for position, raw in enumerate(value.strip().split(",")):
        entry = visible._parse_entry(raw.strip(), gpus)
        if entry.terminator:
            break
        by_index = by_index or entry.by_index
        repeat = ((entry.index, entry.mig_uuid) in named_migs if entry.mig_uuid
                  else entry.index in expected)
        if entry.problem or repeat:
            fatal = position == 0
            break
        if entry.mig_uuid:
            named_migs.add((entry.index, entry.mig_uuid))  # type: ignore[arg-type]
        if entry.index not in expected:
            expected.append(entry.index)  # type: ignore[arg-type]
    if value.strip() == "":
        assert select_visible(value, gpus).gpus == ()
        return
    if fatal:
        with pytest.raises(ConfigError, match="CUDA stops at the first invalid entry"):
            select_visible(value, gpus)
        return
    selection = select_visible(value, gpus)
    assert [g.nvml_index for g in selection.gpus] == expected
    assert sorted((g.nvml_index, m) for g in selection.gpus for m in g.mig_uuids) == sorted(
        named_migs)
    assert selection.by_index == by_index


# -- NVML: the visible MIG devices' share of their GPU -----------------------------------------

COUNTS = st.integers(0, 200)


@settings(max_examples=300)
@given(sms=COUNTS, slices=st.integers(0, 8), whole_sms=COUNTS, whole_slices=st.integers(0, 8))
def test_a_mig_share_is_by_sms_else_by_slices_at_most_one(sms: int, slices: int, whole_sms: int,
                                                          whole_slices: int) -> None:
    whole = nvml._Capacity(whole_sms, whole_slices, "largest GPU-instance profile 7g.80gb")
    handles = ("mig-a", "mig-b")
    found = nvml._capacity_share(sms, slices, whole, handles)
    assert found.handles == handles
    if whole_sms > 0 and sms > 0:
        assert found.method == nvml.MIG_SHARE_SMS
        assert found.share == min(1.0, sms / whole_sms)
        assert found.detail == f"{sms} of {whole_sms} SMs (largest GPU-instance profile 7g.80gb)"
    elif whole_slices > 0 and slices > 0:
        assert found.method == nvml.MIG_SHARE_SLICES
        assert found.share == min(1.0, slices / whole_slices)
        assert found.detail.startswith(f"{slices} of {whole_slices} slices (")
    else:
        assert found.share is None and found.method == ""
        assert found.detail.startswith("NVML gave neither SM nor slice counts")
    assert found.share is None or 0 < found.share <= 1


@given(has_counter=st.booleans(), poll_hz=st.floats(nvml.MIN_POLL_HZ, 10_000))
def test_a_gpu_is_read_by_its_counter_else_by_polled_power(has_counter: bool,
                                                          poll_hz: float) -> None:
    method, resolution_s = nvml._energy_method(has_counter, poll_hz)
    if has_counter:
        assert (method, resolution_s) == ("counter", nvml.COUNTER_UPDATE_PERIOD_S)
    else:
        assert method == "integrated" and resolution_s == 1.0 / poll_hz
        assert resolution_s <= 1.0 / nvml.MIN_POLL_HZ


@settings(max_examples=300)
@given(models=st.lists(st.sampled_from(["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB",
                                        "Tesla T4"]), min_size=1, max_size=4),
       order=st.sampled_from([None, "PCI_BUS_ID", " pci_bus_id ", "FASTEST_FIRST", "bogus"]),
       by_index=st.booleans(), data=st.data())
def test_the_device_order_warning_needs_mixed_models_an_index_and_no_pci_order(
        models: list[str], order: str | None, by_index: bool, data: st.DataObject) -> None:
    identities = [GpuIdentity(i, f"GPU-{i}", name) for i, name in enumerate(models)]
    chosen = data.draw(st.lists(st.sampled_from(range(len(models))), min_size=1, unique=True))
    selection = visible.Selection(tuple(visible.VisibleGpu(i) for i in chosen),
                                  by_index=by_index)
    env = {} if order is None else {"CUDA_DEVICE_ORDER": order}
    warnings = nvml._device_order_warning(env, selection, identities)
    pci_order = order is not None and order.strip().upper() == "PCI_BUS_ID"
    if by_index and not pci_order and len(set(models)) > 1:
        (warning,) = warnings
        assert warning.startswith("this machine mixes GPU models and CUDA_DEVICE_ORDER is not "
                                  "PCI_BUS_ID")
        assert warning.endswith(
            f"(models: {', '.join(sorted({models[i] for i in chosen}))})")
    else:
        assert warnings == []


# -- the CPU model: which TDP it uses ------------------------------------------------------------


@settings(max_examples=300)
@given(cores=st.one_of(st.none(), st.integers(1, 128)), in_table=st.booleans(),
       table_w=st.floats(5, 500), setting_w=st.one_of(st.none(), st.floats(1, 2000)),
       packages=st.integers(1, 8), logical_cpus=st.integers(1, 512), vm=st.booleans())
def test_the_tdp_is_the_first_rule_that_applies(cores: int | None, in_table: bool,
                                                table_w: float, setting_w: float | None,
                                                packages: int, logical_cpus: int,
                                                vm: bool) -> None:
    model = (f"AMD EPYC 7763 {cores}-Core Processor" if cores is not None
             else "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz")
    entry = TdpEntry("Some Table Name", table_w, "amd") if in_table else None
    tdp = cpumodel._choose_tdp(model, entry, setting_w=setting_w, packages=packages,
                               logical_cpus=logical_cpus, vm=vm)
    default_w = DEFAULT_W_PER_LOGICAL_CPU * logical_cpus
    if setting_w is not None:
        assert (tdp.tdp_w, tdp.source) == (setting_w, "setting")
    elif entry is None:
        assert (tdp.tdp_w, tdp.source) == (default_w, "default")
        assert tdp.how.endswith(f"({model!r} is not in the table)")
    elif not vm:
        assert (tdp.tdp_w, tdp.source) == (table_w * packages, "table:Some Table Name")
        assert ("packages" in tdp.how) == (packages > 1)
    elif cores is not None:
        assert tdp.source == "table:Some Table Name (VM share)"
        assert tdp.tdp_w == table_w * min(float(packages), logical_cpus / (2 * cores))
        assert tdp.tdp_w <= table_w * packages  # a guest never pays more than its packages
    else:
        assert (tdp.tdp_w, tdp.source) == (default_w, "default (VM)")
        assert "set cpu_tdp_w" in tdp.how
    assert tdp.tdp_w > 0


# -- energymeter probes: what is measurable, per kind --------------------------------------------

CHANNELS = st.lists(st.builds(
    Channel, id=st.sampled_from(["package-0", "core-0", "gpu0", "cpu0"]),
    kind=st.sampled_from(KINDS), device=st.just("device"), source=st.just("fake"),
    method=st.sampled_from([m for m in METHODS if m != "mixed"]),
    part_of=st.one_of(st.none(), st.just("package-0"))), max_size=8)


@given(CHANNELS)
def test_measurable_lists_each_kinds_methods_without_sub_zones(channels: list[Channel]) -> None:
    measurable = probes_inspect._measurable_methods(channels)
    assert list(measurable) == [k for k in KINDS if k in measurable]
    for kind in KINDS:
        methods = {c.method for c in channels if c.kind == kind and c.part_of is None}
        assert measurable.get(kind, "") == "+".join(sorted(methods))


@given(CHANNELS)
def test_a_gpu_row_per_gpu_channel_in_order(channels: list[Channel]) -> None:
    rows = probes_inspect._gpu_rows(channels)
    gpus = [c for c in channels if c.kind == "gpu"]
    assert [(r["channel"], r["name"], r["method"], r["source"]) for r in rows] == [
        (c.id, c.device, c.method, c.source) for c in gpus]
