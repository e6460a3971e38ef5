"""A fake hwmon sysfs tree for the hwmon probe's tests, laid out as the kernel lays it out.

What sysfs shows, and what this builds (under ``<root>`` standing for ``/sys``):

* ``class/hwmon/hwmonN`` is a symlink to the hwmon class device, which lives under its parent:
  ``devices/<parent>/hwmon/hwmonN`` (drivers/hwmon/hwmon.c: ``__hwmon_device_register`` makes
  a device of ``hwmon_class`` with ``dev->parent``); the class device's ``device`` is a symlink
  to that parent (drivers/base/core.c: ``device_add_class_symlinks``). ``name`` is in the
  class directory only when the driver gave one (hwmon.c ``hwmon_dev_attr_is_visible`` hides
  it for ``hwmon_device_register(dev)``, which passes no name).
* ``acpi_power_meter`` (linux drivers/hwmon/acpi_power_meter.c), three layouts:

  - ``"acpi"``: every kernel through 6.14 and so every distribution kernel (5.14, 5.15, 6.1,
    6.6, 6.8, 6.12): ``hwmon_device_register(&device->dev)``; ``register_attrs`` makes
    ``name`` (``power_meter``), ``power1_average``, ``power1_accuracy``,
    ``power1_average_interval{,_min,_max}``, ``power1_is_battery``,
    ``power1_model_number``, ``power1_oem_info``, ``power1_serial_number`` on the ACPI device
    ``devices/LNXSYSTM:00/LNXSYBUS:00/ACPI000D:NN``; ``hwmonN/`` holds no name and no
    attribute.
  - ``"hwmon"``: after "hwmon: (acpi_power_meter) Replace hwmon_device_register" (Huisong Li,
    2025): ``hwmon_device_register_with_info(&device->dev, "power_meter", ...)`` with
    ``power_extra_groups``: every attribute in ``hwmonN/``, parent still the ACPI device.
  - ``"platform"``: after "Convert ACPI driver to a platform one" (Rafael Wysocki, 2026): the
    same attributes in ``hwmonN/``, parent the platform device ``devices/platform/ACPI000D:NN``.

  ``power1_average`` is ``_PMM`` (mW) x 1000: microwatts in steps of 1000. ``_PMM``'s unknown
  (0xFFFFFFFF) is printed as 4294967295000 before the "4.29 MW" fix and -ENODATA after.
* NVIDIA Grace / Grace Hopper: one ACPI power meter per rail and socket, named in
  ``power1_oem_info`` ("Module Power Socket N", "Grace Power Socket N", "CPU Power Socket N",
  "SysIO Power Socket N"; lm-sensors PR #524 shows "power_meter-acpi-Grace_Power_Socket_0").
* ``amd_energy`` (github.com/amd/amd_energy amd_energy.c; mainline drivers/hwmon/amd_energy.c
  5.8-5.12): a platform device ``amd_energy.0``; ``devm_hwmon_device_register_with_info(dev,
  "amd_energy", ...)``; channels ``energyN_input`` + ``energyN_label``, cores first
  (``Ecore%03u``) then sockets (``Esocket%u``); files mode 0440 (``amd_energy_is_visible``).
  ``energyN_input`` = raw * 1000000 / 2^ESU uJ (``amd_add_delta``), where raw is the RAPL MSR
  masked to 32 bits (``AMD_ENERGY_MASK``) and either accumulated into 64 bits by a kthread
  (``accumulate_delta``, with its ``UINT_MAX - prev + input`` wrap) or, on CPUs with 64-bit
  RAPL MSRs in the out-of-tree driver (``do_not_accum``), not accumulated at all.

Values are written as the kernel prints them: exactly ``"%llu\n"`` (acpi_power_meter.c
``show_power``; drivers/hwmon/hwmon.c ``hwmon_attr_show`` prints ``"%lld\n"`` for
``hwmon_device_register_with_info`` drivers), no padding. They are written *in place* (one
``pwrite`` of the new text at offset 0, then ``ftruncate`` to its length), not by writing a
temporary file and ``os.replace``: the probe keeps its fd open and preads it again, as a real
sysfs attribute is read (kernfs runs ``show()`` again on each read at offset 0 of the same
open file, fs/kernfs/file.c), and after a rename that fd would go on reading the old inode.
The price is the window between ``pwrite`` and ``ftruncate``, in which a shorter new value is
followed by the old tail ("100\n56\n"): a read that is not exactly one line, which the probe
takes as torn and reads again (tests of that write the window on purpose:
:func:`write_torn`).

:class:`FakeIO` answers reads of chosen files with the errors the kernel gives (-EACCES for a
root-only file read by a user, -ENODATA, -EIO), since tests run as root; and, as kernfs does
for an open file whose attribute was removed (fs/kernfs/file.c: ``kernfs_get_active`` fails,
the read returns -ENODEV), -ENODEV for an fd whose file was removed or re-created since it
was opened.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from energymeter.probes.hwmon import SysfsIO

U64 = (1 << 64) - 1
UINT_MAX = (1 << 32) - 1
ACPI_UNKNOWN = 0xFFFFFFFF


def write_value(path: Path, value: float) -> None:
    """Write the integer ``value`` as a sysfs attribute prints it, ``"%llu\n"``, in place (see
    the module docstring: an open fd of the probe sees the new value)."""
    _write_in_place(path, f"{round(value)}\n".encode())


def write_torn(path: Path, value: float) -> None:
    """What a reader sees between the ``pwrite`` and the ``ftruncate`` of :func:`write_value`
    when ``value`` prints shorter than what was there: the new line, then the old tail."""
    old = Path(path).read_bytes()
    new = f"{round(value)}\n".encode()
    _write_in_place(path, new + old[len(new):], truncate=False)


def _write_in_place(path: Path, data: bytes, truncate: bool = True) -> None:
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else None
    if mode is not None and not mode & 0o200:
        os.chmod(path, mode | 0o200)  # the kernel writes what it likes; so may a non-root test
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        if truncate:
            os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
        if mode is not None:
            os.chmod(path, mode)


def write_text(path: Path, text: str, mode: int = 0o444) -> None:
    path.write_text(text + "\n")
    os.chmod(path, mode)


class FakeIO(SysfsIO):
    """Reads as the kernel answers them: ``errors[path] = errno`` makes opening (EACCES,
    EPERM) or reading (others) that file fail with that error; ``as_user`` makes every file
    without read permission for others fail to open with EACCES, as for a non-root user."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}
        self.as_user = False
        self._paths: dict[int, str] = {}
        self._inodes: dict[int, int] = {}  # fd -> the inode it opened (removed: -ENODEV)
        #: path -> called once after the next read of it (a writer finishing its update)
        self.after_read: dict[str, Callable[[], None]] = {}

    def _key(self, path: str) -> str:
        return os.path.realpath(path)

    def open(self, path: str) -> int:
        key = self._key(path)
        code = self.errors.get(key)
        if code in (errno.EACCES, errno.EPERM) or (
                self.as_user and not os.stat(key).st_mode & 0o004):
            code = code or errno.EACCES
            raise OSError(code, os.strerror(code), path)
        fd = super().open(path)
        self._paths[fd] = key
        self._inodes[fd] = os.fstat(fd).st_ino
        return fd

    def pread(self, fd: int) -> bytes:
        key = self._paths.get(fd, "")
        code = self.errors.get(key)
        if code is not None and code not in (errno.EACCES, errno.EPERM):
            raise OSError(code, os.strerror(code))
        if fd in self._inodes:
            try:
                now = os.stat(key).st_ino
            except OSError:
                now = None
            if now != self._inodes[fd]:  # the attribute was removed: kernfs says -ENODEV
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        data = super().pread(fd)
        then = self.after_read.pop(key, None)
        if then is not None:
            then()
        return data

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        self._inodes.pop(fd, None)
        super().close(fd)

    def text(self, path: Path) -> str:
        if self.as_user and path.exists() and not os.stat(path).st_mode & 0o004:
            return ""  # a root-only label (amd_energy's are 0440)
        return super().text(path)


@dataclass
class AcpiMeter:
    """One ACPI power meter (ACPI000D:NN) and its hwmon device."""

    hw: str
    acpi_dir: Path  # the ACPI device
    attr_dir: Path  # where its attributes are (the ACPI device, or hwmonN/)
    layout: str
    fixed_unknown: bool  # the kernel has the "4.29 MW" fix (-ENODATA for unknown power)


@dataclass
class AmdEnergy:
    """An amd_energy device and the hardware under it (RAPL MSRs, driver accumulators)."""

    hw: str
    attr_dir: Path
    esu: int
    accumulate: bool
    msr_bits: int
    labels: list[str]
    msr: list[int] = field(default_factory=list)
    energy_ctr: list[int] = field(default_factory=list)
    prev_value: list[int] = field(default_factory=list)


class FakeHwmon:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.base = self.root / "class" / "hwmon"
        self.base.mkdir(parents=True, exist_ok=True)
        self.devices = self.root / "devices"
        self.io = FakeIO()
        self._count = 0
        self._acpi_count = 0
        self._energy_uj: dict[tuple[str, int], int] = {}

    # -- the hwmon class device ----------------------------------------------------------
    def _register(self, parent: Path, name: str | None) -> tuple[str, Path]:
        """``__hwmon_device_register``: ``<parent>/hwmon/hwmonN``, linked from class/hwmon,
        its ``device`` link to the parent, ``name`` only when given."""
        hw = f"hwmon{self._count}"
        self._count += 1
        real = parent / "hwmon" / hw
        real.mkdir(parents=True)
        (self.base / hw).symlink_to(os.path.relpath(real, self.base))
        (real / "device").symlink_to(os.path.relpath(parent, real))
        (real / "subsystem").symlink_to(os.path.relpath(self.root / "class" / "hwmon", real))
        write_text(real / "uevent", "", 0o644)
        if name is not None:
            write_text(real / "name", name)
        return hw, real

    # -- any driver registered with a name (with_info / with_groups) -----------------------
    def device(self, name: str, sensors: list[tuple[str, int, str | None]]) -> str:
        """A device ``hwmonN`` named ``name`` under a platform device, with ``(kind, index,
        label)`` sensors (kind ``energy`` or ``power``; label None: no label file), their
        attributes in ``hwmonN/``; returns ``hwmonN``."""
        parent = self.devices / "platform" / f"{name}.{self._count}"
        parent.mkdir(parents=True)
        hw, d = self._register(parent, name)
        for kind, index, label in sensors:
            write_value(d / f"{kind}{index}_input", 0)
            if label is not None:
                write_text(d / f"{kind}{index}_label", label)
            if kind == "energy":
                self._energy_uj[(hw, index)] = 0
        return hw

    def set_power(self, hw: str, index: int, watts: float) -> None:
        write_value(self.base / hw / f"power{index}_input", round(watts * 1e6))

    def add_energy(self, hw: str, index: int, joules: float) -> int:
        """Add ``joules`` to the counter; returns the new value in microjoules."""
        value = self._energy_uj[(hw, index)] + round(joules * 1e6)
        self.set_energy_uj(hw, index, value)
        return value

    def set_energy_uj(self, hw: str, index: int, value: int) -> None:
        self._energy_uj[(hw, index)] = value
        write_value(self.base / hw / f"energy{index}_input", value)

    # -- acpi_power_meter ----------------------------------------------------------------
    def acpi_power_meter(self, *, layout: str = "acpi", oem_info: str = "",
                         model_number: str = "", serial_number: str = "",
                         interval_ms: int = 1000, fixed_unknown: bool = True) -> AcpiMeter:
        """An ACPI power meter that can measure (``POWER_METER_CAN_MEASURE``) laid out as
        ``layout`` (``acpi``, ``hwmon`` or ``platform``; see the module docstring)."""
        if layout not in ("acpi", "hwmon", "platform"):
            raise ValueError(f"layout {layout!r}: acpi, hwmon or platform")
        acpi = self.devices / "LNXSYSTM:00" / "LNXSYBUS:00" / f"ACPI000D:{self._acpi_count:02d}"
        self._acpi_count += 1
        acpi.mkdir(parents=True)
        write_text(acpi / "hid", "ACPI000D")
        write_text(acpi / "path", f"\\_SB_.PMT{self._acpi_count - 1}")
        write_text(acpi / "uevent", "", 0o644)
        (acpi / "measures").mkdir()  # _PMD's "measures" kobject (read_domain_devices)
        if layout == "acpi":
            hw, _ = self._register(acpi, None)  # hwmon_device_register: no name
            attrs = acpi
        elif layout == "hwmon":
            hw, attrs = self._register(acpi, "power_meter")
        else:
            platform = self.devices / "platform" / acpi.name
            platform.mkdir(parents=True)
            (platform / "firmware_node").symlink_to(os.path.relpath(acpi, platform))
            hw, attrs = self._register(platform, "power_meter")
        if layout == "acpi":
            write_text(attrs / "name", "power_meter")  # misc_attrs' "name" (show_name)
        write_value(attrs / "power1_average", 0)
        os.chmod(attrs / "power1_average", 0o444)
        write_text(attrs / "power1_accuracy", "95.0%")
        write_text(attrs / "power1_average_interval_min", "100")
        write_text(attrs / "power1_average_interval_max", "10000")
        write_text(attrs / "power1_average_interval", str(interval_ms), 0o644)
        write_text(attrs / "power1_is_battery", "0")
        write_text(attrs / "power1_model_number", model_number)
        write_text(attrs / "power1_oem_info", oem_info)
        write_text(attrs / "power1_serial_number", serial_number)
        return AcpiMeter(hw, acpi, attrs, layout, fixed_unknown)

    @staticmethod
    def set_meter_power(meter: AcpiMeter, watts: float) -> int:
        """What _PMM returns (whole milliwatts), as show_power prints it (x 1000 uW); returns
        the microwatts written."""
        uw = round(watts * 1000) * 1000
        write_value(meter.attr_dir / "power1_average", uw)
        return uw

    def reconfigure_meter(self, meter: AcpiMeter, *, gap: bool = False) -> AcpiMeter:
        """``acpi_power_meter_notify(METER_NOTIFY_CONFIG)``: firmware changed the meter's
        configuration and the driver re-creates it. Legacy layout (torvalds/linux
        acpi_power_meter.c): ``remove_attrs`` + ``setup_attrs``, the same files re-created on
        the ACPI device. with_info layouts (ColinIanKing/linux-next acpi_power_meter.c):
        ``hwmon_device_unregister`` + ``hwmon_device_register_with_info``, a new ``hwmonN``
        under the same parent. ``gap``: stop after the removal (the probe reads in between);
        call again with the returned meter to finish. Returns the meter as it is now."""
        power = (meter.attr_dir / "power1_average").read_text() \
            if (meter.attr_dir / "power1_average").exists() else "0\n"
        texts = {n: (meter.attr_dir / n).read_text() for n in (
            "power1_accuracy", "power1_average_interval_min", "power1_average_interval_max",
            "power1_average_interval", "power1_is_battery", "power1_model_number",
            "power1_oem_info", "power1_serial_number")
            if (meter.attr_dir / n).exists()} or getattr(meter, "_saved", {})
        if meter.layout == "acpi":
            for n in (*texts, "power1_average"):
                (meter.attr_dir / n).unlink(missing_ok=True)
            new = meter
        else:
            real = Path(os.path.realpath(self.base / meter.hw))
            if real.exists():
                for child in real.iterdir():
                    child.unlink()
                real.rmdir()
                (self.base / meter.hw).unlink()
            parent = meter.acpi_dir if meter.layout == "hwmon" else \
                self.devices / "platform" / meter.acpi_dir.name
            if gap:
                new = AcpiMeter(meter.hw, meter.acpi_dir, meter.attr_dir, meter.layout,
                                meter.fixed_unknown)
                new._saved = {**texts, "power1_average": power}  # type: ignore[attr-defined]
                return new
            hw, attrs = self._register(parent, "power_meter")
            new = AcpiMeter(hw, meter.acpi_dir, attrs, meter.layout, meter.fixed_unknown)
        if gap and meter.layout == "acpi":
            new._saved = {**texts, "power1_average": power}  # type: ignore[attr-defined]
            return new
        saved = getattr(meter, "_saved", {})
        texts = {**texts, **{k: v for k, v in saved.items() if k != "power1_average"}}
        power = saved.get("power1_average", power)
        for n, text in texts.items():
            write_text(new.attr_dir / n, text.rstrip("\n"),
                       0o644 if n == "power1_average_interval" else 0o444)
        _write_in_place(new.attr_dir / "power1_average", power.encode())
        os.chmod(new.attr_dir / "power1_average", 0o444)
        return new

    def set_meter_unknown(self, meter: AcpiMeter, unknown: bool = True) -> None:
        """_PMM returns 0xFFFFFFFF: -ENODATA on fixed kernels, 4294967295000 before."""
        path = os.path.realpath(meter.attr_dir / "power1_average")
        if not unknown:
            self.io.errors.pop(path, None)
        elif meter.fixed_unknown:
            self.io.errors[path] = errno.ENODATA
        else:
            write_value(meter.attr_dir / "power1_average", ACPI_UNKNOWN * 1000)

    def grace(self, *, sockets: int = 2, module: bool = True,
              layout: str = "acpi") -> dict[str, AcpiMeter]:
        """A Grace (Hopper when ``module``) machine: per socket one meter per rail, oem_info
        naming it; keyed by that name."""
        out: dict[str, AcpiMeter] = {}
        for socket in range(sockets):
            for rail in (("Module",) if module else ()) + ("Grace", "CPU", "SysIO"):
                name = f"{rail} Power Socket {socket}"
                out[name] = self.acpi_power_meter(layout=layout, oem_info=name)
        return out

    # -- amd_energy ----------------------------------------------------------------------
    def cpu_topology(self, nodes: dict[int, list[int]], packages: dict[int, int]) -> None:
        """NUMA nodes and packages as sysfs shows them: ``devices/system/node/nodeN/cpulist``
        (drivers/base/node.c, a cpulist such as ``0-3,8``) and
        ``devices/system/cpu/cpuC/topology/physical_package_id`` (drivers/base/topology.c);
        ``nodes``: node -> its CPUs, ``packages``: CPU -> its package."""
        for node, cpus in nodes.items():
            d = self.devices / "system" / "node" / f"node{node}"
            d.mkdir(parents=True, exist_ok=True)
            write_text(d / "cpulist", ",".join(map(str, cpus)))
        for cpu, pkg in packages.items():
            d = self.devices / "system" / "cpu" / f"cpu{cpu}" / "topology"
            d.mkdir(parents=True, exist_ok=True)
            write_text(d / "physical_package_id", str(pkg))

    def amd_energy(self, *, cores: int = 2, sockets: int = 1, esu: int = 16,
                   accumulate: bool = True, msr_bits: int = 32,
                   msr: list[int] | None = None,
                   energy_ctr: list[int] | None = None) -> AmdEnergy:
        """amd_energy over ``cores`` cores and ``sockets`` sockets. ``accumulate``: the
        kthread accumulates (mainline; out-of-tree on 32-bit-RAPL CPUs); False: the
        out-of-tree driver's ``do_not_accum`` on 64-bit RAPL MSRs (``msr_bits`` 64).
        ``msr``: the RAPL MSRs' values when the driver loads; ``energy_ctr``: accumulators
        already built up (a driver loaded long ago)."""
        parent = self.devices / "platform" / "amd_energy.0"
        parent.mkdir(parents=True)
        hw, d = self._register(parent, "amd_energy")
        labels = [f"Ecore{i:03d}" for i in range(cores)] + [f"Esocket{i}" for i in range(sockets)]
        n = len(labels)
        dev = AmdEnergy(hw, d, esu, accumulate, msr_bits, labels,
                        msr=list(msr or [0] * n), energy_ctr=list(energy_ctr or [0] * n),
                        prev_value=[0] * n)
        for i, label in enumerate(labels):
            write_text(d / f"energy{i + 1}_label", label, 0o440)
            if accumulate:
                self._accumulate(dev, i)
            self._show(dev, i)
            os.chmod(d / f"energy{i + 1}_input", 0o440)
        return dev

    @staticmethod
    def _accumulate(dev: AmdEnergy, i: int) -> None:
        """``accumulate_delta`` (the kthread, every timeout_ms)."""
        value = dev.msr[i] & UINT_MAX
        prev = dev.prev_value[i]
        if value >= prev:
            dev.energy_ctr[i] = (dev.energy_ctr[i] + value - prev) & U64
        else:
            dev.energy_ctr[i] = (dev.energy_ctr[i] + UINT_MAX - prev + value) & U64
        dev.prev_value[i] = value

    @staticmethod
    def input_uj(dev: AmdEnergy, i: int) -> int:
        """``amd_add_delta``: what ``energy{i+1}_input`` shows now."""
        value = dev.msr[i] & UINT_MAX
        if dev.accumulate:
            prev, ctr = dev.prev_value[i], dev.energy_ctr[i]
            if value >= prev:
                value = (value + ctr - prev) & U64
            else:
                value = (value + UINT_MAX - prev + ctr) & U64
        return ((value * 1_000_000) & U64) >> dev.esu

    def _show(self, dev: AmdEnergy, i: int) -> None:
        write_value(dev.attr_dir / f"energy{i + 1}_input", self.input_uj(dev, i))

    def amd_add_energy(self, dev: AmdEnergy, label: str, joules: float) -> int:
        """The hardware counts ``joules`` on ``label``'s MSR (in steps the kthread follows);
        returns the RAPL units added."""
        i = dev.labels.index(label)
        units = round(joules * (1 << dev.esu))
        left = units
        while left > 0:
            step = min(left, 1 << 30)  # the kthread runs long before 2^32 units pass
            dev.msr[i] = (dev.msr[i] + step) & ((1 << dev.msr_bits) - 1)
            if dev.accumulate:
                self._accumulate(dev, i)
            left -= step
        self._show(dev, i)
        return units
