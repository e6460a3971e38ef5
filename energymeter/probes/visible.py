"""Which GPUs a process sees under ``CUDA_VISIBLE_DEVICES`` (the one parser of such variables).

Mirrors the CUDA runtime's rules: indices, ``GPU-`` UUIDs or unique prefixes, ``MIG-`` UUIDs,
parsing stopping at the first invalid entry. Probes of GPU families call :func:`select_visible`
with the identities they enumerate (index in the driver's order, UUID, name, MIG UUIDs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    by_uuid = [(g.uuid, g.nvml_index) for g in gpus]
    mig_parent = [(m, g.nvml_index) for g in gpus for m in g.mig_uuids]
    chosen: list[int] = []
    migs: dict[int, list[str]] = {}
    warnings: list[str] = []
    by_index = False
    entries = text.split(",")
    for position, raw in enumerate(entries):
        entry = raw.strip()
        problem = ""
        mig_uuid = ""
        index: int | None = None
        if _INT_RE.fullmatch(entry):
            number = int(entry)
            if number < 0:
                break  # CUDA's terminator: '-1' alone hides every GPU, '0,-1,1' keeps 0
            if number < len(gpus):
                index = gpus[number].nvml_index
                by_index = True
            else:
                problem = (f"there is no GPU with index {number} (NVML sees {len(gpus)}: "
                           f"0..{len(gpus) - 1})")
        elif entry.upper().startswith("MIG-GPU-"):  # legacy MIG-GPU-<uuid>/<gi>/<ci>
            parent = entry[4:].split("/", 1)[0]
            hits, names = _match_prefix(parent, by_uuid)
            if len(hits) == 1:
                index, mig_uuid = hits[0], entry
            else:
                problem = (f"{parent!r} matches no GPU" if not hits
                           else f"{parent!r} is ambiguous: it matches {names}")
        elif entry.upper().startswith("MIG-"):
            hits, names = _match_prefix(entry, mig_parent)
            if len(hits) == 1:
                index = hits[0]
                mig_uuid = next(m for m, _ in mig_parent if m.lower().startswith(entry.lower()))
            else:
                problem = ("it matches no MIG device of this machine" if not hits
                           else f"it is ambiguous: it matches {names}")
        elif entry.upper().startswith("GPU-"):
            hits, names = _match_prefix(entry, by_uuid)
            if len(hits) == 1:
                index = hits[0]
            else:
                problem = ("it matches no GPU of this machine" if not hits
                           else f"it is ambiguous: it matches {names}")
        else:
            problem = "it is not a GPU index, a GPU-<uuid> or a MIG-<uuid>"

        if index is not None and mig_uuid:
            if mig_uuid in migs.get(index, []):
                problem = "this MIG device is listed twice"
            else:
                migs.setdefault(index, []).append(mig_uuid)
                if index not in chosen:
                    chosen.append(index)
                continue
        elif index is not None:
            if index in chosen:
                problem = "this GPU is listed twice"
            else:
                chosen.append(index)
                continue

        message = f"CUDA_VISIBLE_DEVICES={value!r}: entry {entry!r} is invalid: {problem}"
        if position == 0:
            raise ConfigError(f"{message}. CUDA stops at the first invalid entry, so this "
                              f"hides every GPU; {ACCEPTED_VISIBLE_DEVICES}")
        ignored = ",".join(entries[position:])
        warnings.append(f"{message}. Like CUDA, energymeter ignores it and everything after it "
                        f"({ignored!r}) and measures only the {len(chosen)} GPU(s) listed "
                        f"before; {ACCEPTED_VISIBLE_DEVICES}")
        break

    for index, mig_list in migs.items():
        label = ", ".join(mig_list)
        warnings.append(
            f"CUDA_VISIBLE_DEVICES names MIG device(s) {label} on GPU {index}: NVML measures "
            "energy per physical GPU, so the energy reported for it is the whole GPU's, shared "
            "by every MIG slice and process on it, not this slice's")
    gpus_out = tuple(VisibleGpu(i, tuple(migs.get(i, ()))) for i in chosen)
    return Selection(gpus_out, tuple(warnings), by_index)
