"""``energymeter daemon``: one sampler per machine, serving its counters read-only.

The daemon opens every probe of the machine once (RAPL, NVML, the CPU model where nothing
else measures the CPU), reads them every ``interval_s`` on one thread (so counter wraps are
undone centrally, whoever asks and however rarely) and keeps the most recent rows in a bounded
ring buffer. Clients talk to it on a Unix socket with the JSON-lines protocol described in
:mod:`energymeter.probes.daemon`; nothing a client sends can change a hardware setting (the
protocol has no such operation). Who may connect: the socket's mode and group, and each
connection's peer credentials (``SO_PEERCRED``) checked against the same rule: root, the
daemon's own user, members of ``group``, or anyone with ``allow_all``.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import itertools
import json
import math
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._lazy import LazyLogger
from .._version import __version__
from ..errors import ConfigError
from ..notes import MAX_WARNING_CHARS, WarningBook
from ..probes import DiscoveryContext, Probe, discover
from ..probes.daemon import DEFAULT_SOCKET, PROTOCOL

log = LazyLogger("energymeter")

#: Rows kept in the ring buffer by default: 10 minutes at 10 Hz.
DEFAULT_RING_ROWS = 6000
#: The longest request line accepted from a client.
MAX_REQUEST_BYTES = 4096
#: The most rows one ``rows`` answer holds (a client asks again from the last one): a few
#: hundred KiB at most, a millisecond or two of the loop to encode.
MAX_ROWS_PER_ANSWER = 500
#: Answers waiting to be sent, all clients together: past this, ``rows`` requests wait (their
#: clients are not answered) until the others drain; ``hello``/``channels``/``read``, whose
#: answers are small, are still served.
MAX_PENDING_BYTES = 64 * 2**20
#: The shortest period of the loop's timeout scan, whatever the timeouts (no spinning).
MIN_SCAN_S = 0.05
#: A probe that keeps failing is logged again at most this often, with how many times.
PROBE_LOG_EVERY_S = 300.0
OPS = ("hello", "channels", "read", "rows")
#: The most clients served at once; one more is told so and closed.
MAX_CONNECTIONS = 1024
#: A client that sends nothing for this long is closed (``Connection`` reconnects).
IDLE_TIMEOUT_S = 60.0
#: A client that takes none of a pending answer for this long is dropped.
SEND_TIMEOUT_S = 10.0
#: The listen queue (the kernel caps it at net.core.somaxconn).
BACKLOG = 4096
#: Requests sent ahead of their answers beyond this are refused (a client reads each answer).
PIPELINED_BYTES = 65536


@dataclass(frozen=True)
class Access:
    """Who may use the socket: ``group`` (its gid; members, root and the daemon's own user),
    or everyone with ``allow_all``."""

    gid: int | None = None
    allow_all: bool = False

    def mode(self) -> int:
        return 0o666 if self.allow_all else 0o660

    def allows(self, uid: int, gid: int, pid: int) -> bool:
        if self.allow_all or uid in (0, os.geteuid()):
            return True
        if self.gid is None:
            return False
        return gid == self.gid or self.gid in _groups_of(pid)


def _groups_of(pid: int) -> set[int]:
    """The supplementary groups of process ``pid`` (from /proc; empty if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError) as exc:
        log.debug("groups of pid %s unreadable: %r", pid, exc)
    return set()


def group_id(name: str) -> int:
    """The gid of group ``name`` (a name or a number), or :class:`ConfigError`."""
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"group {name!r} does not exist; create it (`groupadd {name}`) and "
                          "add the users who may read the counters, or give another") from None


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


class Daemon:
    """The sampler and its ring buffer (no socket: :func:`serve` adds that)."""

    def __init__(self, probes: Iterable[Probe], *, interval_s: float = 0.1,
                 ring_rows: int = DEFAULT_RING_ROWS) -> None:
        self.probes = tuple(probes)
        self.channels = tuple(c for p in self.probes for c in p.channels)
        self.interval_s = interval_s
        self.ring: deque[tuple[int, dict[str, float]]] = deque(maxlen=ring_rows)
        self.started_at = datetime.now(timezone.utc)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: dict[str, str] = {}  # probe source -> its last read error
        #: Probe failures, keyed by (source, error text): the first of each is logged, repeats
        #: are counted (and logged every ``log_every_s`` per source, with their count).
        self.failures = WarningBook()
        self.log_every_s = PROBE_LOG_EVERY_S
        self._unlogged: dict[str, list[float]] = {}  # source -> [last logged, failures since]
        self.ticks = 0
        for probe in self.probes:
            probe.begin_run()

    def read(self) -> tuple[int, dict[str, float]]:
        """A fresh read of every probe: ``(CLOCK_MONOTONIC ns, cumulative joules)``, stamped
        at the middle of the reads (as the sampler stamps its rows)."""
        energy: dict[str, float] = {}
        with self._lock:
            before_ns = time.monotonic_ns()
            for probe in self.probes:
                try:
                    values = dict(probe.read())
                except Exception as exc:  # one broken probe must not stop the others
                    self._failed(probe.source, f"{type(exc).__name__}: {exc}")
                    continue
                bad = []
                for key, value in values.items():
                    number = _finite(value)
                    if number is None or not isinstance(key, str):
                        bad.append(f"{_short(key)}={_short(value)} ({type(value).__name__})")
                    else:
                        energy[key] = number
                if bad:  # only finite numbers are served (JSON has no NaN; others crash)
                    self._failed(probe.source, "not a finite number: " + ", ".join(bad[:5])
                                 + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
            t_ns = (before_ns + time.monotonic_ns()) // 2
        return t_ns, energy

    def _failed(self, source: str, message: str) -> None:
        """Record a failed read of probe ``source`` (under the read lock); the log is bounded:
        a new error text is logged once, repeats every ``log_every_s`` with their count."""
        message = message[:MAX_WARNING_CHARS]
        self.errors[source] = message
        now = time.monotonic()
        first = source not in self._unlogged  # always said, however many others came before
        state = self._unlogged.setdefault(source, [now, 0])
        if self.failures.add(message, key=(source, message)) or first:
            log.warning("energymeter daemon: probe %s failed: %s", source, message)
            state[:] = [now, 0]
            return
        state[1] += 1
        if now - state[0] >= self.log_every_s:
            log.warning("energymeter daemon: probe %s failed %d more times in %.0f s; last: %s",
                        source, int(state[1]), now - state[0], message)
            state[:] = [now, 0]

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            row = self.read()
            self.ring.append(row)
            self.ticks += 1
            next_t += self.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:  # suspended or overloaded: skip, do not catch up in a burst
                next_t = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def start(self) -> Daemon:
        self._thread = threading.Thread(target=self._loop, name="energymeter-daemon",
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the sampling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for probe in self.probes:
            probe.end_run()
            probe.close()

    def rows_since(self, since_ns: int) -> tuple[list[list[Any]], int | None]:
        rows = list(itertools.islice(([t, e] for t, e in list(self.ring) if t > since_ns),
                                     MAX_ROWS_PER_ANSWER))
        oldest = self.ring[0][0] if self.ring else None
        return rows, oldest

    def answer(self, request: Any) -> dict[str, Any]:
        """The answer to one decoded request (never raises for a bad request)."""
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "a request is a JSON object with \"op\"; accepted "
                                          f"ops: {', '.join(OPS)}"}
        op = request["op"]
        if op == "hello":
            return {"ok": True, "protocol": PROTOCOL, "version": __version__,
                    "host": socket.gethostname(), "pid": os.getpid(),
                    "interval_s": self.interval_s, "started_at": self.started_at.isoformat(),
                    "ring_rows": self.ring.maxlen}
        if op == "channels":
            return {"ok": True, "channels": [c.to_dict() for c in self.channels]}
        if op == "read":
            t_ns, energy = self.read()
            return {"ok": True, "t_ns": t_ns, "energy_j": energy}
        if op == "rows":
            since = request.get("since_ns", 0)
            if isinstance(since, bool) or not isinstance(since, int):
                return {"ok": False, "error": "rows needs since_ns, an integer "
                                              "(CLOCK_MONOTONIC nanoseconds; 0 for all)"}
            rows, oldest = self.rows_since(since)
            return {"ok": True, "rows": rows, "oldest_ns": oldest}
        return {"ok": False, "error": f"unknown op {op!r}; accepted: {', '.join(OPS)} "
                                      "(the daemon is read-only)"}


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (a bool, a string, NaN, an overflowing int...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:60] + "..."


def open_daemon(*, powercap_root: Path | None = None, env: Mapping[str, str] | None = None,
                interval_s: float = 0.1, ring_rows: int = DEFAULT_RING_ROWS,
                nvml_module: str = "pynvml") -> tuple[Daemon, list[Any]]:
    """Discover this machine's probes (never through another daemon) and make a
    :class:`Daemon`; also returns what was unavailable."""
    kwargs: dict[str, Any] = {}
    if powercap_root is not None:
        kwargs["powercap_root"] = powercap_root
    found = discover(DiscoveryContext(pid=os.getpid(), env=dict(os.environ if env is None
                                                                else env),
                                      nvml_module=nvml_module, daemon="off", **kwargs))
    # The process probe measures the daemon's own tree: of no use to anyone here.
    probes = [p for p in found.probes if p.channels]
    for p in found.probes:
        if not p.channels:
            p.close()
    return Daemon(probes, interval_s=interval_s, ring_rows=ring_rows), list(found.unavailable)


class _Conn:
    """One client of a :class:`SelectorServer`: its socket, buffers and clocks."""

    __slots__ = ("sock", "fd", "rbuf", "wbuf", "last_in", "stalled_since", "closing",
                 "linger_until", "events", "peer", "closed")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.last_in = now  # the last bytes received (idle timeout)
        self.stalled_since: float | None = None  # since when an answer waits to be sent
        self.closing = False  # close once wbuf is sent (then shut down writing and linger)
        self.linger_until: float | None = None  # lingering: drain input until then
        self.events = 0
        self.peer: Any = None
        self.closed = False


#: Marks the listener among the selector's keys.
_LISTENER = object()


class SelectorServer:
    """A bounded stream server on one thread: a ``selectors`` loop, a connection cap, an idle
    timeout, a send timeout, a budget of pending output, and refusals a client can read.

    * At most ``max_connections`` clients are served; one more gets :meth:`over_cap` (one
      answer saying so) and is closed.
    * A client that sends nothing for ``idle_timeout_s`` (and has nothing waiting to be sent)
      is closed.
    * A client that has not taken any of its pending answer for ``send_timeout_s`` is dropped:
      a reader that never reads holds up nobody else, and its buffer is freed.
    * While an answer waits to be sent, no further request of that client is read (memory
      per client is one request buffer and one answer).
    * Answers waiting to be sent are counted over all clients (:attr:`pending_bytes`); past
      ``max_pending_bytes`` a subclass defers its large answers (:attr:`over_budget`,
      :meth:`defer`) until the others drain.
    * A refusal is sent, writing is shut down, and the client's input is drained for up to
      ``linger_s`` before the close, so the client reads the refusal instead of EPIPE or
      ECONNRESET; at most ``max_lingering`` connections linger at once.
    * An exception while handling one connection (a bug, an unexpected error) closes that
      connection and is logged (bounded); the loop goes on. An unexpected ``accept`` error
      pauses accepting for 0.1 s.
    * The timeout scan runs every ``min(0.1, timeouts / 4)`` s, never more often than
      :data:`MIN_SCAN_S`, and visits only the connections that may expire: idle ones in the
      order they last sent, up to the first that has not expired, plus those with an answer
      pending or lingering.

    Subclasses implement :meth:`on_accept` and :meth:`on_data`.
    """

    max_request_bytes = MAX_REQUEST_BYTES
    recv_bytes = 16384
    #: Requests of one client answered before the others get a turn.
    batch = 16

    def __init__(self, listener: socket.socket, *, max_connections: int,
                 idle_timeout_s: float, send_timeout_s: float, linger_s: float = 1.0,
                 max_lingering: int = 256, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        if max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, not {max_connections}")
        for name, value in (("idle_timeout_s", idle_timeout_s),
                            ("send_timeout_s", send_timeout_s),
                            ("max_pending_bytes", max_pending_bytes)):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, not {value}")
        self.socket = listener
        self.socket.setblocking(False)
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.send_timeout_s = send_timeout_s
        self.linger_s = linger_s
        self.max_lingering = max_lingering
        self.max_pending_bytes = max_pending_bytes
        self.conns: dict[int, _Conn] = {}
        self.ready: set[_Conn] = set()  # clients with whole requests not yet answered
        self.deferred: set[_Conn] = set()  # clients waiting for the output budget
        self._pending: set[_Conn] = set()  # clients with an answer waiting to be sent
        self._lingering: set[_Conn] = set()
        self._idle: dict[_Conn, None] = {}  # clients, in the order they last sent something
        self.pending_bytes = 0  # answers waiting to be sent, all clients
        self.pending_peak = 0
        self.lingering = 0
        self.refused_over_cap = 0
        self.dropped_slow = 0
        self.closed_idle = 0
        self.faults = 0  # connections closed by an exception in their handling
        self.scans = 0  # timeout scans done
        self.scan_visits = 0  # connections looked at by them
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._sel.register(self.socket, selectors.EVENT_READ, _LISTENER)
        self._accepting = True
        self._accept_paused_until = 0.0
        self._stop = False
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._closed = False
        self._scan_every_s = max(MIN_SCAN_S, min(0.1, idle_timeout_s / 4, send_timeout_s / 4))

    @property
    def connections(self) -> int:
        """Clients being served now (lingering refusals not counted)."""
        return len(self.conns) - self.lingering

    @property
    def over_budget(self) -> bool:
        """Whether the answers waiting to be sent reach ``max_pending_bytes``."""
        return self.pending_bytes >= self.max_pending_bytes

    # -- subclass hooks ----------------------------------------------------------------------
    def on_accept(self, conn: _Conn) -> bool:
        """Called for each new client under the cap; False when it was refused."""
        return True

    def on_data(self, conn: _Conn) -> None:
        """New bytes are in ``conn.rbuf``: consume whole requests, :meth:`send` answers."""
        raise NotImplementedError

    def over_cap(self) -> bytes:
        """What a client above the cap reads before it is closed."""
        raise NotImplementedError

    def defer(self, conn: _Conn) -> None:
        """Leave ``conn``'s next request unanswered until the output budget has room again
        (:meth:`on_data` is called again then)."""
        self.deferred.add(conn)

    # -- sending -----------------------------------------------------------------------------
    def send(self, conn: _Conn, data: bytes, *, then_close: bool = False) -> None:
        """Queue ``data`` for ``conn`` and send what the socket takes now."""
        if conn.linger_until is not None or conn.closed:
            return
        conn.wbuf += data
        self.pending_bytes += len(data)
        self.pending_peak = max(self.pending_peak, self.pending_bytes)
        self._pending.add(conn)
        conn.closing = conn.closing or then_close
        self._flush(conn, time.monotonic())

    def refuse(self, conn: _Conn, data: bytes) -> None:
        """Send ``data``, then stop: shut down writing and linger (see the class)."""
        self.send(conn, data, then_close=True)

    def _flush(self, conn: _Conn, now: float) -> None:
        if conn.wbuf:
            try:
                sent = conn.sock.send(conn.wbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:  # the client went away
                log.debug("energymeter daemon: client gone: %r", exc)
                self._close(conn)
                return
            if sent:
                del conn.wbuf[:sent]
                self.pending_bytes -= sent
                conn.stalled_since = now if conn.wbuf else None
            elif conn.stalled_since is None:
                conn.stalled_since = now
            if not conn.wbuf:
                self._pending.discard(conn)
        if not conn.wbuf and conn.closing:
            self._linger(conn, now)
            return
        self._watch(conn)

    def _watch(self, conn: _Conn) -> None:
        """Wait for writability while an answer is pending, else for requests."""
        events = selectors.EVENT_WRITE if conn.wbuf else selectors.EVENT_READ
        if events != conn.events:
            self._sel.modify(conn.sock, events, conn)
            conn.events = events

    def _linger(self, conn: _Conn, now: float) -> None:
        if self.lingering >= self.max_lingering or self._stop:
            self._close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.linger_until = now + self.linger_s
        conn.rbuf.clear()
        self.lingering += 1
        self._lingering.add(conn)
        self._idle.pop(conn, None)
        self.ready.discard(conn)
        self.deferred.discard(conn)
        if conn.events != selectors.EVENT_READ:
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
            conn.events = selectors.EVENT_READ

    def _close(self, conn: _Conn) -> None:
        """Forget ``conn`` and close its socket (never raises)."""
        if conn.closed:
            return
        conn.closed = True
        self.conns.pop(conn.fd, None)
        self.ready.discard(conn)
        self.deferred.discard(conn)
        self._pending.discard(conn)
        self._idle.pop(conn, None)
        if conn in self._lingering:
            self._lingering.discard(conn)
            self.lingering -= 1
        self.pending_bytes -= len(conn.wbuf)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()
        conn.wbuf = bytearray()
        conn.rbuf = bytearray()

    def _fault(self, conn: _Conn | None, what: str) -> None:
        """An exception escaped the handling of ``conn`` (or of the listener, or of the scan):
        log it (the first ten, then every thousandth) and close that connection only."""
        self.faults += 1
        if self.faults <= 10 or self.faults % 1000 == 0:
            log.exception("energymeter daemon: %s failed (%d so far); %s", what, self.faults,
                          "closing that connection" if conn is not None else "going on")
        if conn is not None:
            self._close(conn)

    # -- the loop ----------------------------------------------------------------------------
    def _accept(self, now: float) -> None:
        for _ in range(256):  # then serve the others before accepting more
            try:
                sock, _addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                # Out of descriptors (or an error nobody expected): leave the backlog waiting
                # a moment (clients retry) instead of spinning on a listener that stays
                # readable, or dying.
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("energymeter daemon: cannot accept (%s); %d connections "
                                "open; raise the open-files limit or lower the cap",
                                exc.strerror, len(self.conns))
                else:
                    self._fault(None, f"accept ({exc!r})")
                self._pause_accept(now + 0.1)
                return
            conn = _Conn(sock, now)
            try:
                sock.setblocking(False)
                self.conns[conn.fd] = conn
                self._idle[conn] = None
                self._sel.register(sock, selectors.EVENT_READ, conn)
                conn.events = selectors.EVENT_READ
                if self.connections > self.max_connections:
                    self.refused_over_cap += 1
                    if self.refused_over_cap in (1, 10, 100) or \
                            self.refused_over_cap % 1000 == 0:
                        log.warning("energymeter daemon: refused a connection over the cap of "
                                    "%d (%d refused so far)", self.max_connections,
                                    self.refused_over_cap)
                    self.refuse(conn, self.over_cap())
                    continue
                self.on_accept(conn)
            except Exception:  # noqa: BLE001 - one connection's fault, not the loop's
                self._fault(conn, "accepting a client")

    def _pause_accept(self, until: float) -> None:
        if self._accepting:
            self._sel.unregister(self.socket)
            self._accepting = False
        self._accept_paused_until = until

    def _readable(self, conn: _Conn, now: float) -> None:
        try:
            data = conn.sock.recv(self.recv_bytes)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("energymeter daemon: client gone: %r", exc)
            self._close(conn)
            return
        if not data:  # the client closed, or shut down writing: answer what it asked, close
            if conn.linger_until is None and not conn.closing and b"\n" in conn.rbuf:
                conn.closing = True
                self.on_data(conn)
            if conn.wbuf and not conn.closed:
                conn.closing = True
            else:
                self._close(conn)
            return
        if conn.linger_until is not None:
            return  # draining after a refusal
        conn.last_in = now
        self._idle.pop(conn, None)
        self._idle[conn] = None  # to the end: the order of the last bytes received
        conn.rbuf += data
        self.on_data(conn)

    def _expire(self, now: float) -> None:
        self.scans += 1
        visits = 0
        for conn in list(self._lingering):
            visits += 1
            if conn.linger_until is not None and now >= conn.linger_until:
                self._close(conn)
        for conn in list(self._pending):
            visits += 1
            if conn.stalled_since is not None and \
                    now - conn.stalled_since >= self.send_timeout_s:
                self.dropped_slow += 1
                log.info("energymeter daemon: dropped a client that took no answer for "
                         "%.1f s (%d bytes pending)", now - conn.stalled_since,
                         len(conn.wbuf))
                self._close(conn)
        idle = []
        for conn in self._idle:  # oldest input first: stop at the first one still fresh
            visits += 1
            if now - conn.last_in < self.idle_timeout_s:
                break
            if not conn.wbuf and conn not in self.deferred and conn not in self.ready:
                idle.append(conn)
        for conn in idle:
            self.closed_idle += 1
            self._close(conn)
        self.scan_visits += visits

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown` (``poll_interval``: the longest sleep of the loop).
        A connection's exception closes that connection only (see the class); what escapes
        (a broken selector) ends the loop and is raised."""
        self._stopped.clear()
        self._running.set()
        next_scan = time.monotonic() + self._scan_every_s
        try:
            while not self._stop:
                if self.deferred and not self.over_budget:
                    self.ready |= self.deferred  # the budget has room again
                    self.deferred.clear()
                now = time.monotonic()
                timeout = 0.0 if self.ready else max(0.0, min(poll_interval, next_scan - now))
                for key, mask in self._sel.select(timeout):
                    now = time.monotonic()
                    conn = key.data
                    if conn is None:  # woken up by shutdown()
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(64)
                    elif conn is _LISTENER:
                        try:
                            self._accept(now)
                        except Exception:  # noqa: BLE001 - never the loop
                            self._fault(None, "accept")
                            self._pause_accept(now + 0.1)
                    elif not conn.closed:
                        try:
                            if mask & selectors.EVENT_WRITE:
                                self._flush(conn, now)
                                if not conn.wbuf and conn.rbuf and not conn.closing:
                                    self.ready.add(conn)  # requests sent while it waited
                            elif mask & selectors.EVENT_READ:
                                self._readable(conn, now)
                        except Exception:  # noqa: BLE001 - one connection's fault
                            self._fault(conn, "serving a client")
                for conn in list(self.ready):
                    self.ready.discard(conn)
                    if not conn.closed and not conn.wbuf:
                        try:
                            self.on_data(conn)
                        except Exception:  # noqa: BLE001 - one connection's fault
                            self._fault(conn, "serving a client")
                now = time.monotonic()
                if not self._accepting and now >= self._accept_paused_until:
                    self._sel.register(self.socket, selectors.EVENT_READ, _LISTENER)
                    self._accepting = True
                if now >= next_scan:
                    try:
                        self._expire(now)
                    except Exception:  # noqa: BLE001 - never the loop
                        self._fault(None, "the timeout scan")
                    next_scan = now + self._scan_every_s
        finally:
            self._running.clear()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait for it to return."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listener and every client."""
        if self._closed:
            return
        self._closed = True
        for conn in list(self.conns.values()):
            self._close(conn)
        self._sel.close()
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()


class UnixServer(SelectorServer):
    """The daemon's socket: the JSON-lines protocol, the peer-credential check."""

    def __init__(self, path: Path, daemon: Daemon, access: Access, *,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 send_timeout_s: float = SEND_TIMEOUT_S, backlog: int = BACKLOG,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            listener.listen(backlog)
        except OSError:
            listener.close()
            raise
        super().__init__(listener, max_connections=max_connections,
                         idle_timeout_s=idle_timeout_s, send_timeout_s=send_timeout_s,
                         max_pending_bytes=max_pending_bytes)
        self.server_address = str(path)
        self.daemon = daemon
        self.access = access

    @staticmethod
    def _line(answer: dict[str, Any]) -> bytes:
        return json.dumps(answer, separators=(",", ":")).encode() + b"\n"

    def over_cap(self) -> bytes:
        return self._line({"ok": False, "error": f"the daemon has too many connections (cap "
                                                 f"{self.max_connections}); try again later, "
                                                 "or raise its --max-connections"})

    def on_accept(self, conn: _Conn) -> bool:
        try:
            pid, uid, gid = peer_credentials(conn.sock)
        except OSError as exc:
            log.warning("energymeter daemon: no peer credentials: %r", exc)
            self._close(conn)
            return False
        conn.peer = (pid, uid, gid)
        if not self.access.allows(uid, gid, pid):
            log.info("energymeter daemon: refused pid %s uid %s gid %s", pid, uid, gid)
            self.refuse(conn, self._line({"ok": False, "error": f"uid {uid} may not read this "
                                                                "daemon's counters (not root, "
                                                                "not in its group)"}))
            return False
        return True

    def on_data(self, conn: _Conn) -> None:
        if len(conn.rbuf) > PIPELINED_BYTES:
            self.refuse(conn, self._line({"ok": False, "error": "more than "
                                          f"{PIPELINED_BYTES} bytes of requests sent ahead "
                                          "of their answers; read each answer"}))
            return
        for _ in range(self.batch):
            if conn.wbuf or conn.closed or conn.linger_until is not None:
                return
            end = conn.rbuf.find(b"\n")
            if end < 0:
                if len(conn.rbuf) > self.max_request_bytes:
                    self.refuse(conn, self._line({"ok": False, "error": "request longer than "
                                                  f"{self.max_request_bytes} bytes"}))
                return
            if end + 1 > self.max_request_bytes:
                self.refuse(conn, self._line({"ok": False, "error": "request longer than "
                                              f"{self.max_request_bytes} bytes"}))
                return
            line = bytes(conn.rbuf[:end + 1])
            try:
                request = json.loads(line)
            except ValueError as exc:
                answer = {"ok": False, "error": f"not JSON ({exc}); send one JSON object "
                                                "per line"}
            else:
                if self.over_budget and isinstance(request, dict) and \
                        request.get("op") == "rows":
                    self.defer(conn)  # a large answer: once the others have drained
                    return
                answer = self.daemon.answer(request)
            del conn.rbuf[:end + 1]
            self.send(conn, self._line(answer))
        if b"\n" in conn.rbuf:
            self.ready.add(conn)  # more after the others had their turn


def serve(daemon: Daemon, path: Path = DEFAULT_SOCKET, access: Access | None = None, *,
          max_connections: int = MAX_CONNECTIONS, idle_timeout_s: float = IDLE_TIMEOUT_S,
          send_timeout_s: float = SEND_TIMEOUT_S, backlog: int = BACKLOG,
          max_pending_bytes: int = MAX_PENDING_BYTES) -> UnixServer:
    """Listen on ``path`` (replacing a stale socket; refusing to replace anything else) and
    serve ``daemon`` on one thread; returns the server (``serve_forever``/``shutdown``/
    ``server_close``). Limits: see :class:`SelectorServer` and docs/daemon.md."""
    access = access or Access()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not path.is_socket() or path.is_symlink():
            raise ConfigError(f"{path} exists and is not a socket; give another --socket or "
                              "remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket of a daemon that died
        else:
            raise ConfigError(f"a daemon already listens on {path}; stop it first or give "
                              "another --socket")
        finally:
            probe.close()
    _raise_open_files_limit(max_connections)
    old_umask = os.umask(0o177)  # no window in which the socket is more open than asked
    try:
        server = UnixServer(path, daemon, access, max_connections=max_connections,
                            idle_timeout_s=idle_timeout_s, send_timeout_s=send_timeout_s,
                            backlog=backlog, max_pending_bytes=max_pending_bytes)
    finally:
        os.umask(old_umask)
    if access.gid is not None:
        os.chown(path, -1, access.gid)
    os.chmod(path, access.mode())
    return server


def _raise_open_files_limit(max_connections: int) -> None:
    """Let the process hold ``max_connections`` clients (and a few hundred more descriptors)
    where the hard limit allows; a lower limit is logged (accept then waits for a free one)."""
    import resource

    want = max_connections + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning("energymeter daemon: the open-files limit (%d) is below the connection "
                        "cap %d + 512; raise it (ulimit -n, LimitNOFILE=) or lower "
                        "--max-connections", new, max_connections)
