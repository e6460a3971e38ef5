"""``energymeter sweep --grid AXIS=V1,V2 -- COMMAND``: run a study, variants × repeats
interleaved (:func:`..session.sweep.sweep`), one line per run on stderr."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ..errors import EnergyMeterError
from .common import (
    CARBON_OPTIONS,
    CONTEXT,
    err,
    fail,
    options,
    setting_option,
    setup_logging,
    shown_warnings,
)

if TYPE_CHECKING:
    from ..session.sweep import SweepPlan, SweepRun


def _run_line(run: SweepRun, total: int) -> str:
    warm = " (warm-up)" if run.warmup else ""
    return f"sweep [{run.position}/{total}] {run.variant.label}, repeat {run.repeat}{warm}"


def _result_line(run: SweepRun, total: int) -> str:
    report = run.report
    if report is None:
        return f"{_run_line(run, total)}: failed (exit {run.exit_code}), nothing recorded"
    code = "" if run.exit_code in (0, None) else f" (exit {run.exit_code})"
    return (f"{_run_line(run, total)}: {report.status}{code} in {report.duration_s:.3g} s, "
            f"{report.total_energy_j:.4g} J")


def _plan_lines(plan: SweepPlan, *, dry_run: bool = False) -> list[str]:
    runs = plan.warmup + plan.repeat
    warm = f"{plan.warmup} warm-up + " if plan.warmup else ""
    lines = [f"study {plan.study}: {len(plan.variants)} variant(s) × ({warm}{plan.repeat} "
             f"run(s)) = {len(plan.variants) * runs} runs, {plan.order} order"
             + (f" (seed {plan.seed})" if plan.order == "random" else "")
             + (f"; schedule in {plan.path}" if plan.resumed or not dry_run
                else " (dry run: nothing is written)")]
    if plan.done:
        lines.append(f"{len(plan.done)} of {len(plan.schedule)} run(s) completed earlier: "
                     "skipped")
    if plan.unfinished:
        shown = ", ".join(str(p) for p in plan.unfinished[:5])
        more = f" and {len(plan.unfinished) - 5} more" if len(plan.unfinished) > 5 else ""
        lines.append(f"{len(plan.unfinished)} earlier run(s) of this study did not complete "
                     f"({shown}{more}): `compare` counts them, with their status, unless you "
                     "remove them; their slots run again")
    return lines


@click.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.option("--grid", "grid", multiple=True, required=True, metavar="AXIS=V1,V2",
              help="An axis of the grid and its values (repeatable; the variants are the "
                   "cartesian product). Each run is tagged AXIS=value, and {AXIS} in the "
                   "command is replaced by the value as written.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="N", help="Measured runs of each variant.")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="K", help="Warm-up runs of each variant, first, recorded and left out "
                                "of comparisons.")
@click.option("--cooldown", "cooldown_s", type=click.FloatRange(min=0, max=86400),
              default=0.0, show_default=True, metavar="SECONDS",
              help="Seconds to wait, unmeasured, between runs.")
@click.option("--order", type=click.Choice(["random", "round-robin"]), default="random",
              show_default=True, help="Order within each round of runs (one run of every "
                                      "variant): shuffled with --seed, or grid order.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random order (recorded in the schedule).")
@click.option("--study", default=None, metavar="NAME",
              help="The study's id, tagged study=NAME on every run [default: a new "
                   "sweep-<time>-<hex>]. Give an existing one to resume it: its completed "
                   "runs are skipped.")
@click.option("--stop-on-failure", is_flag=True,
              help="Stop at the first run that fails [default: run the rest].")
@click.option("--dry-run", is_flag=True,
              help="Print the schedule (and which runs are done) and exit; nothing runs.")
@click.option("--name", default=None, help="Run name [default: the program's name].")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="One more tag on every run (repeatable).")
@click.option("--items", type=click.FloatRange(min=0), default=None, metavar="N",
              help="Items each run processes (samples, tokens): the reports give J per item.")
@options(setting_option("out"), setting_option("interval_s"), setting_option("baseline_s"),
         *CARBON_OPTIONS, setting_option("daemon"), setting_option("wait_orphans"))
@click.option("--quiet", "-q", is_flag=True, help="Print nothing of ours; errors still go "
                                                  "to stderr.")
@click.option("--shell", is_flag=True,
              help="Run the command through `sh -c`, its words joined by spaces.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def sweep(command: tuple[str, ...], grid: tuple[str, ...], repeat: int, warmup: int,
          cooldown_s: float, order: str, seed: int, study: str | None,
          stop_on_failure: bool, dry_run: bool, name: str | None, tags: tuple[str, ...],
          items: float | None, quiet: bool, shell: bool, **settings: Any) -> None:
    """Run a study: COMMAND for every variant of a grid, each WARMUP + REPEAT times,
    interleaved, each run measured as `energymeter run` measures it.

    Round k runs the k-th repeat of every variant, in a random order seeded by --seed (or
    grid order with --order round-robin): every variant sees the same drift. Every run is
    tagged study=ID, its AXIS=value tags, variant=I, repeat=J and sweep_axes, and each
    variant is one repeat group, so `energymeter compare OUT` (--by auto) gives one column
    per variant. The schedule is written to OUT/sweeps/ID.json; run the same command with
    --study ID again to resume: runs that completed are skipped, the others run again.

    The command's output passes through. A failed run does not stop the sweep unless
    --stop-on-failure; Ctrl-C (or SIGTERM, SIGHUP, SIGQUIT) during a run ends it. Exit code:
    0 when every run completed, else the first failed run's exit code; 2 for bad options or
    a study whose grid, order, seed, repeats or command changed; 126/127 when a variant's
    command cannot be executed / is not found.

    \b
    Examples:
      energymeter sweep --grid method=dense,sparse --repeat 5 --warmup 1 -- \\
          python train.py --method {method}
      energymeter sweep --grid method=dense,sparse --grid lr=1e-3,3e-4 --repeat 3 \\
          --study lr-study --cooldown 10 -- python train.py --method {method} --lr {lr}
      energymeter sweep --study lr-study ...        # the same options again: resume
      energymeter compare energymeter-runs/
    """
    from ..session.command import RunError
    from ..session.experiment import parse_tag
    from ..session.sweep import check_commands, parse_grid, plan
    from ..session.sweep import sweep as run_sweep

    setup_logging(quiet)

    def say(line: str) -> None:
        if not quiet:
            err(line)

    try:
        parsed = parse_grid(grid)
        run_tags = dict(parse_tag(t) for t in tags)
        study_plan = plan(list(command), parsed, repeat, warmup=warmup, order=order,
                          seed=seed, study=study, shell=shell, out=settings.get("out"),
                          write=False)
        if dry_run:
            _print_schedule(study_plan)
            return
        check_commands(list(command), parsed, shell=shell)  # its warnings: sweep() logs them
    except RunError as exc:  # a variant's program is not found / not executable
        err(str(exc))
        sys.exit(exc.exit_code)
    except EnergyMeterError as exc:
        fail(str(exc))
    total = len(study_plan.schedule)
    for line in _plan_lines(study_plan):
        say(line)
    say(f"resume with --study {study_plan.study} (the same options)")

    def started(run: SweepRun) -> None:
        say(_run_line(run, total))

    def ended(run: SweepRun) -> None:
        say(_result_line(run, total))
        shown_warnings().clear()  # said for this run

    try:
        result = run_sweep(list(command), parsed, repeat, warmup=warmup, cooldown_s=cooldown_s,
                           order=order, seed=seed, study=study_plan.study,
                           stop_on_failure=stop_on_failure, name=name, tags=run_tags,
                           shell=shell, items=items, on_start=started, on_run=ended,
                           **settings)
    except RunError as exc:  # a variant's program is not found / not executable
        err(str(exc))
        sys.exit(exc.exit_code)
    except EnergyMeterError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # between runs: what completed is kept
        err(f"interrupted; resume with --study {study_plan.study}")
        sys.exit(130)
    failed = result.failures
    ran = [r for r in result.runs if not r.skipped]
    summary = (f"study {result.study}: {sum(r.ok for r in result.runs)} of "
               f"{len(result.plan.schedule)} run(s) completed ({len(ran)} of them by this "
               "sweep, the others earlier)" if len(ran) < len(result.plan.schedule) else
               f"study {result.study}: {sum(r.ok for r in result.runs)} of "
               f"{len(result.plan.schedule)} run(s) completed")
    if failed:
        first_bad = failed[0]
        summary += (f"; {len(failed)} did not complete, the first: {first_bad.variant.label}, "
                    f"repeat {first_bad.repeat} ({first_bad.status}, exit "
                    f"{first_bad.exit_code}); run the same command again to rerun them")
    elif result.stopped:
        summary += "; stopped before the end: run the same command again to go on"
    say(summary)
    if result.completed or ran:
        say(f"compare the variants with `energymeter compare {result.plan.out}` (one column "
            "per variant when the folder holds this study alone; else --by tag:AXIS)")
    sys.exit(result.exit_code)


def _print_schedule(plan: SweepPlan) -> None:
    """``--dry-run``: the plan on stderr, the schedule on stdout (one run a line)."""
    for line in _plan_lines(plan, dry_run=True):
        err(line)
    click.echo("position\tvariant\trepeat\twarmup\tdone\ttags")
    for position, slot in enumerate(plan.schedule, start=1):
        variant = plan.variant(slot.variant)
        done = (slot.variant, slot.repeat) in plan.done
        click.echo(f"{position}\t{slot.variant}\t{slot.repeat}\t{str(slot.warmup).lower()}\t"
                   f"{str(done).lower()}\t{variant.label}")
