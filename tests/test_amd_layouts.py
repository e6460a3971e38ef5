"""AMD GPU visibility and package layouts: ROCR_VISIBLE_DEVICES then HIP_VISIBLE_DEVICES /
CUDA_VISIBLE_DEVICES against cases whose results come from upstream (ROCm's hip-tests, ROCm's
documentation, reports from real hardware), glibc's own strtol, and, as a consistency check
only, a reference model of the two runtimes written here from their sources; and the layouts
of real nodes (MI250X under SLURM, MI300X in CPX, Radeon cards without serials) through the
fake amdsmi."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.probes.amdsmi import AmdSmiProbe, discover
from energymeter.probes.base import DiscoveryContext, PartialRead
from energymeter.probes.visible import _c_strtol, rocm_visible
from tests.fakes.amd import FakeAmdGpu, FakeAmdSmi
from tests.fakes.nvml import FakeClock

# -- reference model (a consistency check: written with the code, it shares its reading) -------
# ROCR-Runtime src/core/runtime/amd_filter_device.cpp (RvdFilter::BuildRvdTokenList,
# ProcessUuidToken, BuildUsrDeviceList) and flag.h (IsEnvVarSet), as prose:
#   unset -> all GPUs; "" -> none; tokens = getline(',') (no token after a trailing ','),
#   each upper-cased and trimmed; only the first len(gpus) tokens are looked at; an empty token
#   there -> token.at(0) throws -> the runtime fails (no GPU); a token starting with 'G' must be
#   5..20 chars and a prefix of exactly one "GPU-%016X"; else strtol(base 0) must eat it all;
#   stop (keeping what came before) at an invalid, out-of-range or repeated index.
# ROCm/clr rocclr/device/rocm/rocdevice.cpp (Device::init):
#   HIP_VISIBLE_DEVICES if non-empty else CUDA_VISIBLE_DEVICES; empty -> no filter; entries
#   between ','; an entry containing "GPU-" becomes the index of the first GPU whose
#   "GPU-%016x" contains it; then it must be exactly str(atoi(entry)) and < count, else stop;
#   a repeated index is skipped.


def _strtol_all(s: str) -> int | None:
    import re
    m = re.fullmatch(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", s)
    if not m:
        return None
    body = m.group(2)
    value = int(body, 16) if body[:2].lower() == "0x" else int(body, 8) if body[0] == "0" \
        else int(body)
    value = -value if m.group(1) == "-" else value
    value = max(-(2**63), min(2**63 - 1, value))
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def ref_rocr(value: str | None, ids: list[int]) -> list[int] | None:
    if value is None:
        return list(range(len(ids)))
    if value == "":
        return []
    tokens = value.split(",")
    if tokens[-1] == "":
        tokens = tokens[:-1]
    uuids = [f"GPU-{u:016X}" if u else "Invalid-UUID" for u in ids]
    out: list[int] = []
    for tok in tokens[: len(ids)]:
        tok = tok.upper().strip()
        if not tok:
            return None  # the runtime fails
        if tok.startswith("G"):
            if not 5 <= len(tok) <= 20:
                return out
            found = [i for i, u in enumerate(uuids) if u[: len(tok)] == tok and len(tok) <= len(u)]
            if len(found) != 1:
                return out
            idx = found[0]
        else:
            idx = _strtol_all(tok)
            if idx is None:
                return out
        if not 0 <= idx < len(ids) or idx in out:
            return out
        out.append(idx)
    return out


def ref_hip(env: dict[str, str], ids: list[int]) -> list[int]:
    value = env.get("HIP_VISIBLE_DEVICES") or env.get("CUDA_VISIBLE_DEVICES") or ""
    if not value:
        return list(range(len(ids)))
    uuids = [f"GPU-{u:016x}" if u else "GPU-XX" for u in ids]
    out: list[int] = []
    pos = 0
    while True:
        end = value.find(",", pos)
        end = len(value) if end < 0 else end
        entry = value[pos:end]
        if "GPU-" in entry:
            entry = next((str(i) for i, u in enumerate(uuids) if entry in u), entry)
        ok = entry.isascii() and entry.isdigit() and str(int(entry)) == entry
        if not ok or int(entry) >= len(ids):
            return out
        if int(entry) not in out:
            out.append(int(entry))
        pos = end + 1
        if pos >= len(value):
            return out


def ref_visible(env: dict[str, str], ids: list[int]) -> list[int]:
    rocr = ref_rocr(env.get("ROCR_VISIBLE_DEVICES"), ids)
    if not rocr:
        return []
    return [rocr[i] for i in ref_hip(env, [ids[j] for j in rocr])]


# -- strategies: every form the runtimes accept, and the ones they refuse ----------------------
IDS = [0x1A2B3C4D5E6F7081, 0x1A2B3C4D5E6F7082, 0x9999000011112222, 0, 0x00000000DEADBEEF]


def _entry(ids: list[int]) -> st.SearchStrategy[str]:
    n = len(ids)
    real = [u for u in ids if u]
    uuid_forms = st.sampled_from(real).flatmap(lambda u: st.sampled_from([
        f"GPU-{u:016X}", f"GPU-{u:016x}", (f"GPU-{u:016x}")[:9], (f"GPU-{u:016X}")[:12],
        f" GPU-{u:016x} ", f"gpu-{u:016x}"])) if real else st.just("GPU-0")
    return st.one_of(
        st.integers(-2, n + 1).map(str),
        st.sampled_from(["0x1", "01", "+1", " 1", "1 ", "08", "-0", "00", "", " ", "x",
                         "GPU-", "GPU-XX", "G", "GPU-ZZZZ", "4294967296"]),
        uuid_forms)


@st.composite
def _layout(draw: st.DrawFn) -> tuple[list[int], dict[str, str]]:
    ids = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=5))
    env: dict[str, str] = {}
    for name in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        if draw(st.booleans()):
            entries = draw(st.lists(_entry(ids), max_size=4))
            env[name] = ",".join(entries) + draw(st.sampled_from(["", "", ","]))
    return ids, env


@settings(max_examples=50, deadline=None)
@given(_layout())
def test_rocm_visibility_matches_the_runtimes(layout: tuple[list[int], dict[str, str]]) -> None:
    ids, env = layout
    assert list(rocm_visible(env, ids).gpus) == ref_visible(env, ids)


@pytest.mark.parametrize(("env", "want"), [
    ({"ROCR_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "1"}, [3]),  # HIP indexes ROCr's
    ({"ROCR_VISIBLE_DEVICES": ""}, []),  # set but empty: none
    ({"HIP_VISIBLE_DEVICES": ""}, [0, 1, 2, 3]),  # empty HIP: no filter (unlike CUDA)
    ({"HIP_VISIBLE_DEVICES": "", "CUDA_VISIBLE_DEVICES": "2"}, [2]),  # falls to CUDA's
    ({"HIP_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "2"}, [1]),  # HIP wins
    ({"ROCR_VISIBLE_DEVICES": "0x2,01"}, [2, 1]),  # strtol base 0
    ({"HIP_VISIBLE_DEVICES": "01"}, []),  # HIP: plain decimal only
    ({"ROCR_VISIBLE_DEVICES": "1,1,2"}, [1]),  # ROCr: a repeat ends the list
    ({"HIP_VISIBLE_DEVICES": "1,1,2"}, [1, 2]),  # HIP: a repeat is skipped
    ({"ROCR_VISIBLE_DEVICES": "0,,1"}, []),  # empty entry: ROCr fails
    ({"ROCR_VISIBLE_DEVICES": "3,2,1,0,"}, [3, 2, 1, 0]),  # order kept, trailing ','
])
def test_documented_cases(env: dict[str, str], want: list[int]) -> None:
    ids = IDS[:4]
    assert list(rocm_visible(env, ids).gpus) == want == ref_visible(env, ids)


# -- cases whose results come from upstream, not from the model above -------------------------
# Each expected list is what ROCm's own tests, ROCm's documentation or an observation on real
# hardware says the runtime shows, written as positions in KFD order. The ids are made up; the
# forms (indices, UUIDs as rocminfo prints them) are the sources'.
_UP = [0x1A2B3C4D5E6F7081, 0x00C0FFEE00C0FFEE, 0xDEADBEEFDEADBEEF, 0x0123456789ABCDEF]


def _rocminfo_uuid(i: int) -> str:
    """rocminfo's "Uuid:" of a GPU: HSA_AMD_AGENT_INFO_UUID, "GPU-" and the unique_id as
    std::hex (lower case), ROCR-Runtime src/core/runtime/amd_gpu_agent.cpp GetInfo."""
    return f"GPU-{_UP[i]:016x}"


UPSTREAM_CASES = [
    # ROCm/hip-tests catch/unit/device/hipGetDeviceCount.cc Unit_hipGetDeviceCount_HideDevices
    # with getDeviceCount_exe.cc: ROCR_VISIBLE_DEVICES and HIP_VISIBLE_DEVICES both set to
    # "0,...,i-1" -> hipGetDeviceCount == i, for every i from the GPU count down to 1.
    *[pytest.param({"ROCR_VISIBLE_DEVICES": v, "HIP_VISIBLE_DEVICES": v}, list(range(i)),
                   id=f"hip-tests-HideDevices-{i}")
      for i in range(4, 0, -1) for v in [",".join(str(j) for j in range(i))]],
    # ROCm/hip-tests catch/unit/device/hipDeviceGetUuid.cc
    # Unit_Uuid_FntlTstsFor_SetEnv_HIP_VISIBLE_DEVICES (UUIDs: the first 20 characters of
    # rocminfo's "Uuid:" lines). "Set Env in parent and verify UUID in child": one device,
    # the first GPU (chkUUIDFrmChildProc_Exe compares its UUID).
    pytest.param({"HIP_VISIBLE_DEVICES": _rocminfo_uuid(0)}, [0], id="hip-tests-uuid-child"),
    # "Get Dev Count from Child": two UUIDs -> 2.
    pytest.param({"HIP_VISIBLE_DEVICES": f"{_rocminfo_uuid(0)},{_rocminfo_uuid(1)}"}, [0, 1],
                 id="hip-tests-two-uuids"),
    # "Set mix Env variables": "0,<uuid of GPU 1>" -> 2.
    pytest.param({"HIP_VISIBLE_DEVICES": f"0,{_rocminfo_uuid(1)}"}, [0, 1],
                 id="hip-tests-mix"),
    # "Set Same UUID/Device ordinal more than once": "0,<uuid1>,<uuid0>,0" -> 2.
    pytest.param({"HIP_VISIBLE_DEVICES": f"0,{_rocminfo_uuid(1)},{_rocminfo_uuid(0)},0"},
                 [0, 1], id="hip-tests-same-twice"),
    # ROCm docs, "GPU isolation techniques" (rocm.docs.amd.com docs-5.4.3
    # understand/gpu_isolation.html, docs-6.1.2 conceptual/gpu-isolation.html):
    # ROCR_VISIBLE_DEVICES="0,GPU-DEADBEEFDEADBEEF" exposes "the 1. device and a device based
    # on UUID".
    pytest.param({"ROCR_VISIBLE_DEVICES": "0,GPU-DEADBEEFDEADBEEF"}, [0, 2],
                 id="rocm-docs-rocr-index-and-uuid"),
    # Same pages and HIP's env_variables.html: HIP_VISIBLE_DEVICES="0,2" exposes those two.
    pytest.param({"HIP_VISIBLE_DEVICES": "0,2"}, [0, 2], id="rocm-docs-hip-0-2"),
    # pytorch/pytorch#140398 (AMD, on hardware): ROCR_VISIBLE_DEVICES="0"
    # HIP_VISIBLE_DEVICES="0,1" -> 1 device (hipGetDeviceCount, as PyTorch 2.0 reported it).
    pytest.param({"ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "0,1"}, [0],
                 id="pytorch-140398"),
    # mcmonkeyprojects/SwarmUI#565 (on hardware): ROCR_VISIBLE_DEVICES=1 HIP_VISIBLE_DEVICES=1
    # "can end up with no device available" (HIP indexes what ROCr left: one GPU, index 0).
    pytest.param({"ROCR_VISIBLE_DEVICES": "1", "HIP_VISIBLE_DEVICES": "1"}, [],
                 id="swarmui-565-no-device"),
]


@pytest.mark.parametrize(("env", "want"), UPSTREAM_CASES)
def test_upstream_visibility_cases(env: dict[str, str], want: list[int]) -> None:
    assert list(rocm_visible(env, _UP).gpus) == want


_LIBC_STRTOL_ALPHABET = " \t\n\v\f\r+-0123456789abcdefABCDEFxXgz"


def _glibc_strtol_all(text: str) -> int | None:
    """glibc's strtol(text, &end, 0) (ctypes.CDLL(None)), when it consumes all of text."""
    import ctypes
    libc = ctypes.CDLL(None)
    libc.strtol.restype = ctypes.c_long
    libc.strtol.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
    buf = ctypes.create_string_buffer(text.encode("ascii"))
    end = ctypes.c_char_p()
    value = libc.strtol(buf, ctypes.byref(end), 0)
    used = ctypes.cast(end, ctypes.c_void_p).value - ctypes.addressof(buf)
    return value if used == len(text) else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's strtol")
@settings(max_examples=50, deadline=None)
@given(st.one_of(st.text(_LIBC_STRTOL_ALPHABET, min_size=1, max_size=24),
                 st.integers(-(2**70), 2**70).flatmap(lambda n: st.sampled_from(
                     [str(n), hex(n), f"0{abs(n):o}", f" {n}", f"+{abs(n):#x}"]))))
def test_c_strtol_is_glibcs(text: str) -> None:
    """visible._c_strtol (ROCr parses an index with strtol(token, &end, 0)) against the C
    library itself. Empty text is left out: ROCr never passes an empty token to strtol."""
    assert _c_strtol(text) == _glibc_strtol_all(text)


# -- node layouts ---------------------------------------------------------------------------

def _open(fake: FakeAmdSmi, env: dict[str, str] | None = None):
    found = discover(DiscoveryContext(amdsmi=fake, env=env or {}), clock=fake.clock)
    probes = [p for p in found if isinstance(p, AmdSmiProbe)]
    return (probes[0] if probes else None), [u for u in found if u not in probes]


def _mi250x_node(clock: FakeClock) -> FakeAmdSmi:
    """4 OAMs x 2 GCDs (LUMI-G, Frontier): GCDs of an OAM share the board serial, each its own
    PCI device and unique_id; the secondary GCD's counter stays 0."""
    gpus = [FakeAmdGpu(power_w=400.0 + 10 * (i // 2), serial=f"OAM{i // 2}",
                       current_power=False, reports_energy=i % 2 == 0) for i in range(8)]
    return FakeAmdSmi(gpus, clock=clock)


def test_mi250x_under_slurm_rocr_and_hip_pick_the_right_gcd() -> None:
    clock = FakeClock()
    fake = _mi250x_node(clock)
    # SLURM gives the job GCDs 4..7 through ROCR, the user picks the second of them with HIP.
    probe, _ = _open(fake, {"ROCR_VISIBLE_DEVICES": "4,5,6,7", "HIP_VISIBLE_DEVICES": "1"})
    [channel] = probe.channels
    assert channel.meta["indices"] == [5] and channel.meta["board_serial"] == "OAM2"
    clock.advance(2.0)
    assert probe.read()["rocm0"] == pytest.approx(420.0 * 2, rel=1e-3)  # the OAM, once
    assert any("same package" in w for w in probe.drain_warnings())
    probe.close()
    # By ROCr UUID, then HIP index 0 of what is left.
    probe, _ = _open(fake, {"ROCR_VISIBLE_DEVICES": f"{fake.rocr_uuid(6)},{fake.rocr_uuid(0)}",
                            "HIP_VISIBLE_DEVICES": "1"})
    assert [c.meta["indices"] for c in probe.channels] == [[0]]
    probe.close()


@pytest.mark.parametrize("primary_only", [False, True])
def test_mi300x_cpx_counts_the_socket_once(primary_only: bool) -> None:
    """8 partitions of one socket: one PCI device (bus), one serial, one unique_id; every
    partition reads the socket's counter, or only partition 0 does."""
    clock = FakeClock()
    parts = [FakeAmdGpu(power_w=700.0, serial="MI300X-1", unique_id=0x55AA00000000F00D, bus=0x05,
                        function=i, partition=i, compute_partition="CPX",
                        name="AMD Instinct MI300X", owns_counter=not primary_only or i == 0)
             for i in range(8)]
    other = FakeAmdGpu(power_w=300.0, serial="MI300X-2", bus=0x25, partition=0,
                       compute_partition="SPX", name="AMD Instinct MI300X")
    fake = FakeAmdSmi([*parts, other], clock=clock)
    probe, _ = _open(fake)
    assert [c.meta["indices"] for c in probe.channels] == [list(range(8)), [8]]
    assert probe.channels[0].meta["read_from"] == [0]
    clock.advance(1.0)
    energy = probe.read()
    assert energy["rocm0"] == pytest.approx(700.0, rel=1e-3)  # not 8 x 700
    assert energy["rocm1"] == pytest.approx(300.0, rel=1e-3)
    probe.close()
    probe, _ = _open(fake, {"HIP_VISIBLE_DEVICES": "3"})
    [channel] = probe.channels
    assert channel.meta["indices"] == [3] and channel.meta["compute_partition"] == "CPX"
    assert any("partitions of the same package" in w for w in probe.drain_warnings())
    probe.close()


def test_radeon_cards_without_serial_stay_separate() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=250.0, name="AMD Radeon RX 7900 XTX"),
                       FakeAmdGpu(power_w=150.0, name="AMD Radeon RX 7900 XTX")], clock=clock)
    assert fake.amdsmi_get_gpu_board_info(fake.handles[0])["product_serial"] == "N/A"
    probe, _ = _open(fake)
    assert [c.meta["indices"] for c in probe.channels] == [[0], [1]]
    clock.advance(1.0)
    assert probe.read() == pytest.approx({"rocm0": 250.0, "rocm1": 150.0}, rel=1e-3)
    probe.close()


def test_placeholder_serial_shared_by_many_devices_is_not_a_package() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(serial="0123456789") for _ in range(4)])
    probe, _ = _open(fake)
    assert len(probe.channels) == 4
    assert any("placeholder" in w for w in probe.drain_warnings())
    probe.close()


def test_counter_wraps_at_64_bits_and_old_key_and_raw_sentinels() -> None:
    clock = FakeClock()
    gpu = FakeAmdGpu(power_w=500.0, offset=2**64 - 1000)
    fake = FakeAmdSmi([gpu], clock=clock, legacy_energy=True, raw_sentinels=True)
    assert "energy_accumulator" not in fake.amdsmi_get_energy_count(fake.handles[0])
    probe, _ = _open(fake)
    clock.advance(1.0)
    assert probe.read()["rocm0"] == pytest.approx(500.0, rel=1e-3)
    assert not probe.drain_warnings()
    probe.close()
    # Power fallback with 0xFFFF "not available" values from releases without the N/A mapping.
    fake = FakeAmdSmi([FakeAmdGpu(power_w=200.0, energy=False),
                       FakeAmdGpu(energy=False, power=False)],
                      clock=clock, raw_sentinels=True)
    probe, missing = _open(fake)
    assert [c.method for c in probe.channels] == ["integrated"]
    assert "neither an energy counter nor socket power" in missing[0].reason
    clock.advance(2.0)
    assert probe.read()["rocm0"] == pytest.approx(400.0)
    probe.close()


def test_one_failing_package_fails_alone() -> None:
    clock = FakeClock()
    fake = FakeAmdSmi([FakeAmdGpu(power_w=100.0), FakeAmdGpu(power_w=200.0)], clock=clock)
    probe, _ = _open(fake)
    fake.failing.add(1)
    clock.advance(1.0)
    with pytest.raises(PartialRead) as info:
        probe.read()
    assert set(info.value.errors) == {"rocm1"}
    assert info.value.values["rocm0"] == pytest.approx(100.0, rel=1e-3)
    fake.failing.clear()
    clock.advance(1.0)
    assert probe.read()["rocm1"] == pytest.approx(400.0, rel=1e-3)  # the gap is counted
    probe.close()


def test_probes_listing_says_what_was_found_and_why_not() -> None:
    fake = FakeAmdSmi([FakeAmdGpu(serial="A"), FakeAmdGpu(serial="B")])
    probe, _ = _open(fake, {"ROCR_VISIBLE_DEVICES": "1"})
    described = probe.describe()
    assert [d["visible"] for d in described["devices"]] == [False, True]
    assert described["devices"][1]["rocr_uuid"] == fake.rocr_uuid(1)
    assert described["visibility"][0]["variable"] == "ROCR_VISIBLE_DEVICES"
    probe.close()
    _, [missing] = _open(fake, {"ROCR_VISIBLE_DEVICES": "7"})
    assert "ROCR_VISIBLE_DEVICES='7'" in missing.reason and "no GPU 7" in missing.reason
    assert fake.rocr_uuid(0) in missing.reason and "ROCR_VISIBLE_DEVICES" in missing.hint
