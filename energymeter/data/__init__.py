"""The reference tables energymeter ships (see ``NOTICE.md`` for their sources and licences)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent


def read_text(filename: str) -> str:
    """The text of the shipped table ``filename``. Read straight from the package folder (this
    is what an installed wheel has); through ``importlib.resources`` only where the package is
    not a folder (a zip), as that import costs ~15 ms of a first ``start()``."""
    path = _HERE / filename
    if path.is_file():
        return path.read_text(encoding="utf-8")
    from importlib import resources

    return resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
