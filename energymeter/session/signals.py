"""Signals of a process that waits for a measured child: forwarded exactly as a shell user
expects, and never the death of the measuring process.

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

"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

#: Signals that end a measured command: forwarded, and the run is marked ``interrupted``.
INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
#: Signals only forwarded (checkpoint requests from batch schedulers).
FORWARDED_ONLY = (signal.SIGUSR1, signal.SIGUSR2)

#: ``siginfo.si_code`` values (Linux ``<asm-generic/siginfo.h>``); the signal module lacks them.
SI_USER = 0
SI_KERNEL = 0x80


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

    def wait(self, timeout_s: float) -> tuple[int, int | None] | None:
        """The next signal as ``(signum, si_code)`` (``si_code`` None when caught by the
        handler), SIGCHLD included, or None after ``timeout_s``."""
        if self.caught:
            return self.caught.pop(0), None
        if not self.active:
            time.sleep(timeout_s)
            return None
        info = signal.sigtimedwait(self._waited, max(timeout_s, 0.0))
        if info is None:
            return None
        return info.si_signo, info.si_code

    def drain(self) -> list[int]:
        """Take every pending signal now (without waiting)."""
        taken = list(self.caught)
        self.caught.clear()
        if self.active:
            while (info := signal.sigtimedwait(self._waited, 0)) is not None:
                if info.si_signo != signal.SIGCHLD:
                    taken.append(info.si_signo)
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
