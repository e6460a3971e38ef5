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
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from .._lazy import LazyLogger

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
        if got.code == SI_USER and sender_name(got.sender_pid) in SIGNALS_EVERY_PROCESS:
            return False
        last = self._last.get((got.signum, got.sender_pid))
        repeated = last is not None and self._clock() - last < DUPLICATE_WINDOW_S
        return got.sender_pid is None or not repeated

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
