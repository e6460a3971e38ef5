"""Bounded run warnings: one entry per kind of warning about one subject, repeats counted.

Warnings often embed values ("channel gpu0 went backwards (12.5 -> 3.1 J)"): deduplicated by
their text, a saw-tooth counter made thousands of distinct ones. A :class:`WarningBook` keys
each warning by what it is about (``("went backwards", "gpu0")``; the text itself when no key
is given), keeps the first text in full and counts the later ones ("... (and 41 more times)"),
and keeps at most ``limit`` distinct entries: past that, warnings are only counted (and logged
by whoever records them), and one line says how many were left out. The sampler, every probe
and the report's final assembly use it, so a report's warnings are bounded whatever happens.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

#: Distinct warnings kept per sampler, per probe and in a report.
MAX_WARNINGS = 50
#: A longer warning text is cut (a probe's message may quote a hostile value).
MAX_WARNING_CHARS = 2000


def _cut(message: str) -> str:
    if len(message) <= MAX_WARNING_CHARS:
        return message
    return message[:MAX_WARNING_CHARS] + f"... ({len(message) - MAX_WARNING_CHARS} chars cut)"


class WarningBook:
    """Warnings of one source (see the module docstring). Not thread-safe: its owner locks."""

    __slots__ = ("_entries", "left_out", "limit")

    def __init__(self, limit: int = MAX_WARNINGS) -> None:
        self.limit = limit
        self._entries: dict[Hashable, list[str | int]] = {}  # key -> [text, repeats]
        self.left_out = 0  # warnings past the limit: counted, not kept

    def add(self, message: str, key: Hashable | None = None) -> bool:
        """Record ``message`` (about ``key``); whether it is a new entry, i.e. worth logging
        (a repeat is only counted; one past the limit is counted in :attr:`left_out`)."""
        entry = self._entries.get(message if key is None else key)
        if entry is not None:
            entry[1] = int(entry[1]) + 1
            return False
        if len(self._entries) >= self.limit:
            self.left_out += 1
            return False
        self._entries[message if key is None else key] = [_cut(message), 0]
        return True

    def put(self, key: Hashable, message: str) -> None:
        """Set the text of the entry ``key`` (a summary kept up to date, e.g. how long a
        channel has been out), counting no repeat."""
        entry = self._entries.get(key)
        if entry is not None:
            entry[0] = _cut(message)
        elif len(self._entries) < self.limit:
            self._entries[key] = [_cut(message), 0]
        else:
            self.left_out += 1

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def messages(self) -> list[str]:
        """The warnings, in the order first seen, repeats stated; then how many were left
        out, if any."""
        out = [str(text) if not repeats else f"{text} (and {repeats} more "
               f"time{'s' if repeats != 1 else ''})" for text, repeats in self._entries.values()]
        if self.left_out:
            out.append(left_out_line(self.left_out, self.limit))
        return out


def left_out_line(count: int, limit: int) -> str:
    return (f"{count} more warning{'s' if count != 1 else ''} not shown (more than {limit} "
            "distinct ones); see the energymeter log")


def bounded(messages: Iterable[str], limit: int = MAX_WARNINGS) -> list[str]:
    """``messages`` without exact duplicates, at most ``limit`` of them plus one line saying
    how many more there were (the final assembly of a report's warnings)."""
    book = WarningBook(limit)
    for message in messages:
        book.add(message)
    # An exact duplicate gathered from two places is one warning, not a repeat.
    out = [str(text) for text, _ in book._entries.values()]
    if book.left_out:
        out.append(left_out_line(book.left_out, limit))
    return out
