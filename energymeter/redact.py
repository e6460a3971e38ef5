"""Hiding secrets in a command before it is recorded (``report.json``, ``events.jsonl``,
``runs.csv``). Only what is recorded is changed: the command itself runs with its real
arguments.

The ``redact`` setting chooses what is hidden (docs/privacy.md lists the patterns):

* ``default``: the built-in patterns below;
* ``none``: the command is recorded verbatim;
* anything else: extra regular expressions separated by spaces, applied after the built-in
  ones. A pattern with groups hides what its groups matched, one without hides its whole match.

Built-in patterns (case-insensitive; a "secret word" is ``token`` (not ``tokens``,
``tokenizer``), ``password``, ``passwd``, ``passphrase``, ``secret``, ``key``, ``auth`` (not
``author``), ``credential``, ``cookie`` or ``pwd`` after ``_``/``-``):

* the value of an option whose name holds a secret word: ``--token VALUE`` (the next word,
  unless it starts with ``-``) and ``--api-key=VALUE``;
* ``NAME=VALUE`` where NAME holds a secret word (``API_KEY=…``, ``HF_TOKEN=…``,
  ``db.password=…``, ``?api_key=…&`` in a URL);
* HTTP headers: ``Authorization: Bearer VALUE`` (the scheme is kept), and ``NAME: VALUE``
  where NAME holds a secret word (``X-Api-Key: …``, ``Cookie: …``);
* the password of a URL: ``https://user:PASSWORD@host``, and of ``-u``/``--user``/
  ``--proxy-user``/``-U user:PASSWORD`` (curl, wget).

A word that starts with a secret (``--password=two words``) is hidden to its end; in the
script after ``-c`` (``sh -c "…"``, ``energymeter run --shell``) and inside other words a value
ends at a space or quote (``&`` and ``;`` too after ``NAME=``).
Imports nothing of energymeter but its errors (it sits beside ``settings``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from .errors import ConfigError

#: What a hidden value is replaced with.
REDACTED = "***"
#: The values of the ``redact`` setting that are not patterns.
DEFAULT = "default"
NONE = "none"

_SECRET = (r"(?:token(?!iz|s)|passw(?:or)?d|passphrase|secret|key|auth(?!or)|credential"
           r"|cookie|(?<=[_-])pwd(?![a-z]))")
_OPTION = rf"-{{1,2}}[\w.-]*{_SECRET}[\w.-]*"
_VALUE = r"""(?:'[^']*'|"[^"]*"|[^\s'"]+)"""

# (text before the secret, the secret inside a longer text); each also hides the rest of a word
# that it matches from its first character (see _whole_word).
_RULES: tuple[tuple[str, str], ...] = (
    # Authorization: Bearer xyz -> the scheme is kept
    (r"(?<![\w-])(?:proxy-)?authorization\s*:\s*(?:[a-z][\w-]*\s+(?=[^\s'\"]))?",
     r"""[^'"\n]+"""),
    # X-Api-Key: xyz, Cookie: a=b (not in a URL: https://x-access-token:xyz@host)
    (rf"(?<![\w/:@.-])(?!(?:proxy-)?authorization\s*:)[\w-]*{_SECRET}[\w-]*\s*:\s*"
     r"(?=[^\s'\"/])",
     r"""[^'"\n]+"""),
    # --token xyz (inside one word: sh -c "... --token xyz")
    (rf"(?<![\w-]){_OPTION}\s+(?=[^\s-])", _VALUE),
    # --token=xyz
    (rf"(?<![\w-]){_OPTION}=", _VALUE),
    # API_KEY=xyz, ?api_key=xyz&
    (rf"(?<![\w.-])(?=[a-z_])[\w.]*{_SECRET}[\w.]*=(?!=)", r"""(?:'[^']*'|"[^"]*"|[^\s'"&;]+)"""),
    # https://user:password@host
    (r"""(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^\s/@:'"]*:""", r"""[^\s/@'"]+(?=@)"""),
)


#: Every built-in rule needs one of these in the text (each secret word's fixed stem, or a
#: URL's scheme separator): a word without any cannot match, and is not run through the
#: regular expressions (which ``energymeter run -- python train.py`` would compile for nothing).
_STEMS = ("token", "passw", "passphrase", "secret", "key", "auth", "credential", "cookie",
          "pwd", "://")


def _may_hold_secret(text: str) -> bool:
    if not text.isascii():  # IGNORECASE equates letters no case mapping does (ı, İ, ſ, K)
        return True
    lowered = text.lower()
    return any(stem in lowered for stem in _STEMS)


@functools.cache
def _compiled() -> tuple[tuple[re.Pattern[str], ...], tuple[re.Pattern[str], ...],
                         re.Pattern[str]]:
    """The rules compiled, once, on first use (not at import: ``measure()`` without a command
    never needs them, and compiling them costs milliseconds)."""
    text = tuple(re.compile(f"({before})({secret})", re.IGNORECASE)
                 for before, secret in _RULES)
    whole = tuple(re.compile(f"({before})(.+)", re.IGNORECASE | re.DOTALL)
                  for before, _ in _RULES[:2] + _RULES[3:5])
    return text, whole, re.compile(_OPTION, re.IGNORECASE)

#: Options whose value is ``user:password`` (curl, wget): the part after the first ``:`` is hidden.
_USER_OPTIONS = frozenset({"-u", "--user", "--proxy-user", "-U"})


@functools.lru_cache(maxsize=16)
def _extra(setting: str) -> tuple[re.Pattern[str], ...]:
    patterns = []
    for text in setting.split():
        try:
            patterns.append(re.compile(text))
        except re.error as exc:
            raise ConfigError(
                f"redact: {text!r} is not a valid regular expression ({exc}); accepted: "
                f"{DEFAULT}, {NONE}, or regular expressions separated by spaces") from None
    return tuple(patterns)


def _hide_spans(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` with what ``pattern``'s groups matched (its whole match if it has none)
    replaced by :data:`REDACTED`."""
    spans: list[tuple[int, int]] = []
    for m in pattern.finditer(text):
        groups = range(1, (pattern.groups or 0) + 1) if pattern.groups else (0,)
        spans += [m.span(g) for g in groups if m.start(g) >= 0 and m.end(g) > m.start(g)]
    out, pos = [], 0
    for start, end in sorted(spans):
        if start < pos:  # nested or overlapping groups: the outer one is hidden already
            start = pos
        if end <= start:
            continue
        out += [text[pos:start], REDACTED]
        pos = end
    return "".join(out) + text[pos:]


def _whole_word(word: str) -> str | None:
    for pattern in _compiled()[1]:
        m = pattern.fullmatch(word)
        if m:
            return m.group(1) + REDACTED
    return None


def _patterns(setting: str | None) -> tuple[re.Pattern[str], ...] | None:
    """None for ``none``, else the extra patterns of ``setting`` (empty for ``default``)."""
    setting = (setting or DEFAULT).strip()
    if setting.lower() == NONE:
        return None
    return () if setting.lower() == DEFAULT else _extra(setting)


def _redact_word(text: str, extra: tuple[re.Pattern[str], ...], *, script: bool = False) -> str:
    if _may_hold_secret(text):
        whole = None if script else _whole_word(text)
        if whole is not None:
            text = whole
        else:
            for pattern in _compiled()[0]:
                text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    for pattern in extra:
        text = _hide_spans(text, pattern)
    return text


def redact_text(text: str, setting: str | None = DEFAULT) -> str:
    """``text`` (a shell command line, a script, any text) with its secrets
    replaced by :data:`REDACTED` as ``setting`` says (see the module's documentation)."""
    extra = _patterns(setting)
    return text if extra is None else _redact_word(text, extra, script=True)


def redact_command(argv: Sequence[str], setting: str | None = DEFAULT) -> tuple[str, ...]:
    """``argv`` as it may be recorded: the word after an option named like a secret
    (``--token VALUE``) becomes :data:`REDACTED` unless it starts with ``-``, and every word
    goes through :func:`redact_text`. ``setting`` is the ``redact`` setting (``default``,
    ``none`` or extra patterns); an invalid pattern raises
    :class:`~energymeter.errors.ConfigError`."""
    words = [str(w) for w in argv]
    extra = _patterns(setting)
    if extra is None:
        return tuple(words)
    hidden: list[str] = []
    previous = ""
    for word in words:
        if (_may_hold_secret(previous) and _compiled()[2].fullmatch(previous)
                and not word.startswith("-")):
            hidden.append(REDACTED)
        elif previous in _USER_OPTIONS and ":" in word:
            hidden.append(word.split(":", 1)[0] + ":" + REDACTED)
        else:  # the word after -c is a script (sh -c, python -c): secrets inside it only
            hidden.append(_redact_word(word, extra, script=previous == "-c"))
        previous = word
    return tuple(hidden)
