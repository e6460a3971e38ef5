"""The ``daemon`` probe family: RAPL counters read through ``energymeter daemon``.

Since Linux 5.10 RAPL ``energy_uj`` is readable by root only. ``energymeter daemon`` (root, or
a group with read access) samples every probe of the machine and serves the counters read-only
on a Unix socket; this probe reads them there, so that an unprivileged ``measure()`` still
gets ``method: counter`` (source ``rapl via daemon``). GPUs stay in-process: NVML needs no
root, and which GPUs a process sees (``CUDA_VISIBLE_DEVICES``) is per process.

Protocol (version :data:`PROTOCOL`): JSON lines over the Unix socket. A request is one JSON
object per line with ``op``; the answer is one JSON object per line with ``ok`` (and ``error``
saying what is accepted when false). Operations, all read-only:

* ``hello``: ``protocol``, ``version``, ``host``, ``pid``, ``interval_s``, ``started_at``;
* ``channels``: the channels served (``Channel.to_dict()`` each, with ``meta``);
* ``read``: a fresh read, ``t_ns`` (``CLOCK_MONOTONIC``, shared by every process of the
  machine) and ``energy_j`` (cumulative joules per channel since the daemon started, wraps
  undone);
* ``rows`` (``since_ns``): the sampled rows newer than ``since_ns`` from the daemon's ring
  buffer (``[t_ns, {channel: J}]`` each; at most 500 per answer: ask again from the last)
  and ``oldest_ns``.

If the daemon stops answering mid-run the probe warns and falls back, for the rest of the
run, to in-process RAPL (same channels, when readable) or else the estimated CPU model, whose
energy is added to what the daemon had counted: nothing measured is lost, and the warning says
which part was estimated. :meth:`DaemonProbe.estimated_parts` tells the report how many joules
of each channel were estimated since when (the gap at the last power, and everything the model
counted; in-process RAPL counters are measured), so that the channel is reported ``mixed``.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .._lazy import LazyLogger
from .base import Channel, DiscoveryContext, Probe, Unavailable

log = LazyLogger("energymeter")

SOURCE = "daemon"
PROTOCOL = 1
#: Where ``energymeter daemon`` listens unless told otherwise, and where ``daemon="auto"`` looks.
DEFAULT_SOCKET = Path("/run/energymeter/energymeter.sock")
#: The longest wait for one answer of the daemon before it is taken as gone.
TIMEOUT_S = 2.0
#: How long a connect turned away by a full listen queue (a burst of clients) is retried.
CONNECT_RETRY_S = 2.0
#: The longest answer line read (a ``rows`` answer, at most 500 rows, is far shorter).
MAX_LINE_BYTES = 64 * 2**20
#: Sources the daemon serves to clients (the root-only counters).
SERVED_SOURCES = ("rapl",)
#: The window over which the power is taken to fill the gap when the daemon is lost.
POWER_WINDOW_S = 0.5


class DaemonError(OSError):
    """The daemon did not answer, or answered something that is not the protocol."""


class Connection:
    """One client connection: :meth:`call` sends a request and returns the answer.

    A connect the daemon's full listen queue turns away (``EAGAIN``: a burst of clients) is
    tried again with a short backoff for up to ``connect_retry_s``, then fails saying so. A
    connection the daemon closed while it sat idle (its idle timeout) is opened again once,
    transparently: every request is read-only, so asking again is safe. A refusal (another
    group, too many connections) is read and raised with the daemon's words even when it
    arrives before the request is sent.
    """

    def __init__(self, path: Path, timeout_s: float = TIMEOUT_S,
                 connect_retry_s: float = CONNECT_RETRY_S) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.connect_retry_s = connect_retry_s
        #: Connects retried because the daemon's listen queue was full (all connects).
        self.connect_retries = 0
        self._sock = self._connect()
        self._file = self._sock.makefile("rb")
        self._answered = False  # this socket has answered (an EOF then is the idle timeout)

    def _connect(self) -> Any:
        import random
        import socket  # only where a daemon is there to connect to

        deadline = time.monotonic() + self.connect_retry_s
        delay_s = 0.002
        tries = 0
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(str(self.path))
                return sock
            except BlockingIOError as exc:  # EAGAIN: the listen queue is full
                sock.close()
                tries += 1
                self.connect_retries += 1
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise DaemonError(errno.EAGAIN, f"the daemon at {self.path} did not take "
                                      f"the connection in {self.connect_retry_s:g} s ({tries} "
                                      f"tries; its listen queue stayed full: it is overloaded "
                                      f"or stuck): {exc.strerror}") from exc
            except OSError:
                sock.close()
                raise
            # Jitter (not secrets) spreads a burst's retries; the last try is at the deadline.
            time.sleep(min(left_s, delay_s * (0.5 + random.random())))  # noqa: S311
            delay_s = min(delay_s * 2, 0.1)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        request = json.dumps({"op": op, **args}, separators=(",", ":")).encode() + b"\n"
        line, failure = self._exchange(request)
        if not line and self._answered and (failure is None or isinstance(
                failure, (BrokenPipeError, ConnectionResetError))):
            # Closed by the daemon's idle timeout (or a restart): once more on a new socket.
            self._reopen()
            line, failure = self._exchange(request)
        if failure is not None and not line.endswith(b"\n"):
            raise DaemonError(f"no answer from the daemon at {self.path}: {failure}"
                              ) from failure
        if not line.endswith(b"\n"):
            raise DaemonError(f"the daemon at {self.path} closed the connection"
                              if not line else f"answer from {self.path} too long or cut")
        self._answered = True
        try:
            answer = json.loads(line)
        except ValueError as exc:
            raise DaemonError(f"the daemon at {self.path} answered something that is not "
                              f"JSON: {exc}") from exc
        if not isinstance(answer, dict):
            raise DaemonError(f"the daemon at {self.path} answered {type(answer).__name__}, "
                              "not an object")
        if not answer.get("ok"):
            raise DaemonError(f"the daemon at {self.path} refused {op!r}: "
                              f"{answer.get('error', 'no reason given')}")
        return answer

    def _exchange(self, request: bytes) -> tuple[bytes, Exception | None]:
        """Send ``request``, read one line: ``(line, the error that stopped it, or None)``.
        A send the daemon cut short (EPIPE, ECONNRESET: it refused us) still reads what it
        said before closing."""
        failure: Exception | None = None
        try:
            self._sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError) as exc:
            failure = exc
        except (OSError, ValueError) as exc:  # ValueError: the file was closed
            return b"", exc
        try:
            return self._file.readline(MAX_LINE_BYTES + 1), failure
        except (OSError, ValueError) as exc:
            return b"", failure or exc

    def _reopen(self) -> None:
        self.close()
        try:
            self._sock = self._connect()
        except OSError as exc:
            raise DaemonError(f"the daemon at {self.path} closed the connection and does not "
                              f"take a new one: {exc}") from exc
        self._file = self._sock.makefile("rb")
        self._answered = False

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def socket_path(setting: str, env: Any = None) -> Path | None:
    """The socket the ``daemon`` setting names: ``off`` -> None, ``auto`` -> the default
    socket, else the path given."""
    if setting == "off":
        return None
    return DEFAULT_SOCKET if setting == "auto" else Path(setting)


def query(path: Path, op: str = "hello", **args: Any) -> dict[str, Any]:
    """One request to the daemon at ``path`` (``energymeter probes``, tests)."""
    conn = Connection(path)
    try:
        return conn.call(op, **args)
    finally:
        conn.close()


class DaemonProbe(Probe):
    """Counters of the daemon's RAPL channels, as cumulative joules since this probe opened."""

    source = SOURCE
    may_block = True  # a socket round trip to another process

    def __init__(self, conn: Connection, channels: tuple[Channel, ...], hello: dict[str, Any],
                 ctx: DiscoveryContext) -> None:
        super().__init__(channels)
        self._conn: Connection | None = conn
        self._hello = hello
        self._ctx = ctx
        self._ids = [c.id for c in channels]
        first = self._fetch()
        self._origin = {cid: first.get(cid, 0.0) for cid in self._ids}
        self._last = {cid: 0.0 for cid in self._ids}
        # Client time (time.monotonic_ns) of the last good read, and recent good reads (for
        # the power at loss).
        self._last_ns = time.monotonic_ns()
        self._recent: deque[tuple[int, dict[str, float]]] = deque(maxlen=64)
        self._fallback: Probe | None = None
        self._fallback_origin: dict[str, float] = {}
        self._fallback_ids: dict[str, str] = {}  # our channel -> the fallback's channel
        self._lost_at_s: float | None = None
        self._opened_ns = time.monotonic_ns()
        # What was estimated, not measured (see estimated_parts): written by reads, read under
        # its own lock so that asking never waits for a read in progress.
        self._estimate_lock = threading.Lock()
        self._gap_j: dict[str, float] = {}  # per channel, the gap at the last power
        self._model_ids: frozenset[str] = frozenset()  # channels the CPU model goes on with
        self._estimated_j: dict[str, float] = {}  # per channel, since this probe opened
        self._estimated_from_ns: int | None = None  # the last good read before the loss
        self._estimated_until_ns: dict[str, int] = {}  # channels measured again, or not at all
        self._run_base_j: dict[str, float] = {}  # _estimated_j when the current run began
        self._run_began_ns = self._opened_ns

    def _fetch(self) -> dict[str, float]:
        assert self._conn is not None
        answer = self._conn.call("read")
        energy = answer.get("energy_j")
        if not isinstance(energy, dict):
            raise DaemonError(f"the daemon at {self._conn.path} answered 'read' without "
                              "energy_j")
        return {k: float(v) for k, v in energy.items() if isinstance(v, (int, float))}

    def _read(self) -> dict[str, float]:
        if self._conn is not None:
            try:
                now = self._fetch()
            except DaemonError as exc:
                self._lose(exc)
            else:
                self._recent.append((self._last_ns, self._last))
                self._last_ns = time.monotonic_ns()
                self._last = {cid: now.get(cid, self._origin[cid]) - self._origin[cid]
                              for cid in self._ids}
                return dict(self._last)
        out = dict(self._last)
        if self._fallback is not None:
            values = self._fallback.read()
            for cid, fid in self._fallback_ids.items():
                out[cid] = self._last[cid] + values.get(fid, 0.0) \
                    - self._fallback_origin.get(fid, 0.0)
            if self._model_ids:  # all the model counted is estimated, with the gap before it
                with self._estimate_lock:
                    for cid in self._model_ids:
                        self._estimated_j[cid] = self._gap_j.get(cid, 0.0) \
                            + out[cid] - self._last[cid]
        return out

    def _lose(self, exc: DaemonError) -> None:
        """The daemon is gone: keep what it counted, go on in-process for the rest."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._lost_at_s = (time.monotonic_ns() - self._opened_ns) / 1e9
        fallback, mapping, how = self._open_fallback()
        self._fallback, self._fallback_ids = fallback, mapping
        if fallback is not None:
            fallback.begin_run()
            self._fallback_origin = fallback.read()
        # The time between the last good read and the fallback's first: at the last power
        # the daemon gave (an estimate over at most a sampling interval or so).
        resumed_ns = time.monotonic_ns()
        gap_s = (resumed_ns - self._last_ns) / 1e9
        gap_j = 0.0
        gaps: dict[str, float] = {}
        # The power over at least POWER_WINDOW_S before the last read (two reads a moment
        # apart may straddle no counter update at all).
        older = [r for r in self._recent if (self._last_ns - r[0]) / 1e9 >= POWER_WINDOW_S]
        base = older[-1] if older else (self._recent[0] if self._recent else None)
        if base is not None and self._last_ns > base[0]:
            t_prev_ns, e_prev = base
            for channel in self.channels:
                cid = channel.id
                power_w = (self._last[cid] - e_prev.get(cid, 0.0)) \
                    / ((self._last_ns - t_prev_ns) / 1e9)
                gaps[cid] = power_w * gap_s
                self._last[cid] += gaps[cid]
                gap_j += gaps[cid] if channel.in_total else 0.0
        # Estimated from the last good read on: the gap, then what a model counts (in-process
        # RAPL counters are measured: their channels' estimate ends where they begin).
        models = {c.id for c in fallback.channels if c.method == "model"} if fallback else set()
        model_ids = frozenset(cid for cid, fid in mapping.items() if fid in models)
        with self._estimate_lock:
            self._gap_j = gaps
            self._model_ids = model_ids
            self._estimated_j = {cid: gaps.get(cid, 0.0) for cid in self._ids}
            self._estimated_from_ns = self._last_ns
            self._estimated_until_ns = {cid: resumed_ns for cid in self._ids
                                        if cid not in model_ids}
        unmeasured = [cid for cid in self._ids if cid not in mapping]
        self._warn_locked(
            f"the energymeter daemon stopped answering ({exc}) {self._lost_at_s:.1f} s after "
            f"this probe opened; what it counted until then is kept ({gap_j:.3g} J of the "
            f"{gap_s * 1000:.0f} ms since its last answer estimated at its last power), and "
            f"from then on {how}"
            + (f"; not measured after that: {', '.join(unmeasured)}" if unmeasured else ""))

    def _open_fallback(self) -> tuple[Probe | None, dict[str, str], str]:
        from . import cpumodel, rapl

        found = rapl.discover(self._ctx)
        for probe in found:
            if isinstance(probe, Probe):
                ids = {c.id for c in probe.channels}
                mapping = {cid: cid for cid in self._ids if cid in ids}
                if mapping:
                    return probe, mapping, "in-process RAPL counters (method counter) go on"
                probe.close()
        found = cpumodel.discover(self._ctx, why="the energymeter daemon stopped answering")
        for probe in found:
            if isinstance(probe, Probe):
                cpu = next((c.id for c in probe.channels if c.kind == "cpu"), None)
                target = next((c.id for c in self.channels
                               if c.kind == "cpu" and c.part_of is None), None)
                if cpu is not None and target is not None:
                    probe.drain_warnings()
                    return probe, {target: cpu}, (f"{target} is ESTIMATED by the CPU model "
                                                  "(utilisation x TDP), not measured")
                probe.close()
        return None, {}, "no CPU energy is measured"

    def _first_run_began(self) -> None:
        """Estimates are per run: what was estimated before this run is not its own."""
        with self._estimate_lock:
            self._run_base_j = dict(self._estimated_j)
            self._run_began_ns = time.monotonic_ns()

    def estimated_parts(self) -> dict[str, dict[str, float]]:
        """Per channel with some energy estimated in the current run (see
        :meth:`Probe.estimated_parts`): the gap at the daemon's last power, and for the
        channel the CPU model took over all it counted since (``until_t_ns`` absent: still
        estimated); the other channels' estimate ends when the fallback began
        (``until_t_ns``)."""
        with self._estimate_lock:
            if self._estimated_from_ns is None:
                return {}
            parts: dict[str, dict[str, float]] = {}
            for cid, joules in self._estimated_j.items():
                run_j = joules - self._run_base_j.get(cid, 0.0)
                if run_j <= 0:
                    continue
                part = {"estimated_j": run_j,
                        "from_t_ns": max(self._estimated_from_ns, self._run_began_ns)}
                if cid in self._estimated_until_ns:
                    part["until_t_ns"] = self._estimated_until_ns[cid]
                parts[cid] = part
            return parts

    def describe(self) -> dict[str, Any]:
        conn_path = str(self._conn.path) if self._conn is not None else None
        return {**super().describe(), "socket": conn_path,
                "daemon": {k: self._hello.get(k) for k in ("version", "pid", "interval_s",
                                                           "started_at", "host")}}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._fallback is not None:
            self._fallback.end_run()
            self._fallback.close()
            self._fallback = None


def discover(ctx: DiscoveryContext) -> list[Probe | Unavailable]:
    """A :class:`DaemonProbe` when a daemon answers at the socket ``ctx.daemon`` names, else an
    :class:`Unavailable` saying why (with ``auto``, a missing socket is said quietly: most
    machines run no daemon)."""
    path = socket_path(ctx.daemon)
    if path is None:
        return []
    if not os.path.exists(path):
        return [Unavailable(SOURCE, f"no energymeter daemon socket at {path}",
                            "start `energymeter daemon` as root (docs/permissions.md) to read "
                            "root-only RAPL counters without root")]
    try:
        conn = Connection(path)
    except OSError as exc:
        if isinstance(exc, PermissionError):
            hint = "your user may not use it: ask for the daemon's group (docs/permissions.md)"
        elif exc.errno == errno.EAGAIN:
            hint = "the daemon is overloaded: see docs/daemon.md (Limits)"
        else:
            hint = "is `energymeter daemon` running?"
        return [Unavailable(SOURCE, f"cannot connect to the daemon at {path}: {exc}", hint)]
    try:
        hello = conn.call("hello")
        if hello.get("protocol") != PROTOCOL:
            raise DaemonError(f"the daemon at {path} speaks protocol {hello.get('protocol')!r}"
                              f", this energymeter {PROTOCOL}: run the same version on both")
        listed = conn.call("channels").get("channels")
        if not isinstance(listed, list):
            raise DaemonError(f"the daemon at {path} answered 'channels' without a list")
        channels = tuple(_channel(c, path) for c in listed
                         if isinstance(c, dict) and c.get("source") in SERVED_SOURCES)
        if not channels:
            conn.close()
            return [Unavailable(SOURCE, f"the daemon at {path} serves no RAPL counter (it "
                                        "cannot read them either)",
                                "run `energymeter probes` as the daemon's user to see why")]
        return [DaemonProbe(conn, channels, hello, ctx)]
    except (DaemonError, KeyError, TypeError, ValueError) as exc:
        conn.close()
        hint = ("the daemon is serving as many clients as it may: see docs/daemon.md (Limits)"
                if "too many connections" in str(exc) else
                "restart `energymeter daemon` (same energymeter version)")
        return [Unavailable(SOURCE, f"the daemon at {path} is not usable: {exc}", hint)]


def _channel(data: dict[str, Any], path: Path) -> Channel:
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    return Channel(str(data["id"]), str(data["kind"]), str(data.get("device", "")),
                   f"{data['source']} via daemon", str(data["method"]),
                   data.get("part_of"), float(data.get("resolution_s", 0.0)),
                   {**meta, "daemon_socket": str(path)})
