"""Signals of a process that waits for a measured child: forwarded exactly once, as a shell
user expects, and never the death of the measuring process.

``SIGINT``, ``SIGTERM``, ``SIGHUP`` and ``SIGQUIT`` sent to this process are forwarded to the
child and mark the run ``interrupted``; ``SIGUSR1`` and ``SIGUSR2`` are forwarded and change
nothing else (batch schedulers use them to ask for a checkpoint). This process never dies of
them: it waits for the child, then writes the report.

They are blocked in this process with :func:`signal.pthread_sigmask` *before* the meter starts
its threads (which inherit the mask) and taken with :func:`signal.sigtimedwait`, whose
``si_code`` tells a ``kill()`` (``SI_USER``) from a signal the kernel generated for the
terminal (``SI_KERNEL``: Ctrl-C, Ctrl-\\, hang-up). The child is in our process group, so the
terminal already delivered the latter to it: it is not sent a second time. The signals are
unblocked in the main thread only while the child is spawned, so that it starts with an
unblocked mask; one arriving in that window is caught by a Python handler and forwarded (its
origin cannot be told there). A signal this process inherited as ignored (``nohup``, ``&`` in a
non-interactive shell) stays ignored, and the child inherits that.

Exactly once. Signals sent to a whole process group or to every process of a job would reach
the child directly *and* through us. So:

* When this process has no controlling terminal (batch jobs, SLURM, CI, cron, containers
  without a tty), the child runs in a process group of its own (:func:`isolate_child`): group
  kills aimed at ours (``kill -- -PGID``, GNU ``timeout``, which signals its whole group) reach
  only us, and we forward every signal to the child's group. The group is led by a watchdog
  (:func:`watchdog`) that kills it if we die first (a SIGKILL of our group cannot be passed
  on). With a
  controlling terminal the child stays in our group, as the shell made it: the terminal's
  job control (Ctrl-C, Ctrl-Z, ``fg``) works as without energymeter, and the terminal's own
  signals are not forwarded (they reached the child already).
* A signal whose sender's command name is in :data:`SIGNALS_EVERY_PROCESS` (``slurmstepd``:
  ``scancel`` and preemption signal every process of the step) is not forwarded.
* The same signal from the same sender within :data:`DUPLICATE_WINDOW_S` of a forward is not
  forwarded again (``timeout`` signals us directly and then through its group).

Stopped and continued. A process stopped (SIGSTOP, Ctrl-Z) and continued sees its wait
interrupted; Python's ``sigtimedwait`` then returns an uninitialised ``siginfo`` when the timeout
has passed meanwhile. :meth:`SignalGate.wait` accepts only signals it waits for.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from .._lazy import LazyLogger
from ..probes.proc import child_pids, read_pid_stat

#: Signals that end a measured command: forwarded, and the run is marked ``interrupted``.
INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
#: Signals only forwarded (checkpoint requests from batch schedulers).
FORWARDED_ONLY = (signal.SIGUSR1, signal.SIGUSR2)

#: ``siginfo.si_code`` values (Linux ``<asm-generic/siginfo.h>``); the signal module lacks them.
SI_USER = 0
SI_KERNEL = 0x80

log = LazyLogger("energymeter")

#: Senders (by command name) that signal every process of a job themselves.
SIGNALS_EVERY_PROCESS = frozenset({"slurmstepd"})
#: A repeat of a forwarded signal from the same sender within this many seconds is dropped.
DUPLICATE_WINDOW_S = 0.2


class Received(NamedTuple):
    """A signal taken by :meth:`SignalGate.wait`: its number, ``si_code`` and the sender's pid
    (both None when it was caught by the Python handler, whose origin is unknown)."""

    signum: int
    code: int | None = None
    sender_pid: int | None = None


# -- signals -----------------------------------------------------------------------------------
class SignalGate:
    """Blocks ``signals`` (and SIGCHLD) in this thread and those it starts, and hands them out
    through :meth:`wait`. A no-op outside the main thread."""

    def __init__(self, signals: Sequence[int]) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.signals = tuple(s for s in signals if signal.getsignal(s) != signal.SIG_IGN) \
            if self.active else ()
        self._waited = (*self.signals, signal.SIGCHLD)
        # Signals caught by the Python handler (arrived while unblocked): origin unknown.
        self.caught: list[int] = []
        self._old_handlers: dict[int, Any] = {}
        self._old_mask: set[int] | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.caught.append(signum)

    def __enter__(self) -> SignalGate:
        if self.active:
            for sig in self.signals:
                self._old_handlers[sig] = signal.signal(sig, self._handler)
            self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self._waited)
        return self

    @contextlib.contextmanager
    def unblocked(self) -> Iterator[None]:
        """Unblock in this thread for the block (so that a child spawned in it starts with an
        unblocked mask); a signal arriving meanwhile goes to :attr:`caught`."""
        if not self.active:
            yield
            return
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self._waited)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, self._waited)

    def _take(self, timeout_s: float) -> Received | None:
        info = signal.sigtimedwait(self._waited, max(timeout_s, 0.0))
        # Interrupted by a stop/continue after its timeout, Python hands back an uninitialised
        # siginfo: anything but a signal we wait for means nothing was taken.
        if info is None or info.si_signo not in self._waited:
            return None
        return Received(info.si_signo, info.si_code, info.si_pid)

    def wait(self, timeout_s: float) -> Received | None:
        """The next signal (SIGCHLD included), or None after ``timeout_s``."""
        if self.caught:
            return Received(self.caught.pop(0))
        if not self.active:
            time.sleep(timeout_s)
            return None
        return self._take(timeout_s)

    def drain(self) -> list[int]:
        """Take every pending signal now (without waiting)."""
        taken = list(self.caught)
        self.caught.clear()
        if self.active:
            while (got := self._take(0)) is not None:
                if got.signum != signal.SIGCHLD:
                    taken.append(got.signum)
        return taken

    def __exit__(self, *exc: Any) -> None:
        if not self.active:
            return
        self.drain()
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        if self._old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)


def exit_code_of(returncode: int) -> int:
    """A shell's exit code for a :class:`subprocess.Popen` return code (``-N`` → ``128+N``)."""
    return 128 - returncode if returncode < 0 else returncode


def has_controlling_terminal() -> bool:
    """Whether this process has a controlling terminal (an interactive session, a job of an
    interactive shell, a command under ``timeout`` typed at a prompt)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:  # ENXIO: none (batch jobs, CI, cron, daemons)
        return False
    os.close(fd)
    return True


_WATCHDOG = ("trap '' INT TERM HUP QUIT USR1 USR2; read line; "
             "[ \"$line\" = done ] || kill -9 -$$")


def watchdog() -> subprocess.Popen[bytes] | None:
    """A tiny ``sh`` leading a new process group for the command to join. It waits on a pipe
    from this process: if this process dies (the pipe closes without a word), it SIGKILLs that
    whole group, so that a SIGKILL of our group, which cannot be passed on, still ends the
    command and its workers. It ignores the signals forwarded to the group. Started before the
    command, it guards it from its first instruction; end it with :func:`end_watchdog`. None
    where ``sh`` cannot be run."""
    try:
        return subprocess.Popen(["/bin/sh", "-c", _WATCHDOG], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                **join_group(None))
    except OSError as exc:  # no /bin/sh: the command gets a group of its own, unguarded
        log.debug("no watchdog for the command's group: %r", exc)
        return None


def join_group(pgid: int | None) -> dict[str, Any]:
    """``Popen`` keyword arguments that start the child in process group ``pgid`` (a
    :func:`watchdog`'s), or in a new group of its own when ``pgid`` is None."""
    if sys.version_info >= (3, 11):
        return {"process_group": pgid or 0}
    return {"preexec_fn": lambda: os.setpgid(0, pgid or 0)}  # pragma: no cover - Python 3.10


def end_watchdog(process: subprocess.Popen[bytes] | None) -> None:
    """Stand a :func:`watchdog` down (the command has ended: its group is left alone) and
    reap it."""
    if process is None:
        return
    try:
        process.communicate(b"done\n", timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:  # gone, or stuck: make sure it ends
        log.debug("watchdog did not stand down: %r", exc)
        process.kill()
        process.wait()


def sender_name(pid: int | None) -> str | None:
    """The command name (``comm``) of the process ``pid``, if it can still be read."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


class Forwarder:
    """Passes signals on to a child exactly once (see the module docstring).

    ``group``: the process group the child runs in when it is not ours (None when it shares
    ours): nothing aimed at ours reached it, so every signal is forwarded, to that group."""

    def __init__(self, pid: int, group: int | None,
                 clock: Any = time.monotonic) -> None:
        self.pid = pid
        self.group = group
        self.isolated = group is not None
        self._clock = clock
        self._last: dict[tuple[int, int | None], float] = {}

    def should_forward(self, got: Received) -> bool:
        if not self.isolated and got.code == SI_KERNEL:
            return False  # the terminal delivered it to our whole group, the child included
        return self._passes(got)

    def _passes(self, got: Received) -> bool:
        """The sender's rules: not from a sender that signals every process, not a repeat."""
        if got.code == SI_USER and sender_name(got.sender_pid) in SIGNALS_EVERY_PROCESS:
            return False
        return not self.is_repeat(got)

    def is_repeat(self, got: Received) -> bool:
        """Whether ``got`` repeats a signal forwarded within :data:`DUPLICATE_WINDOW_S` from
        the same sender (one sent to us and to our group: one signal, not two)."""
        last = self._last.get((got.signum, got.sender_pid))
        repeated = last is not None and self._clock() - last < DUPLICATE_WINDOW_S
        return got.sender_pid is not None and repeated

    def forward(self, got: Received) -> bool:
        """Send ``got`` on if it should be; whether it was sent."""
        if not self.should_forward(got):
            return False
        try:
            if self.group is not None:
                os.killpg(self.group, got.signum)
            else:
                os.kill(self.pid, got.signum)
        except ProcessLookupError:  # the child (or its whole group) is gone
            return False
        self._last[(got.signum, got.sender_pid)] = self._clock()
        return True

    def forward_left_behind(self, got: Received, pids: Iterable[int]) -> bool:
        """After the child exited (``wait_orphans``): send ``got`` on to the processes it left
        running (``pids``, this process's adopted children), each once: the child's group
        (which the watchdog still holds) as a whole, and every other of ``pids`` by itself
        but those in our group when the terminal signalled that group (``SI_KERNEL``).
        Never the child's own pid, which may name another process by now. Whether it was
        sent to any."""
        if not self._passes(got):
            return False
        sent = False
        if self.group is not None:
            with contextlib.suppress(ProcessLookupError):  # the group has no process left
                os.killpg(self.group, got.signum)
                sent = True
        ours = os.getpgrp()
        for pid in pids:
            try:
                pgid = os.getpgid(pid)
                if pgid == self.group or (not self.isolated and got.code == SI_KERNEL
                                          and pgid == ours):
                    continue  # the signal reached it already
                os.kill(pid, got.signum)
                sent = True
            except ProcessLookupError:  # ended (and reaped) meanwhile
                continue
        if sent:
            self._last[(got.signum, got.sender_pid)] = self._clock()
        return sent


# -- processes the command leaves running ------------------------------------------------------
#: ``prctl`` options (Linux ``<linux/prctl.h>``, since 3.4).
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
#: How many left-behind processes a warning names (the rest are counted).
NAMED_AT_MOST = 5
#: The longest command line shown for one of them.
SHOWN_CHARS = 60


@functools.lru_cache(maxsize=1)
def _prctl() -> Any:
    """libc's ``prctl``, or None (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only here: importing energymeter stays cheap

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError) as exc:
        log.debug("no prctl: %r", exc)
        return None


def child_subreaper(on: bool | None = None) -> bool | None:
    """Whether this process is a child subreaper (``PR_SET_CHILD_SUBREAPER``: orphans among
    its descendants are reparented to it, not to init), after making it one (``on`` True) or
    not (False); None where that cannot be read or set (not Linux, a kernel before 3.4, a
    seccomp filter)."""
    import ctypes

    prctl = _prctl()
    if prctl is None:
        return None
    if on is not None and prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(int(on)), 0, 0, 0) != 0:
        log.debug("PR_SET_CHILD_SUBREAPER failed: %s", os.strerror(ctypes.get_errno()))
        return None
    state = ctypes.c_int(0)
    if prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(state), 0, 0, 0) != 0:
        return None
    return bool(state.value)


def _reap_later(pids: Sequence[int]) -> None:
    """Reap ``pids`` (adopted children still running when their run ended) as they end, on a
    daemon thread, so that none stays a zombie of a program that goes on after the run."""
    def reap() -> None:
        for pid in pids:
            with contextlib.suppress(ChildProcessError):  # reaped elsewhere
                os.waitpid(pid, 0)

    threading.Thread(target=reap, name="energymeter-reaper", daemon=True).start()


class Adoption:
    """Finds the processes a command leaves running when it exits (``(work &); exit``,
    daemons that fork twice and ``setsid``), which would go on unmeasured and unnoticed.

    While it is open this process is a child subreaper (Linux): the orphans among its
    descendants become its children, wherever they moved (another session or group).
    Those that end are reaped (:meth:`reap`, :meth:`left_behind`); those still running when
    it closes are reaped on a daemon thread as they end. Where this process cannot be a
    subreaper only the command's process group (``group``, when it has one of its own) is
    looked at, through ``/proc``. ``exclude`` names this process's own helpers and the
    command itself (reaped by its ``Popen``); children this process had before are never
    touched.

    A new child is the command's only if its environment carries ``marker`` (the run's
    ``ENERGYMETER_RUN_ID=...``, which the command and everything it starts inherit): other
    threads of a program calling :func:`~.command.run_command` may start children of their
    own meanwhile, which are never counted, signalled or waited for (their exit status is
    their ``Popen``'s). One whose environment cannot be read (a zombie: the middle process
    of a daemon's double fork) is the command's when its session or group is that of one of
    the command's (other than this process's own). Known limits: a process that replaced its
    whole environment, or one that ended unseen in this process's own session and group (a
    zombie until this process exits).
    ``enabled`` False (off the main thread, where nothing else of the command is managed
    either): nothing is done."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.active = False  # this process was made a subreaper
        self.group: int | None = None
        #: ``NAME=value`` (bytes) in the environment of every process of the command.
        self.marker: bytes | None = None
        self._ours: set[int] = set()  # children seen carrying the marker
        self._excluded: set[int] = set()
        self._before: set[int] = set()
        self._was_subreaper = False

    def __enter__(self) -> Adoption:
        if not self.enabled:
            return self
        was = child_subreaper()
        if was is not None and child_subreaper(True):
            self.active, self._was_subreaper = True, was
            self._before = set(child_pids(os.getpid()))
        return self

    def exclude(self, pid: int) -> None:
        """Never count, reap or signal ``pid`` (a helper of ours, the command)."""
        self._excluded.add(pid)

    def _adopted(self) -> list[int]:
        if self.marker is None:  # no command yet
            return []
        unknown = []
        for pid in child_pids(os.getpid()):
            if pid in self._before or pid in self._excluded or pid in self._ours:
                continue
            if _carries(pid, self.marker):
                self._ours.add(pid)
            else:
                unknown.append(pid)
        if unknown:  # e.g. a zombie (its environment reads empty): by its session or group
            kin = {self.group} | {i for p in self._ours for i in _session_and_group(p)}
            kin -= {os.getsid(0), os.getpgrp(), None}  # ours: other threads' children too
            self._ours.update(p for p in unknown if kin & set(_session_and_group(p)))
        return [pid for pid in child_pids(os.getpid()) if pid in self._ours]

    def reap(self) -> None:
        """Reap the adopted children that have ended (their parents did not wait for them)."""
        if self.active:
            self.left_behind()

    def left_behind(self) -> list[int]:
        """The pids of the processes the command left running, the ended ones reaped."""
        if self.active:
            alive = []
            for pid in self._adopted():
                try:
                    ended, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not (or no longer) ours to wait for
                    self._ours.discard(pid)
                    continue
                if ended:
                    self._ours.discard(pid)  # its pid may be reused
                else:
                    alive.append(pid)
            return alive
        if self.enabled and self.group is not None:
            return _group_members(self.group, self._excluded)
        return []

    def __exit__(self, *exc: Any) -> None:
        if not self.active:
            return
        if not self._was_subreaper:
            child_subreaper(False)
        left = self.left_behind()  # those adopted until now, the ended ones reaped
        self.active = False
        if left:
            _reap_later(left)


def _carries(pid: int, marker: bytes) -> bool:
    """Whether the environment of process ``pid`` holds ``marker`` (``NAME=value``); False
    where it cannot be read (ended, another user's, not Linux)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def _session_and_group(pid: int) -> tuple[int, ...]:
    """The session and process group of ``pid`` (empty when it is gone)."""
    try:
        return os.getsid(pid), os.getpgid(pid)
    except OSError:
        return ()


def _group_members(group: int, excluded: Collection[int]) -> list[int]:
    """The live processes of process group ``group`` but ``excluded`` (from ``/proc``)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: nothing can be found
        return members
    for entry in entries:
        if not entry.isdigit() or int(entry) in excluded:
            continue
        pid = int(entry)
        try:
            if os.getpgid(pid) != group:
                continue
            stat = read_pid_stat(pid)
        except (OSError, ValueError, IndexError):  # ended, or unreadable
            continue
        if stat is not None and not stat.zombie:
            members.append(pid)
    return members


def describe_processes(pids: Sequence[int], redact: str | None = None) -> str:
    """``pid 123: sleep 6, pid 124: python worker.py`` for at most :data:`NAMED_AT_MOST` of
    ``pids`` (``and N more``): each command line shortened and with its secrets hidden as the
    ``redact`` setting says (the process name where the command line cannot be read)."""
    from ..redact import redact_command

    shown = []
    for pid in pids[:NAMED_AT_MOST]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                words = [w.decode("utf-8", "replace") for w in fh.read().split(b"\0") if w]
        except OSError:  # ended, or not Linux
            words = []
        text = " ".join(redact_command(words, redact)) if words else \
            (sender_name(pid) or "?")
        if len(text) > SHOWN_CHARS:
            text = text[:SHOWN_CHARS - 3] + "..."
        shown.append(f"pid {pid}: {text}")
    more = len(pids) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
