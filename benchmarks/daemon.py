"""What the daemon costs: its CPU share while sampling, and a client's read through its socket.

    python benchmarks/daemon.py                   # 16 channels, 10 Hz, 20 s of sampling
    python benchmarks/daemon.py --seconds 60 --interval 0.01

Runs ``energymeter daemon`` on a simulated RAPL tree of 16 channels (4 packages, each with
core, uncore and DRAM sub-zones), reads the daemon process's CPU time from /proc over the
sampling window (with no client connected), then times N ``read`` requests of one client
connection and N ``DaemonProbe.read()`` calls (what a ``measure()`` boundary read costs).
Prints a table; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from energymeter.probes.base import DiscoveryContext  # noqa: E402
from energymeter.probes.daemon import Connection, discover, query  # noqa: E402
from tests.fakes.powercap import FakePowercap  # noqa: E402


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    fake = FakePowercap(tmp / "powercap", sockets=4, core=True, uncore=True, dram=True)
    with fake.start(period_s=0.01):
        sock = tmp / "d.sock"
        env = {**os.environ, "ENERGYMETER_POWERCAP_ROOT": str(fake.root),
               "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "energymeter", "daemon", "--socket",
                                 str(sock), "--allow-all", "--interval", str(args.interval)],
                                env=env, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    query(sock)
                    break
                except OSError:
                    time.sleep(0.05)
            channels = len(query(sock, "channels")["channels"])
            time.sleep(1.0)  # past start-up
            c0, t0 = cpu_s(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            share = (cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
            conn = Connection(sock)
            times = []
            for _ in range(args.reads):
                start = time.perf_counter()
                conn.call("read")
                times.append(time.perf_counter() - start)
            conn.close()
            [probe] = discover(DiscoveryContext(daemon=str(sock)))
            probe_times = []
            for _ in range(args.reads):
                start = time.perf_counter()
                probe.read()
                probe_times.append(time.perf_counter() - start)
            probe.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def ms(values: list[float], q: float) -> str:
        values = sorted(values)
        return f"{values[min(len(values) - 1, int(q * len(values)))] * 1000:.3f}"

    print(f"daemon: {channels} channels at {1 / args.interval:g} Hz for {args.seconds:g} s "
          f"on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"| measure | value |\n|---|---|\n| daemon CPU share (of one core) | "
          f"{share * 100:.2f} % |")
    print(f"| socket `read`, median / p90 / p99 | {ms(times, 0.5)} / {ms(times, 0.9)} / "
          f"{ms(times, 0.99)} ms |")
    print(f"| `DaemonProbe.read()` (a boundary read), median / p90 | "
          f"{statistics.median(probe_times) * 1000:.3f} / {ms(probe_times, 0.9)} ms |")


if __name__ == "__main__":
    main()
