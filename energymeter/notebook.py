"""IPython / Jupyter: the ``%%measure`` cell magic (``%load_ext energymeter``).

::

    %load_ext energymeter

    %%measure train --region SE --tag method=sparse
    model.fit(x, y)
    with _energymeter.phase("eval"):
        model.evaluate(x_val, y_val)

The cell runs inside :func:`energymeter.measure` (its running :class:`~energymeter.Meter` is
``_energymeter`` in the notebook, for phases, logs and counts); the cell's output is the
:class:`~energymeter.Report`, which a notebook shows as a table (and ``_`` holds). A cell that
raises is reported ``failed`` (``interrupted`` for a KeyboardInterrupt) and its traceback shown
as usual. IPython is imported only when the extension is loaded.
"""

from __future__ import annotations

from typing import Any

from .session import measure
from .session.experiment import parse_tag

#: The name under which the running meter is available to the cell.
METER_NAME = "_energymeter"


def _magics_class(ipython: Any) -> Any:
    from IPython.core.magic import Magics, cell_magic, magics_class
    from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

    @magics_class
    class EnergyMagics(Magics):  # type: ignore[misc]
        @magic_arguments()
        @argument("name", nargs="?", default="cell", help="the run's name [default: cell]")
        @argument("--region", help="carbon region, e.g. SE-SE3")
        @argument("--pue", type=float, help="power usage effectiveness, 1 to 3")
        @argument("--out", help="folder of run directories")
        @argument("--interval", type=float, dest="interval_s", help="sampling interval (s)")
        @argument("--baseline", type=float, dest="baseline_s",
                  help="seconds of idle measured first")
        @argument("--sync", help="torch, jax or cupy: wait for GPU work at boundaries")
        @argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                  help="tag the run (repeatable)")
        @cell_magic
        def measure(self, line: str, cell: str) -> Any:
            """Measure the cell's energy, power, carbon and memory: ``%%measure [name]
            [--region R] [--pue X] [--out DIR] [--interval S] [--baseline S] [--sync F]
            [--tag K=V]...``; the cell's output is the report."""
            args = parse_argstring(self.measure, line)
            settings = {k: getattr(args, k) for k in ("region", "pue", "out", "interval_s",
                                                       "baseline_s")
                        if getattr(args, k) is not None}
            meter = measure(args.name, sync=args.sync,
                            tags=dict(parse_tag(t) for t in args.tag), **settings)
            self.shell.user_ns[METER_NAME] = meter
            meter.start()
            status = "failed"
            try:
                result = self.shell.run_cell(cell, store_history=False)
                error = result.error_before_exec or result.error_in_exec
                status = ("completed" if error is None else
                          "interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
            finally:
                meter.stop(status)
            return meter.report

    return EnergyMagics


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%%measure`` magic (what ``%load_ext energymeter`` calls)."""
    ipython.register_magics(_magics_class(ipython))
