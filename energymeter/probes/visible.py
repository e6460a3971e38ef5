"""Which GPUs a process sees under ``CUDA_VISIBLE_DEVICES`` (the one parser of such variables).

Mirrors the CUDA runtime's rules: indices, ``GPU-`` UUIDs or unique prefixes, ``MIG-`` UUIDs,
parsing stopping at the first invalid entry. Probes of GPU families call :func:`select_visible`
with the identities they enumerate (index in the driver's order, UUID, name, MIG UUIDs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .._lazy import LazyPattern
from ..errors import ConfigError

ACCEPTED_VISIBLE_DEVICES = (
    "accepted: comma-separated GPU indices ('0,2'), GPU UUIDs ('GPU-8932f937-...' or a unique "
    "prefix such as 'GPU-8932f937'), MIG UUIDs ('MIG-<uuid>' or 'MIG-GPU-<uuid>/<gi>/<ci>'), "
    "or '', '-1' or 'NoDevFiles' to hide every GPU"
)
HIDES_EVERY_GPU = "CUDA_VISIBLE_DEVICES hides every GPU"

_INT_RE = LazyPattern(r"[+-]?\d+")


@dataclass(frozen=True)
class GpuIdentity:
    """What :func:`select_visible` needs to know about one NVML device."""

    nvml_index: int
    uuid: str
    name: str = ""
    mig_uuids: tuple[str, ...] = ()


@dataclass(frozen=True)
class VisibleGpu:
    """One GPU to measure: its NVML index and, if it was named through MIG, the MIG UUIDs."""

    nvml_index: int
    mig_uuids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    gpus: tuple[VisibleGpu, ...]
    warnings: tuple[str, ...] = ()
    by_index: bool = True  # some GPU was chosen by index (or the variable was unset)


def _match_prefix(entry: str, candidates: Iterable[tuple[str, int]]) -> tuple[list[int], str]:
    want = entry.lower()
    hits = [(uuid, i) for uuid, i in candidates if uuid.lower().startswith(want)]
    return [i for _, i in hits], ", ".join(u for u, _ in hits)


def select_visible(value: str | None, gpus: Sequence[GpuIdentity]) -> Selection:
    """The GPUs a process sees under ``CUDA_VISIBLE_DEVICES=value``, in its CUDA order.

    Mirrors CUDA: unset means every GPU in NVML order; entries are indices, ``GPU-`` UUIDs (or
    unique prefixes) and ``MIG-`` UUIDs (mapped to the parent GPU, whose whole energy is
    measured); the empty string, ``NoDevFiles`` or a leading negative index hide every GPU;
    parsing stops at the first invalid entry and the GPUs listed before it stay visible (a
    warning names the ignored rest; a negative index is CUDA's documented terminator and
    gives no warning). A GPU named twice also ends the list (it would be counted twice).

    Raises :class:`~energymeter.errors.ConfigError` when the *first* entry is invalid, with a
    message saying which forms are accepted. Returns an empty selection when the value hides
    every GPU on purpose.
    """
    if value is None:
        return Selection(tuple(VisibleGpu(g.nvml_index) for g in gpus))
    text = value.strip()
    if text == "" or text.lower() == "nodevfiles":
        return Selection(())
    chosen = _Chosen()
    warnings = _choose_entries(value, text.split(","), gpus, chosen)
    warnings += _mig_warnings(chosen.migs)
    return Selection(chosen.visible(), tuple(warnings), chosen.by_index)


@dataclass(frozen=True)
class _Entry:
    """What one ``CUDA_VISIBLE_DEVICES`` entry names: a GPU (its NVML index), perhaps through
    one of its MIG devices, or the problem that makes the entry invalid; or CUDA's terminator."""

    index: int | None = None
    mig_uuid: str = ""
    problem: str = ""
    by_index: bool = False  # named by an index (not a UUID)
    terminator: bool = False  # a negative index: the list ends here, without a warning


class _Chosen:
    """The GPUs listed so far, in the order listed, and the MIG devices each was named by."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.migs: dict[int, list[str]] = {}
        self.by_index = False

    def add(self, entry: _Entry) -> str:
        """Adds the GPU ``entry`` names; returns why it cannot be ('' when it was added)."""
        if entry.mig_uuid:
            if entry.mig_uuid in self.migs.get(entry.index, []):
                return "this MIG device is listed twice"
            self.migs.setdefault(entry.index, []).append(entry.mig_uuid)
            if entry.index not in self.indices:
                self.indices.append(entry.index)
            return ""
        if entry.index in self.indices:
            return "this GPU is listed twice"
        self.indices.append(entry.index)
        return ""

    def visible(self) -> tuple[VisibleGpu, ...]:
        return tuple(VisibleGpu(i, tuple(self.migs.get(i, ()))) for i in self.indices)


def _choose_entries(value: str, entries: list[str], gpus: Sequence[GpuIdentity],
                    chosen: _Chosen) -> list[str]:
    """Adds the GPUs ``entries`` name to ``chosen``, up to the first invalid entry or CUDA's
    terminator; returns the warning for an invalid entry after the first (raises
    :class:`ConfigError` for an invalid first one)."""
    for position, raw in enumerate(entries):
        entry = _parse_entry(raw.strip(), gpus)
        if entry.terminator:
            break  # CUDA's terminator: '-1' alone hides every GPU, '0,-1,1' keeps 0
        chosen.by_index = chosen.by_index or entry.by_index
        problem = entry.problem or chosen.add(entry)
        if problem:
            return [_invalid_entry(value, entries, position, problem, len(chosen.indices))]
    return []


def _parse_entry(entry: str, gpus: Sequence[GpuIdentity]) -> _Entry:
    """The GPU one (stripped) entry names, by its form: an index, a legacy
    ``MIG-GPU-<uuid>/<gi>/<ci>``, a ``MIG-`` UUID or a ``GPU-`` UUID (or a unique prefix)."""
    if _INT_RE.fullmatch(entry):
        return _index_entry(int(entry), gpus)
    if entry.upper().startswith("MIG-GPU-"):
        return _legacy_mig_entry(entry, gpus)
    if entry.upper().startswith("MIG-"):
        return _mig_entry(entry, gpus)
    if entry.upper().startswith("GPU-"):
        return _gpu_uuid_entry(entry, gpus)
    return _Entry(problem="it is not a GPU index, a GPU-<uuid> or a MIG-<uuid>")


def _index_entry(number: int, gpus: Sequence[GpuIdentity]) -> _Entry:
    if number < 0:
        return _Entry(terminator=True)
    if number < len(gpus):
        return _Entry(gpus[number].nvml_index, by_index=True)
    return _Entry(problem=f"there is no GPU with index {number} (NVML sees {len(gpus)}: "
                          f"0..{len(gpus) - 1})")


def _legacy_mig_entry(entry: str, gpus: Sequence[GpuIdentity]) -> _Entry:
    """``MIG-GPU-<uuid>/<gi>/<ci>``: the GPU whose UUID the parent part names (a prefix)."""
    parent = entry[4:].split("/", 1)[0]
    hits, names = _match_prefix(parent, _gpu_uuids(gpus))
    if len(hits) == 1:
        return _Entry(hits[0], mig_uuid=entry)
    return _Entry(problem=f"{parent!r} matches no GPU" if not hits
                  else f"{parent!r} is ambiguous: it matches {names}")


def _mig_entry(entry: str, gpus: Sequence[GpuIdentity]) -> _Entry:
    """``MIG-<uuid>`` (or a unique prefix): the GPU that holds that MIG device."""
    mig_parent = [(m, g.nvml_index) for g in gpus for m in g.mig_uuids]
    hits, names = _match_prefix(entry, mig_parent)
    if len(hits) == 1:
        mig_uuid = next(m for m, _ in mig_parent if m.lower().startswith(entry.lower()))
        return _Entry(hits[0], mig_uuid=mig_uuid)
    return _Entry(problem="it matches no MIG device of this machine" if not hits
                  else f"it is ambiguous: it matches {names}")


def _gpu_uuid_entry(entry: str, gpus: Sequence[GpuIdentity]) -> _Entry:
    """``GPU-<uuid>`` (or a unique prefix)."""
    hits, names = _match_prefix(entry, _gpu_uuids(gpus))
    if len(hits) == 1:
        return _Entry(hits[0])
    return _Entry(problem="it matches no GPU of this machine" if not hits
                  else f"it is ambiguous: it matches {names}")


def _gpu_uuids(gpus: Sequence[GpuIdentity]) -> list[tuple[str, int]]:
    return [(g.uuid, g.nvml_index) for g in gpus]


def _invalid_entry(value: str, entries: Sequence[str], position: int, problem: str,
                   kept: int) -> str:
    """The warning for the invalid entry at ``position`` (``kept`` GPUs listed before it), or,
    for the first entry, the :class:`ConfigError` (raised): CUDA then hides every GPU."""
    entry = entries[position].strip()
    message = f"CUDA_VISIBLE_DEVICES={value!r}: entry {entry!r} is invalid: {problem}"
    if position == 0:
        raise ConfigError(f"{message}. CUDA stops at the first invalid entry, so this "
                          f"hides every GPU; {ACCEPTED_VISIBLE_DEVICES}")
    ignored = ",".join(entries[position:])
    return (f"{message}. Like CUDA, energymeter ignores it and everything after it "
            f"({ignored!r}) and measures only the {kept} GPU(s) listed "
            f"before; {ACCEPTED_VISIBLE_DEVICES}")


def _mig_warnings(migs: Mapping[int, Sequence[str]]) -> list[str]:
    """One warning per GPU named through MIG: its energy is the whole GPU's."""
    return [f"CUDA_VISIBLE_DEVICES names MIG device(s) {', '.join(mig_list)} on GPU {index}: "
            "NVML measures energy per physical GPU, so the energy reported for it is the "
            "whole GPU's, shared by every MIG slice and process on it, not this slice's"
            for index, mig_list in migs.items()]


# -- ROCm: ROCR_VISIBLE_DEVICES, then HIP_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES ---------------
#
# Two runtimes select AMD GPUs, one after the other, each with rules of its own (they are not
# CUDA's, so select_visible above is not used for them):
#
# 1. ROCr (ROCR-Runtime src/core/runtime/amd_filter_device.cpp, RvdFilter; applied in
#    amd_topology.cpp BuildTopology) filters the GPU nodes of the KFD topology when
#    ROCR_VISIBLE_DEVICES is set (flag.h: IsEnvVarSet). Set but empty: no GPU. Otherwise the
#    value is split at ',' (std::getline: a trailing ',' adds no entry), each entry upper-cased
#    and trimmed, and at most as many entries as there are GPUs are read. An entry starting with
#    'G' is a UUID: 5 to 20 characters, a prefix of exactly one GPU's "GPU-%016X" (of the KFD
#    node's unique_id; a GPU whose unique_id is 0 has none). Any other entry is
#    strtol(entry, &end, 0) (decimal, 0x hex, 0 octal, sign) that must consume it all. An entry
#    that is invalid, out of range or repeats an index ends the list; the GPUs before it are
#    kept, in the order listed. An empty entry inside the list ("0,,1") makes token.at(0) throw:
#    the runtime does not initialise and no GPU is usable.
# 2. HIP (ROCm/clr rocclr/device/rocm/rocdevice.cpp, Device::init) then indexes the GPUs ROCr
#    left: HIP_VISIBLE_DEVICES if it is non-empty, else CUDA_VISIBLE_DEVICES; both empty or
#    unset: every GPU. Entries split at ','; one containing "GPU-" is replaced by the index of the
#    first GPU whose HSA_AMD_AGENT_INFO_UUID ("GPU-%016x", lower case, or "GPU-XX") contains it
#    (case-sensitive); an entry must then be a plain decimal index ("0", "12"; no sign, space or
#    leading zero) below the count, else it and everything after it are dropped; an index listed
#    again is skipped (not an end).

def rocr_uuid(unique_id: int) -> str | None:
    """ROCr's UUID of a GPU whose KFD unique_id is ``unique_id`` (``GPU-`` and 16 upper-case hex
    digits, as RvdFilter::BuildDeviceUuidList forms it); None for 0 (no UUID)."""
    return f"GPU-{unique_id:016X}" if unique_id else None


def hip_uuid(unique_id: int) -> str:
    """HSA_AMD_AGENT_INFO_UUID of a GPU (ROCR-Runtime amd_gpu_agent.cpp: ``GPU-%016x`` lower
    case, ``GPU-XX`` for a unique_id of 0): what rocminfo prints and HIP matches against."""
    return f"GPU-{unique_id:016x}" if unique_id else "GPU-XX"


@dataclass(frozen=True)
class RocmStep:
    """What one runtime's variable did: the positions (into the list it was applied to) it keeps
    in their new order, and, when it ended early, the entry at fault and why."""

    variable: str
    value: str
    kept: tuple[int, ...]
    stopped_at: str | None = None
    why: str = ""
    fatal: bool = False  # the runtime itself fails (ROCr: an empty entry inside the list)


def _c_strtol(text: str) -> int | None:
    """strtol(text, &end, 0) when it consumes all of ``text`` (glibc: leading white space, a
    sign, 0x/0X hex, leading-0 octal), else None. The result is the C long clamped to 64 bits."""
    s = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s[:2].lower() == "0x" and len(s) > 2:
        digits, base = s[2:], 16
    elif s.startswith("0") and len(s) > 1:
        digits, base = s[1:], 8
    else:
        digits, base = s, 10
    allowed = "0123456789abcdef"[:base]
    if not digits or any(c not in allowed for c in digits.lower()):
        return None
    value = sign * int(digits, base)
    return max(-(2**63), min(2**63 - 1, value))


def _int32(value: int) -> int:
    """A C long stored in an int32_t (two's complement truncation, as devIdx = strtol(...))."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def rocr_filter(value: str | None, uuids: Sequence[str | None]) -> RocmStep | None:
    """ROCR_VISIBLE_DEVICES=value applied to the GPUs whose ROCr UUIDs are ``uuids`` (KFD
    order; None where a GPU has none). None when the variable is unset (no filtering)."""
    if value is None:
        return None
    name = "ROCR_VISIBLE_DEVICES"
    if value == "":
        return RocmStep(name, value, (), "", "it is set but empty, which hides every GPU")
    tokens = value.split(",")
    if tokens and tokens[-1] == "":
        tokens.pop()  # std::getline yields no entry after a trailing separator
    kept: list[int] = []
    upper = [u.upper() if u else None for u in uuids]
    for raw in tokens[: len(uuids)]:
        token = raw.upper().strip(" \t\n\v\f\r")
        if token == "":
            return RocmStep(name, value, (), raw, "an empty entry makes the ROCr runtime fail "
                            "to initialise (no GPU at all)", fatal=True)
        if token[0] == "G":
            hits = [i for i, u in enumerate(upper) if u is not None
                    and 5 <= len(token) <= 20 and len(token) <= len(u) and u.startswith(token)]
            if len(hits) != 1:
                why = ("it is not a ROCr UUID (GPU- and 16 hex digits, or a unique prefix of "
                       "5 to 20 characters)" if not 5 <= len(token) <= 20 else
                       "it matches no GPU's UUID" if not hits else
                       f"it matches {len(hits)} GPUs' UUIDs (ROCr needs a unique prefix)")
                return RocmStep(name, value, tuple(kept), raw, why)
            index = hits[0]
        else:
            number = _c_strtol(token)
            if number is None:
                return RocmStep(name, value, tuple(kept), raw,
                                "it is neither an index nor a GPU-<uuid>")
            index = _int32(number)
        if index < 0 or index >= len(uuids):
            return RocmStep(name, value, tuple(kept), raw,
                            f"there is no GPU {index} (ROCr sees {len(uuids)})")
        if index in kept:
            return RocmStep(name, value, tuple(kept), raw, "this GPU is listed twice")
        kept.append(index)
    return RocmStep(name, value, tuple(kept))


def hip_filter(env: Mapping[str, str], uuids: Sequence[str]) -> RocmStep | None:
    """HIP_VISIBLE_DEVICES (if non-empty, else CUDA_VISIBLE_DEVICES) applied to the GPUs ROCr
    surfaced, whose HSA UUIDs (:func:`hip_uuid`) are ``uuids``. None when neither filters."""
    name = "HIP_VISIBLE_DEVICES"
    value = env.get(name, "")
    if value == "":
        name, value = "CUDA_VISIBLE_DEVICES", env.get("CUDA_VISIBLE_DEVICES", "")
    if value == "":
        return None
    kept: list[int] = []
    pos = 0
    while True:
        end = value.find(",", pos)
        if end < 0:
            end = len(value)
        entry = value[pos:end]
        if "GPU-" in entry:
            hit = next((i for i, u in enumerate(uuids) if entry in u), None)
            if hit is not None:
                entry = str(hit)
        if not (entry.isascii() and entry.isdigit() and str(int(entry)) == entry
                and int(entry) < len(uuids)):
            why = ("it matches no GPU's UUID (HIP compares 'GPU-' and lower-case hex, as "
                   "rocminfo prints it)" if "GPU-" in entry else
                   f"it is not an index below {len(uuids)} (the GPUs ROCr left)")
            return RocmStep(name, value, tuple(kept), value[pos:end], why)
        index = int(entry)
        if index not in kept:
            kept.append(index)
        pos = end + 1
        if pos >= len(value):
            return RocmStep(name, value, tuple(kept))


@dataclass(frozen=True)
class RocmVisible:
    """The GPUs a HIP process sees: positions into the KFD-ordered list, in HIP order, and the
    steps that chose them."""

    gpus: tuple[int, ...]
    steps: tuple[RocmStep, ...] = ()

    @property
    def hidden_by(self) -> RocmStep | None:
        """The step that left no GPU, if one did."""
        return next((s for s in self.steps if s.fatal or not s.kept), None)


def rocm_visible(env: Mapping[str, str], unique_ids: Sequence[int]) -> RocmVisible:
    """Which GPUs (positions in KFD order, given their unique_ids) a HIP program started with
    ``env`` uses, in its device order: ROCR_VISIBLE_DEVICES first, then HIP's variable indexes
    into what ROCr left."""
    order = list(range(len(unique_ids)))
    steps: list[RocmStep] = []
    rocr = rocr_filter(env.get("ROCR_VISIBLE_DEVICES"), [rocr_uuid(u) for u in unique_ids])
    if rocr is not None:
        steps.append(rocr)
        order = [] if rocr.fatal else [order[i] for i in rocr.kept]
    if order:
        hip = hip_filter(env, [hip_uuid(unique_ids[i]) for i in order])
        if hip is not None:
            steps.append(hip)
            order = [order[i] for i in hip.kept]
    return RocmVisible(tuple(order), tuple(steps))
