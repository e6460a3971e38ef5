"""The host probe: process-tree gauges through psutil, on this machine's real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from energymeter.errors import ProbeError
from energymeter.probes.base import DiscoveryContext
from energymeter.probes.proc import RusagePeaks, descendant_stats, peak_rss_bytes_from_rusage
from energymeter.probes.process import GAUGE_NAMES, ProcessTreeProbe, discover


def poll(probe: ProcessTreeProbe, until: Callable[[dict[str, float]], bool],
         timeout_s: float = 5.0) -> list[dict[str, float]]:
    """Sample every 20 ms until ``until(sample)`` or timeout; return every sample."""
    samples = [probe.gauges()]
    deadline = time.monotonic() + timeout_s
    while not until(samples[-1]) and time.monotonic() < deadline:
        time.sleep(0.02)
        samples.append(probe.gauges())
    return samples


def test_discover_and_gauge_names() -> None:
    (probe,) = discover(DiscoveryContext())
    assert isinstance(probe, ProcessTreeProbe)
    assert probe.pid == os.getpid()
    assert probe.channels == ()
    assert probe.read() == {}
    sample = probe.gauges()
    assert set(sample) <= set(GAUGE_NAMES)
    assert {"rss_bytes", "cpu_time_s", "system_memory_used_bytes", "children"} <= set(sample)
    assert sample["rss_bytes"] > 0
    assert sample["system_memory_used_bytes"] > 0
    assert sample["cpu_time_s"] >= 0.0


def test_tree_rss_includes_a_child() -> None:
    probe = ProcessTreeProbe()
    before = probe.gauges()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(50_000_000); time.sleep(2)"])
    try:
        samples = poll(probe, lambda s: s["rss_bytes"] - before["rss_bytes"] >= 40e6)
        assert samples[-1]["rss_bytes"] - before["rss_bytes"] >= 40e6
        assert samples[-1]["children"] >= 1
    finally:
        child.kill()
        child.wait()
    assert probe.gauges()["children"] == before["children"]


def test_cpu_time_of_an_exited_child_is_kept() -> None:
    probe = ProcessTreeProbe()
    start = probe.gauges()["cpu_time_s"]
    child = subprocess.Popen([
        sys.executable, "-c",
        "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass",
    ])
    samples = [probe.gauges()]
    while child.poll() is None:
        time.sleep(0.02)
        samples.append(probe.gauges())
    child.wait()
    samples.append(probe.gauges())  # the child is gone (reaped): its time must stay
    samples.append(probe.gauges())
    cpu = [s["cpu_time_s"] for s in samples]
    assert all(b >= a for a, b in zip(cpu, cpu[1:], strict=False)), cpu
    assert cpu[-1] - start >= 0.4  # 0.6 s burnt, less what came after the last sample


def test_baseline_counts_from_opening() -> None:
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    probe = ProcessTreeProbe()
    assert probe.gauges()["cpu_time_s"] < 0.1  # the 0.2 s burnt before opening is not counted


def test_write_bytes_grow_after_fsync(tmp_path) -> None:
    try:
        own = psutil.Process().io_counters()
    except (psutil.AccessDenied, NotImplementedError, AttributeError) as exc:
        pytest.skip(f"io_counters unavailable here: {exc!r}")
    probe = ProcessTreeProbe()
    first = probe.gauges()
    assert "write_bytes" in first and "read_bytes" in first
    with open(tmp_path / "blob", "wb") as f:
        f.write(os.urandom(4_000_000))
        f.flush()
        os.fsync(f.fileno())
    if psutil.Process().io_counters().write_bytes - own.write_bytes < 1_000_000:
        pytest.skip(f"the filesystem under {tmp_path} does not account write_bytes (tmpfs?)")
    second = probe.gauges()
    assert second["write_bytes"] - first["write_bytes"] >= 3_000_000
    assert second["read_bytes"] >= first["read_bytes"]


def test_missing_root_raises_probe_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProbeError):
        ProcessTreeProbe(child.pid)  # reaped: no such process (pid reuse within ms is not expected)
    with pytest.raises(ProbeError):
        ProcessTreeProbe(2**22 + 12345)  # above Linux's maximum pid_max


def test_root_vanishing_after_open_raises_probe_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        probe = ProcessTreeProbe(child.pid)
        assert probe.gauges()["rss_bytes"] > 0
    finally:
        child.kill()
        child.wait()
    with pytest.raises(ProbeError):
        probe.gauges()
    (missing,) = discover(DiscoveryContext(pid=child.pid))
    assert missing.source == "host" and str(child.pid) in missing.reason


def test_rusage_peaks() -> None:
    peaks = peak_rss_bytes_from_rusage()
    assert isinstance(peaks, RusagePeaks)
    rss_now = psutil.Process().memory_info().rss
    assert peaks.self_bytes >= rss_now * 0.9  # the high-water mark is at least today's RSS
    assert peaks.max_bytes == max(peaks.self_bytes, peaks.children_bytes)
    # a short-lived child's spike, never sampled, is in the kernel's mark for reaped children
    subprocess.run([sys.executable, "-c", "x = bytearray(60_000_000)"], check=True)
    peaks = ProcessTreeProbe().peak_rss_bytes_from_rusage()
    assert isinstance(peaks, RusagePeaks)
    assert peaks.children_bytes >= 50e6
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert ProcessTreeProbe(child.pid).peak_rss_bytes_from_rusage() is None
    finally:
        child.kill()
        child.wait()


def test_tree_walk_through_task_children_files(tmp_path: Path) -> None:
    """Where the kernel lists children in /proc/<pid>/task/<tid>/children, only the tree is read
    (this VM's kernel lacks those files, so a proc tree naming real processes stands in)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        me = os.getpid()
        for pid, kids in ((me, f"{child.pid} "), (child.pid, "")):
            task = tmp_path / str(pid) / "task" / str(pid)
            task.mkdir(parents=True)
            (task / "children").write_text(kids)
            for name in ("stat", "statm", "io"):
                (tmp_path / str(pid) / name).symlink_to(f"/proc/{pid}/{name}")
        (tmp_path / "meminfo").symlink_to("/proc/meminfo")
        probe = ProcessTreeProbe(proc_root=str(tmp_path))
        assert probe._children_files and probe.reads_procfs
        assert [s.pid for s in descendant_stats(me, proc_root=str(tmp_path))] == [child.pid]
        gauges = probe.gauges()
        assert gauges["children"] == 1
        assert gauges["rss_bytes"] >= psutil.Process(child.pid).memory_info().rss
    finally:
        child.kill()
        child.wait()


def test_forked_workers_shared_pages_are_counted_once_with_pss() -> None:
    """Four processes sharing 150 MB copy-on-write: RSS sums 600 MB, PSS about 150 MB."""
    script = ("import os, time\n"
              "x = bytearray(150 * 2**20)\n"
              "for i in range(0, len(x), 4096): x[i] = 1\n"
              "for _ in range(3):\n"
              "    if os.fork() == 0:\n"
              "        time.sleep(30); os._exit(0)\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             start_new_session=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        probe = ProcessTreeProbe(child.pid)
        gauges = probe.gauges()
        assert gauges["children"] == 3
        assert gauges["rss_bytes"] > 550 * 2**20
        assert 140 * 2**20 < gauges["pss_bytes"] < 0.5 * gauges["rss_bytes"]
        assert gauges["memory_bytes"] == gauges["pss_bytes"]
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def test_a_lone_process_memory_is_its_rss_and_pss_is_not_read() -> None:
    probe = ProcessTreeProbe()
    gauges = probe.gauges()
    assert gauges["memory_bytes"] == gauges["rss_bytes"] and "pss_bytes" not in gauges


def test_children_only_leaves_the_root_out() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; print(1, flush=True); "
                              "time.sleep(5)"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline()  # started
        only_children = ProcessTreeProbe(include_root=False).gauges()
        everything = ProcessTreeProbe().gauges()
        child_rss = psutil.Process(child.pid).memory_info().rss
        assert only_children["rss_bytes"] == pytest.approx(child_rss, rel=0.2)
        assert everything["rss_bytes"] > only_children["rss_bytes"] + 10 * 2**20  # pytest
    finally:
        child.kill()
        child.wait()


def test_a_lone_process_is_read_inline_and_pss_only_behind_the_helper_thread() -> None:
    """Read from /proc, a lone process's gauges take no lock of another process: the sampler
    may call them inline (no helper thread). Once the tree has several processes the probe
    says it may block, and only a read that began so reads PSS (smaps_rollup takes the
    target's memory-map lock)."""
    probe = ProcessTreeProbe()
    assert probe.reads_procfs and not probe.may_block
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)"])
    try:
        first = poll(probe, lambda g: g["children"] >= 1)[-1]
        assert first["children"] == 1
        assert "pss_bytes" not in first  # this read began inline: no PSS
        assert probe.may_block
        probe._next_pss_s = 0.0
        assert "pss_bytes" in probe.gauges()
    finally:
        child.kill()
        child.wait()
    poll(probe, lambda g: g["children"] == 0)
    assert not probe.may_block


def test_system_memory_used_is_psutils_figure() -> None:
    """Read from /proc/meminfo as psutil computes virtual_memory().used on Linux."""
    from energymeter.probes.proc import system_memory_used_bytes

    ours, theirs = system_memory_used_bytes(), psutil.virtual_memory().used
    assert abs(ours - theirs) < 64 * 2**20, (ours, theirs)  # memory moves between the reads


def test_proc_reads_give_psutils_figures() -> None:
    """/proc/<pid>/stat and io read directly give what psutil gives for the same process."""
    from energymeter.probes.proc import read_pid_io, read_pid_stat

    me = psutil.Process()
    stat, io = read_pid_stat(os.getpid()), read_pid_io(os.getpid())
    assert stat is not None and io is not None
    rss, times, counters = me.memory_info().rss, me.cpu_times(), me.io_counters()
    assert abs(stat.rss_bytes - rss) < 4 * 2**20
    assert abs(stat.cpu_s - (times.user + times.system)) < 0.05
    assert stat.ppid == os.getppid() and not stat.zombie
    assert 0 <= counters.read_bytes - io[0] < 2**20 and 0 <= counters.write_bytes - io[1] < 2**20
    assert read_pid_stat(2**22 + 12345) is None  # above Linux's pid_max


def test_without_proc_the_tree_is_read_through_psutil(tmp_path: Path) -> None:
    """Where there is no /proc (macOS), psutil reads the same tree; no PSS is claimed."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)"])
    try:
        probe = ProcessTreeProbe(proc_root=str(tmp_path))  # an empty folder: no /proc
        assert not probe.reads_procfs and probe.may_block
        gauges = poll(probe, lambda g: g["children"] >= 1)[-1]
        assert gauges["children"] == 1
        assert gauges["rss_bytes"] >= psutil.Process(child.pid).memory_info().rss
        assert "pss_bytes" not in probe.gauges()
        assert probe.describe()["reads"] == "psutil"
    finally:
        child.kill()
        child.wait()
    assert poll(probe, lambda g: g["children"] == 0)[-1]["children"] == 0
