"""Identifiers of the machine and of runs, without the imports that ``socket.gethostname()``
and ``uuid.uuid4()`` carry (``socket`` and ``uuid``, which imports ``platform``: ~10 ms of a
first ``start()`` together)."""

from __future__ import annotations

import os


def hostname() -> str:
    """This machine's host name, as ``socket.gethostname()`` returns it."""
    try:
        return os.uname().nodename
    except AttributeError:  # Windows has no os.uname
        import socket

        return socket.gethostname()


def random_id() -> str:
    """A random (version 4) UUID as 32 lower-case hex digits, as ``uuid.uuid4().hex``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()
