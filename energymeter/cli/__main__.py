"""``python -m energymeter.cli``: the ``energymeter`` command line."""

from __future__ import annotations

from . import main

main()
