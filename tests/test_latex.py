"""Paper tables (issues 12 and 26): the LaTeX and Markdown of `report` and `compare`.

Every LaTeX output is checked for its structure (balanced environments, booktabs rules in
order, no vertical rules, the same number of cells on every row as the column spec has,
balanced braces and math, data escaped) and, where `pdflatex` with booktabs is installed,
compiled in a two-column `article` whose log must hold no overfull box (every table fits
its column, or with ``width="page"`` the text width). Markdown tables: the same cells on
every row, text left and numbers right, data escaped. Numbers with a confidence interval:
the half-width to two significant digits, the mean to the same place (hypothesis).
Every float fits the page's height too: the compiled log holds no "Float too large" and no
error; a table too tall for one float is set shorter, then split among continued floats
(labels ``LABEL``, ``LABEL-2``..., the header in each), no row left out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energymeter.analysis import compare, format_comparison, format_targets, target_results
from energymeter.analysis.render import _paper_table
from energymeter.errors import ReportError
from energymeter.probes.base import Channel
from energymeter.report import ChannelEnergy, Phase, Report
from energymeter.report.render import format_reports
from energymeter.report.tables import (
    HEIGHT_PT,
    WIDTH_PT,
    WIDTHS,
    caption_height_pt,
    check_label,
    ci_decimals,
    format_ci,
    latex_cell,
    line_height_pt,
    markdown_code,
    markdown_escape,
    render_booktabs,
    render_fitted,
    scaled_unit,
    split_headers,
    text_width_pt,
    wrap_text,
)
from energymeter.report.values import baseline_block
from tests.test_cli import invoke, make_run

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
#: Every character LaTeX treats specially, and some Markdown does.
HOSTILE = r"exp_1 & 100% #2 $x {y} ~z^ \w <b>|*"
CPU = Channel("cpu0", "cpu", "Xeon_Gold & Co", "rapl", "counter")
CPU_MODEL = Channel("cpu0", "cpu", "AMD EPYC", "model", "model",
                    meta={"tdp_w": 8.0, "idle_w": 2.4, "tdp_source": "default"})
DRAM = Channel("dram0", "dram", "Xeon_Gold & Co", "rapl", "counter")
GPU = Channel("gpu0", "gpu", "NVIDIA H100 #1", "nvml", "counter")
CARBON = {"region": "SE", "name": "Sweden", "g_per_kwh": 35.89, "basis": "generation",
          "source": "Ember (2025)", "year": 2024, "pue": 1.2, "emissions_g": 0.0042}


def full_report(name: str = HOSTILE, *, cpu: Channel = CPU, minute: int = 0,
                cpu_j: float = 100.0, **fields: object) -> Report:
    """A report with every table: channels (one a sub-zone), phases, logs, items, carbon."""
    start = T0 + timedelta(minutes=minute)
    fields.setdefault("phases", (Phase("epoch_1 & #", 0.0, 4.0, {"cpu0": 40.0, "gpu0": 80.0}),
                                 Phase("fwd", 1.0, 1.001, {"cpu0": -0.5}, parent="epoch_1 & #",
                                       below_resolution=True)))
    fields.setdefault("logs", (
        {"t_s": 4.0, "energy_j": 120.0, "metrics": {"epoch": 1, "val_acc": 0.5, "opt": "a_b"}},
        {"t_s": 8.0, "energy_j": 250.0, "metrics": {"epoch": 2, "val_acc": 0.9}}))
    return Report(
        run_id=f"{minute:04d}abcd-ef", name=name, status="completed", started_at=start,
        ended_at=start + timedelta(seconds=10), duration_s=10.0,
        channels=(ChannelEnergy(cpu, cpu_j, cpu_j / 10, cpu_j / 5),
                  ChannelEnergy(DRAM, 10.0, 1.0, 2.0),
                  ChannelEnergy(GPU, 200.0, 20.0, 40.0)),
        carbon=CARBON, items=fields.pop("items", 1000.0), warnings=("a warning & 50%",),
        **fields)  # type: ignore[arg-type]


# -- structure checks --------------------------------------------------------------------------
def _columns(spec: str) -> int:
    """The number of columns of a tabular spec (``l``, ``r``, ``c``, ``p{...}``)."""
    assert "|" not in spec, f"vertical rule in {spec!r}"
    spec = spec.removeprefix("@{}").removesuffix("@{}")
    spec = re.sub(r"[pmb]\{[^{}]*(\{[^{}]*\}[^{}]*)*\}", "p", spec)
    assert re.fullmatch(r"[lrcp]+", spec), spec
    return len(spec)


def _cells(row: str) -> list[str]:
    return re.split(r"(?<!\\)&", row)


def _unescaped(text: str, char: str) -> int:
    return len(re.findall(r"(?<!\\)" + re.escape(char), text))


def check_latex(text: str) -> list[tuple[int, list[list[str]]]]:
    """Assert the structure of ``text`` (see the module's docstring); return each tabular's
    column count and rows of cells (the header lines included)."""
    lines = text.splitlines()
    body = [line for line in lines if not line.startswith("%")]
    stack: list[str] = []
    for line in body:
        for kind, env in re.findall(r"\\(begin|end)\{(\w+\*?)\}", line):
            if kind == "begin":
                stack.append(env)
            else:
                assert stack and stack.pop() == env, f"unbalanced \\end{{{env}}}"
    assert stack == [], f"environments left open: {stack}"
    source = "\n".join(body)
    assert r"\hline" not in source
    for line in body:
        assert _unescaped(line.replace(r"\\", ""), "{") == _unescaped(line.replace(r"\\", ""),
                                                                       "}"), line
        assert _unescaped(line, "$") % 2 == 0, f"unbalanced math: {line}"
        assert _unescaped(line, "%") == 0, f"raw % (a comment) in {line}"
        assert _unescaped(line, "#") == 0 and _unescaped(line, "_") == 0, line
        assert "~" not in line.replace(r"~\cite", ""), line
    tables = []
    for match in re.finditer(r"\\begin\{tabular\}\{([^\n]*)\}\n(.*?)\\end\{tabular\}",
                             source, re.S):
        n = _columns(match.group(1))
        rows = match.group(2).splitlines()
        rules = [r for r in rows if r.startswith("\\") and r.endswith("rule")]
        assert rules[0] == r"\toprule" and rules[-1] == r"\bottomrule", rules
        assert r"\midrule" in rules
        cells = []
        for row in rows:
            if row in (r"\toprule", r"\midrule", r"\bottomrule"):
                continue
            assert row.endswith(r" \\"), row
            cells.append(_cells(row[:-3]))
            assert len(cells[-1]) == n, f"{len(cells[-1])} cells, spec has {n}: {row}"
        tables.append((n, cells))
    assert tables, "no tabular"
    return tables


def plain(cell: str) -> str:
    """A LaTeX cell's text with its lines (``\\shortstack``) joined by spaces."""
    cell = cell.strip()
    m = re.fullmatch(r"\\shortstack\[[lr]\]\{(.*)\}", cell)
    return " ".join(m.group(1).replace("\\\\{}", "\\\\").split("\\\\")) if m else cell


def check_markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of ``text``: equal cell counts, a separator row of ``---`` (text)
    or ``---:`` (numbers); returns each table's rows of cells."""
    tables: list[list[list[str]]] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            rows = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in block]
            assert all(len(r) == len(rows[0]) for r in rows), block
            assert all(c in ("---", "---:") for c in rows[1]), rows[1]
            for i, sep in enumerate(rows[1]):
                values = [r[i] for r in rows[2:] if r[i] not in ("", "-")]
                numeric = values and all(re.match(r"^[−+-]?\d", v) for v in values)
                if numeric and i:
                    assert sep == "---:", (rows[0][i], values)
            tables.append([rows[0], *rows[2:]])
            block = []
    return tables


# -- pdflatex ----------------------------------------------------------------------------------
def _tex_available() -> bool:
    if not shutil.which("pdflatex") or not shutil.which("kpsewhich"):
        return False
    found = subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True,
                           check=False)
    return found.returncode == 0 and bool(found.stdout.strip())


needs_tex = pytest.mark.skipif(not _tex_available(),
                               reason="pdflatex with booktabs.sty not installed")


def compile_latex(tmp_path: Path, *parts: str) -> str:
    """Compile ``parts`` (each \\input into a two-column article with booktabs, one
    pdflatex run); return the log, asserting that no box is overfull, no float is too
    large for the page and TeX gave no error (``!``)."""
    names = []
    for i, part in enumerate(parts):
        (tmp_path / f"part{i}.tex").write_text(part, encoding="utf-8")
        names.append(f"\\input{{part{i}}}\n\\clearpage")
    doc = ("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n"
           "\\begin{document}\n" + "\n".join(names) + "\n\\end{document}\n")
    (tmp_path / "doc.tex").write_text(doc, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           "doc.tex"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    log = (tmp_path / "doc.log").read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0
    overfull = re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)[^\n]*", log)
    assert not overfull, overfull
    too_tall = re.findall(r"Float too large for page by ([\d.]+)pt", log)
    assert not too_tall, too_tall
    errors = re.findall(r"^! .*", log, re.M)
    assert not errors, errors
    return log


# -- report: LaTeX -----------------------------------------------------------------------------
def test_report_latex_tables_structure_units_and_escaping() -> None:
    text = format_reports([full_report()], "latex")
    assert text.startswith("% energymeter: needs \\usepackage{booktabs}")
    tables = check_latex(text)
    assert len(tables) == 4  # runs, channels, phases, logs
    runs, channels, phases, logs = (cells for _, cells in tables)
    # short headers, units in the headers (the second header line)
    assert [c.strip() for c in runs[0]] == ["Run", "Time", "Energy", "Power",
                                            r"CO\textsubscript{2}e", "Items", "Per item"]
    assert [c.strip() for c in runs[1]] == ["", "(s)", "(J)", "(W)", "(g)", "", "(J)"]
    # the long name in lines, every character kept
    escaped = r"exp\_1 \& 100\% \#2 \$x \{y\} \textasciitilde{}z\textasciicircum{} " \
              r"\textbackslash{}w \textless{}b\textgreater{}\textbar{}*"
    name = runs[2][0].strip()
    assert name.startswith(r"\shortstack[l]{") and name.endswith("}")
    assert " ".join(name[len(r"\shortstack[l]{"):-1].split("\\\\")) == escaped
    assert [c.strip() for c in runs[2][-2:]] == ["1000", "0.31"]  # items, energy per item
    # the channels: devices in the caption, figures with four significant digits
    assert [c.strip() for c in channels[0]] == ["Channel", "Method", "Energy", "Mean", "Peak"]
    assert r"Devices: cpu0: Xeon\_Gold \& Co;" in text
    assert channels[-1][0].strip() == "total" and channels[-1][2].strip() == "310.0"
    assert [c.strip() for c in phases[0]] == ["Phase", "Parent", "Start", "Duration", "Energy"]
    assert phases[3][0].strip() == "fwd" and phases[3][4].strip() == "$-$0.50"
    assert [c.strip() for c in logs[0]] == ["Time", "Energy", "epoch", "val\\_acc", "opt"]
    assert [c.strip() for c in logs[2]] == ["4.000", "120.0", "1", "0.5", r"a\_b"]
    assert [c.strip() for c in logs[3]][-1] == "-"
    for label in ("tab:energymeter-0000abcd", "tab:energymeter-0000abcd-channels",
                  "tab:energymeter-0000abcd-phases", "tab:energymeter-0000abcd-logs"):
        assert f"\\label{{{label}}}" in text
    assert text.count(r"\caption{") == 4 and "35.89 gCO\\textsubscript{2}e/kWh" in text
    assert r"% warning (exp_1 & 100% #2" in text  # warnings as comments, never typeset


def test_report_latex_caption_label_and_what_is_absent() -> None:
    plain = full_report("plain", phases=(), logs=(), items=None)
    text = format_reports([plain], "latex", caption="Cost of training 50% & more",
                          label="tab:train")
    tables = check_latex(text)
    assert len(tables) == 2  # no phases, no logs
    assert "Items" not in text and "per item" not in text
    assert r"\caption{Cost of training 50\% \& more}" in text
    assert r"\caption{Cost of training 50\% \& more: energy per channel of run plain}" in text
    assert r"\label{tab:train}" in text and r"\label{tab:train-channels}" in text
    with pytest.raises(ReportError, match="accepted: letters"):
        format_reports([plain], "latex", label="tab:a b{")
    with pytest.raises(ReportError, match="markdown and latex"):
        format_reports([plain], "csv", caption="x")
    with pytest.raises(ReportError, match="latex format"):
        format_reports([plain], "markdown", label="tab:x")


def test_report_latex_several_runs_one_runs_table_and_estimates_said() -> None:
    reports = [full_report("a", minute=1), full_report("a", minute=2, cpu=CPU_MODEL),
               full_report("a", minute=1)]  # the same run twice shows once
    text = format_reports(reports, "latex")
    tables = check_latex(text)
    assert len(tables) == 4  # one table of each kind: runs, channels, phases, logs
    runs, channels, phases, logs = (cells for _, cells in tables)
    assert [plain(r[0]) for r in runs[2:]] == ["a (0001abcd)", "a (0002abcd)"]
    assert runs[3][2].strip() == "310.0*" and runs[2][2].strip() == "310.0"
    assert "*: includes energy estimated by a model" in text
    # channels: a row per run, a column per channel, the estimated one marked
    assert [c.strip() for c in channels[0]] == ["Run", "cpu0", "dram0", "gpu0", "Total"]
    assert [plain(c) for c in channels[3]] == ["a (0002abcd)", "100.0*", "10.00", "200.0",
                                                "310.0"]
    assert "cpu0: Xeon\\_Gold \\& Co/AMD EPYC" not in text  # devices differ: said per run
    # phases and logs: each run's rows under its label
    assert [plain(r[0]) for r in phases[2:]][:2] == ["a (0001abcd)", r"epoch\_1 \& \#"]
    assert plain(logs[2][0]) == "a (0001abcd)" and logs[3][0].strip() == "4.000"
    for kind in ("", "-channels", "-phases", "-logs"):
        assert text.count(f"\\label{{tab:energymeter-runs{kind}}}") == 1


def test_latex_cells_numbers_and_helpers() -> None:
    assert latex_cell("-1.5", numeric=True) == "$-$1.5"
    assert latex_cell("epoch-1", numeric=True) == "epoch-1"
    assert latex_cell("8.7e-05", numeric=True) == r"8.7$\times 10^{-5}$"
    assert latex_cell("1 ± 2 × 3 − 4 ≥ 5") == r"1 $\pm$ 2 $\times$ 3 $-$ 4 $\geq$ 5"
    assert latex_cell("evil\x1b[2J\n") == r"evil\textbackslash{}x1b[2J\textbackslash{}n"
    assert split_headers(["energy (J)", "run", "dense (n=5)"]) == (
        ["energy", "run", "dense"], ["(J)", "", "(n=5)"])
    assert check_label("tab:a-b_c.d/1+2") == "tab:a-b_c.d/1+2"
    bare = render_booktabs(["a", "b (W)"], [["x", "1"]], float_env=False)
    assert bare.startswith(r"\begin{tabular}{lr}") and r"\begin{table}" not in bare


# -- compare: LaTeX ----------------------------------------------------------------------------
def _groups() -> list:
    dense = [("runs/dense_&%/", full_report("train", minute=i, cpu_j=e))
             for i, e in enumerate([500.0, 510.0, 495.0, 505.0])]
    sparse = [("runs/sp#rse/", full_report("train", minute=10 + i, cpu_j=e))
              for i, e in enumerate([300.0, 310.0, 290.0, 305.0])]
    return dense + sparse


def test_compare_latex_mean_ci_difference_and_p() -> None:
    rows = compare(_groups())
    text = format_comparison(rows, "latex")
    tables = check_latex(text)
    (n, cells), = tables
    assert n == 3 and r"\begin{tabular}{@{}lrr@{}}" in text
    heads = [c.strip() for c in cells[0]], [c.strip() for c in cells[1]]
    assert heads == (["", r"dense\_\&\%", r"sp\#rse"], ["", "(n=4)", "(n=4)"])
    text_of = [[plain(c) for c in row] for row in cells]
    energy = next(i for i, r in enumerate(text_of) if r[0] == "energy total (J)")
    assert re.fullmatch(r"712 \$\\pm\$ 10", text_of[energy][1])  # the CI's digits
    assert text_of[energy + 1][0] == "difference"
    assert re.fullmatch(r"\$-\$\d+\.\d \\% \[\$-\$\d+\.\d, \$-\$\d+\.\d\],? "
                        r"p \\textless\{\} 0\.001", text_of[energy + 1][2])
    assert any(r[0] == r"emissions (mgCO\textsubscript{2}e)" for r in text_of)  # 4.2 mg
    assert any(r[0] == "energy per item (J)" for r in text_of)
    assert "Welch's two-sided t-test" in text and r"\label{tab:energymeter-compare}" in text
    custom = format_comparison(rows, "latex", caption="Dense & sparse", label="tab:cmp")
    assert r"\caption{Dense \& sparse}" in custom and r"\label{tab:cmp}" in custom
    assert "−" not in text and "±" not in text and "≥" not in text


def test_target_latex_structure() -> None:
    found = _groups()
    result = target_results(found, "val_acc=0.8", by="dir")
    text = format_targets(result, "latex", label="tab:tgt")
    check_latex(text)
    assert text.count(r"\begin{table}") == 2 and r"\label{tab:tgt-groups}" in text
    assert r"p{" not in text  # long notes in lines, plain booktabs


# -- markdown ----------------------------------------------------------------------------------
def test_report_markdown_tables_alignment_and_escaping() -> None:
    text = format_reports([full_report()], "markdown")
    tables = check_markdown_tables(text)
    assert len(tables) == 3  # channels, phases, logs (one run: its figures in a sentence)
    channels, phases, logs = tables
    assert channels[0] == ["channel", "kind", "device", "method", "energy (J)", "mean (W)",
                           "peak (W)"]
    assert "|---|---|---|---|---:|---:|---:|" in text
    assert channels[-1][0] == "total" and channels[2][2] == r"Xeon\_Gold & Co"
    assert phases[0] == ["phase", "parent", "start (s)", "duration (s)", "energy (J)"]
    assert logs[0] == ["time (s)", "energy (J)", "epoch", r"val\_acc", "opt"]
    assert "|---:|---:|---:|---:|---|" in text  # the text metric left-aligned
    assert "Energy per item 0.31 J (1000 items)." in text
    assert "### energymeter run `exp_1 & 100% #2 $x {y} ~z^ \\w <b>|*`" in text
    several = format_reports([full_report("a|b_c", minute=1), full_report("d", minute=2)],
                             "markdown", caption="Runs")
    runs = check_markdown_tables(several)[0]
    assert runs[0][:4] == ["run", "duration (s)", "energy (J)", "mean power (W)"]
    assert runs[1][0] == r"a\|b\_c" and several.startswith("## Runs")


def test_compare_markdown_same_table_as_latex() -> None:
    rows = compare(_groups())
    text = format_comparison(rows, "markdown", caption="Dense vs sparse")
    table, = check_markdown_tables(text)
    assert table[0] == ["", r"dense\_&% (n=4)", "sp#rse (n=4)"]
    energy = next(i for i, r in enumerate(table) if r[0] == "energy total (J)")
    assert "±" in table[energy][1] and table[energy + 1][0] == "difference"
    assert "p < 0.001" in table[energy + 1][2] and text.startswith("**Dense vs sparse**")
    assert "Welch's t-test" in text


def test_markdown_helpers() -> None:
    assert markdown_escape("a|b*c_d`e\nf<g> 1 < 2 [x](y)") == \
        r"a\|b\*c\_d\`e f\<g> 1 < 2 [x\](y)"
    assert markdown_code("a`b") == "``a`b``"
    assert markdown_escape("evil\x1b]0;x\x07") == r"evil\x1b]0;x\x07"


# -- compilation -------------------------------------------------------------------------------
@needs_tex
def test_latex_outputs_compile_with_pdflatex(tmp_path: Path) -> None:
    rows = compare(_groups())
    parts = [format_reports([full_report()], "latex"),
             format_reports([full_report("a", minute=1), full_report("b", minute=2,
                                                                     cpu=CPU_MODEL)], "latex"),
             format_comparison(rows, "latex"),
             format_comparison(compare(_groups(), group=False), "latex"),
             format_targets(target_results(_groups(), "val_acc=0.8", by="dir"), "latex")]
    log = compile_latex(tmp_path, *parts)
    assert "Undefined control sequence" not in log


def _study(groups: int, per: int = 4) -> list:
    """``groups`` groups of ``per`` runs with long, hostile group names."""
    names = ["dense", "sparse_&%", "EL2N-30 % data selection", "random-30%", "baseline",
             "x#y long_variant_name_without_spaces"]
    return [(f"runs/{names[g]}/", full_report("train", minute=10 * g + i,
                                              cpu_j=500.0 - 40 * g + 5 * i))
            for g in range(groups) for i in range(per)]


def _bases_report(minute: int) -> Report:
    attribution = {"channels": {"cpu0": {"energy_j": 30.0, "share": 0.3, "intervals": 5,
                                         "method": "m"}},
                   "run_share": 0.3, "cpu_time_scale": 1.0, "cpu_rule": "per interval"}
    baseline = {"source": "measured", "channels": {"cpu0": {"gross_j": 100.0, "idle_j": 25.0,
                                                            "net_j": 75.0}}}
    return full_report(f"shared machine run {minute}", minute=minute, attribution=attribution,
                       baseline=baseline)


def _every_latex_output(width: str) -> list[str]:
    many = [full_report(f"train method=sparse seed={i}", minute=i,
                        cpu=CPU_MODEL if i % 5 == 0 else CPU) for i in range(12)]
    outputs = [format_reports([full_report()], "latex", width=width),
               format_reports(many, "latex", width=width),
               format_reports([_bases_report(1), _bases_report(2)], "latex", width=width,
                              basis="attributed"),
               format_targets(target_results(_study(3), "val_acc=0.8", by="dir"), "latex",
                              width=width),
               format_comparison(compare(_study(2), group=False), "latex", width=width)]
    outputs += [format_comparison(compare(_study(k)), "latex", width=width) for k in (2, 3, 6)]
    return outputs


@needs_tex
@pytest.mark.parametrize("width", WIDTHS)
def test_every_latex_table_fits_a_two_column_article(tmp_path: Path, width: str) -> None:
    outputs = _every_latex_output(width)
    for text in outputs:
        check_latex(text)
        assert (r"\begin{table*}" in text) == (width == "page")
    compile_latex(tmp_path, *outputs)  # asserts no overfull box


def test_one_float_per_table_kind_for_many_runs_with_stable_labels() -> None:
    many = [full_report(f"run {i}", minute=i) for i in range(12)]
    text = format_reports(many, "latex")
    assert text.count(r"\begin{table}") == 4  # runs, channels, phases, logs
    assert re.findall(r"\\label\{([^}]*)\}", text) == [
        "tab:energymeter-runs", "tab:energymeter-runs-channels", "tab:energymeter-runs-phases",
        "tab:energymeter-runs-logs"]
    bases = format_reports([_bases_report(1), _bases_report(2)], "latex", label="tab:b")
    assert re.findall(r"\\label\{([^}]*)\}", bases) == [
        "tab:b", "tab:b-channels", "tab:b-bases", "tab:b-phases", "tab:b-logs"]


def test_many_groups_are_transposed_or_split_and_say_so() -> None:
    six = format_comparison(compare(_study(6)), "latex")
    assert "% energymeter: 6 columns do not fit the column width" in six
    assert six.count(r"\begin{tabular}") >= 2
    # blocks of columns, then (too tall for one float) continued floats
    assert six.count(r"\begin{table}") > 1 and "do not fit the page height" in six
    assert format_comparison(compare(_study(6)), "latex", width="page").count(
        r"\begin{tabular}") < six.count(r"\begin{tabular}")
    # few figures (one phase: energy, duration, power), many groups: a row per group
    phase = compare(_study(6), phase="fwd")
    text = format_comparison(phase, "latex", width="page")
    assert "transposed (a row per group" in text and text.count(r"\begin{tabular}") == 1
    with pytest.raises(ReportError, match="accepted: column, page"):
        format_comparison(phase, "latex", width="wide")


def _tagged_run(i: int, phases: int = 8, logs: int = 10, group: str = "select") -> Report:
    """Run ``i`` with ``phases`` phases, ``logs`` logs and an idle baseline (a real
    :func:`baseline_block`), tagged ``select=<group>``."""
    report = full_report(
        f"train method=sparse seed={i}", minute=i, cpu=CPU_MODEL if i % 5 == 0 else CPU,
        phases=tuple(Phase(f"epoch {j}", float(j), float(j + 1), {"cpu0": 10.0 + j})
                     for j in range(phases)),
        logs=tuple({"t_s": float(j), "energy_j": 10.0 * j,
                    "metrics": {"epoch": j, "val_acc": 0.1 * j, "loss": 1.0 / (j + 1)}}
                   for j in range(logs)),
        tags={"select": group})
    baseline = baseline_block({"source": "measured", "duration_s": 5.0,
                               "power_w": {"cpu0": 2.0 + i % 3, "gpu0": 30.0}},
                              [c.channel for c in report.channels],
                              {c.channel.id: c.energy_j for c in report.channels}, 10.0)
    return Report(**{**{f: getattr(report, f) for f in report.__dataclass_fields__},
                     "baseline": baseline})


def _baseline_study(groups: int, per: int = 4) -> list:
    """``groups`` groups of runs with idle baselines (the comparison's baseline rows)."""
    names = ["dense", "sparse_&%", "EL2N-30 % data selection", "random-30%", "baseline",
             "x#y long_variant_name_without_spaces"]
    found = []
    for g in range(groups):
        for i in range(per):
            r = _tagged_run(10 * g + i, phases=2, logs=3)
            found.append((f"runs/{names[g]}/", Report(**{
                **{f: getattr(r, f) for f in r.__dataclass_fields__},
                "channels": tuple(ChannelEnergy(c.channel, c.energy_j * (1 - 0.05 * g + 0.01 * i),
                                                c.mean_power_w, c.peak_power_w)
                                  for c in r.channels)})))
    return found


def _tall_outputs(width: str) -> dict[str, str]:
    """The outputs that were too tall for one page: compare of 2, 3 and 6
    groups with baseline rows, --phase, report of 12 and 30 runs with phases and logs, and
    a --by report."""
    out = {f"compare {k}": format_comparison(compare(_baseline_study(k)), "latex", width=width)
           for k in (2, 3, 6)}
    out["compare --phase"] = format_comparison(compare(_study(3), phase="fwd"), "latex",
                                               width=width)
    for n in (12, 30):
        out[f"report {n}"] = format_reports([_tagged_run(i) for i in range(n)], "latex",
                                            width=width)
    by = sorted((_tagged_run(i, group="ab"[i % 2]) for i in range(14)),
                key=lambda r: r.tags["select"])
    out["report --by"] = format_reports(by, "latex", width=width, label="tab:by")
    return out


def _floats(text: str) -> list[str]:
    return re.findall(r"\\begin\{table\*?\}.*?\\end\{table\*?\}", text, re.S)


@needs_tex
@pytest.mark.parametrize("width", WIDTHS)
def test_tall_tables_fit_the_page_height(tmp_path: Path, width: str) -> None:
    outputs = _tall_outputs(width)
    for name, text in outputs.items():
        check_latex(text)
        assert (r"\begin{table*}" in text) == (width == "page"), name
    compile_latex(tmp_path, *outputs.values())  # no float too large, no overfull box


@pytest.mark.parametrize("width", WIDTHS)
def test_split_floats_continue_with_the_header_and_every_row(width: str) -> None:
    """A report of 30 runs: the floats of each kind hold every row once, in order, each with
    the header; labels LABEL, LABEL-2...; the later captions say (continued)."""
    reports = [_tagged_run(i) for i in range(30)]
    text = format_reports(reports, "latex", width=width)
    floats = _floats(text)
    labels = [re.search(r"\\label\{([^}]*)\}", f).group(1) for f in floats]  # type: ignore[union-attr]
    for stem in ("tab:energymeter-runs", "tab:energymeter-runs-phases",
                 "tab:energymeter-runs-logs"):
        mine = [f for f, label in zip(floats, labels, strict=True)
                if re.fullmatch(re.escape(stem) + r"(-\d+)?", label)]
        assert [re.search(r"\\label\{([^}]*)\}", f).group(1) for f in mine] == [  # type: ignore[union-attr]
            stem, *[f"{stem}-{k}" for k in range(2, len(mine) + 1)]]
        assert "(continued)" not in mine[0]
        for k, f in enumerate(mine[1:], 2):
            assert r"\caption{Table \ref{" + stem + "} (continued).}" in f, (stem, k)
        first = {cells[0][0].strip() for f in mine for _, cells in check_latex(f)}
        assert len(first) == 1  # the header in every float (of each block of columns)
    runs = [f for f, label in zip(floats, labels, strict=True)
            if re.fullmatch(r"tab:energymeter-runs(-\d+)?", label)]
    assert len(runs) > 1 or width == "page"
    names: dict[tuple[str, ...], list[str]] = {}  # per block of columns (its header)
    for f in runs:
        for _, cells in check_latex(f):
            names.setdefault(tuple(cells[0]), []).extend(plain(r[0]) for r in cells[2:])
    for shown in names.values():  # every run once in each block, in order (words cut)
        assert [n.replace(" ", "") for n in shown] == [f"trainmethod=sparseseed={i}"
                                                       for i in range(30)]
    logs = [f for f, label in zip(floats, labels, strict=True) if "-logs" in label]
    rows = [[plain(c) for c in row] for f in logs for _, cells in check_latex(f)
            for row in cells[2:]]
    assert sum(1 for r in rows if r[0].startswith("train method")) == 30
    assert sum(1 for r in rows if not r[0].startswith("train method")) == 60  # 2 per run
    # a run's label never ends a float: its rows follow it
    for f in logs:
        _, cells = check_latex(f)[0]
        assert not plain(cells[-1][0]).startswith("train method")
    assert "2 logs of each run evenly spaced (30 runs have more, up to 10)" in text
    assert text.count("evenly spaced") == 1  # one clause, not one per run
    assert "do not fit the page height in one float" in text


def test_a_comparison_too_tall_is_set_shorter_then_split_its_differences_kept() -> None:
    rows = compare(_baseline_study(3))
    column = format_comparison(rows, "latex", label="tab:c")
    floats = _floats(column)
    assert len(floats) >= 2 and r"\label{tab:c}" in floats[0]
    assert [re.search(r"\\label\{([^}]*)\}", f).group(1) for f in floats[1:]] == [  # type: ignore[union-attr]
        f"tab:c-{k}" for k in range(2, len(floats) + 1)]
    # no row lost (a word of the first column may be cut where the column is narrow)
    cells = [[plain(c).replace(" ", "") for c in row] for f in floats
             for _, t in check_latex(f) for row in t[2:]]
    headers, table, _ = _paper_table(rows)
    assert [r[0] for r in cells] == [r[0].replace(" ", "") for r in table]
    assert any(r[0].startswith("idlebaselinepower") for r in cells)  # the baseline rows
    for f in floats:  # a difference stays in the float of its figure
        _, t = check_latex(f)[0]
        assert plain(t[2][0]).replace(" ", "") != "difference"
    # at the page width set shorter: one float (table*), each difference in at most 2 lines
    # (the 4 of the column's narrowest wrapping: "-4.9 %", "[-7.1, -2.8],", "p = 0.71,",
    # "not significant")
    page = format_comparison(rows, "latex", width="page", label="tab:c")

    def lines(text: str) -> int:
        return max(c.count("\\\\") + 1 for f in _floats(text) for _, t in check_latex(f)
                   for r in t if plain(r[0]).replace(" ", "") == "difference" for c in r[1:])

    assert len(_floats(page)) == 1 and r"\begin{table*}" in page
    assert lines(page) == 2 and lines(column) == 4
    phase = format_comparison(compare(_study(3), phase="fwd"), "latex")
    assert len(_floats(phase)) == 1


def test_render_fitted_splits_by_height_and_keeps_rows_together() -> None:
    headers = ["name", "value (J)"]
    rows = [[f"row {i}", f"{i}.0"] for i in range(120)]
    text = render_fitted(headers, rows, caption="Many rows & more", label="tab:many",
                         rules_before=[0, 40, 80], keep_with_previous=[41, 81])
    floats = _floats(text)
    assert len(floats) > 1
    shown = [plain(r[0]) for f in floats for _, cells in check_latex(f) for r in cells[2:]]
    assert shown == [f"row {i}" for i in range(120)]  # in order, none lost, none twice
    for f in floats:
        first = plain(check_latex(f)[0][1][2][0])
        assert first not in ("row 41", "row 81")  # kept with the row before
        assert plain(check_latex(f)[0][1][-1][0]) not in ("row 40", "row 80")  # never last
    assert r"\caption{Many rows \& more}" in floats[0]
    assert text.startswith("% energymeter: the 120 rows do not fit the page height")
    assert render_fitted(headers, rows, height_pt=None).count(r"\begin{table}") == 1
    unlabelled = render_fitted(headers, rows, caption="X")
    assert r"\caption{X (continued)}" in unlabelled


def test_height_estimates() -> None:
    r"""The estimates against pdflatex's measures (10 pt article, brackets in every line):
    a row of one line is the size's baselineskip (+0.63 pt), a \shortstack of n lines n em
    and 3 pt between lines; a caption is set in the normal size whatever the table's."""
    assert pytest.approx(522.5) == HEIGHT_PT
    for size, one, four in (("", 12.63, 50.73), (r"\small", 11.63, 46.68),
                            (r"\footnotesize", 10.13, 42.48)):
        assert one <= line_height_pt(1, size) <= one + 0.5
        assert four <= line_height_pt(4, size) <= four + 0.5
    assert caption_height_pt("Short.", WIDTH_PT["column"]) == pytest.approx(11 + 12)
    long = "word " * 200  # about 1000 pt wide: 5 lines of a column, 3 of the page
    assert caption_height_pt(long, WIDTH_PT["column"]) > caption_height_pt(long,
                                                                           WIDTH_PT["page"])
    assert caption_height_pt(r"\textbf{a}" * 3, 100) == caption_height_pt("aaa", 100)


# -- digits ------------------------------------------------------------------------------------
def _decimals(text: str) -> int:
    """The decimal place of a shown number's last digit (negative: trailing zeros of an
    integer rounded to tens, hundreds)."""
    if "." in text:
        return len(text.split(".")[1])
    return -(len(text) - len(text.rstrip("0"))) if text.strip("-0") else 0


@settings(max_examples=300, deadline=None)
@given(mean=st.floats(-1e9, 1e9, allow_nan=False),
       half=st.floats(1e-12, 1e9, allow_nan=False))
def test_ci_digits_follow_the_half_width(mean: float, half: float) -> None:
    shown, half_shown = format_ci(mean, half)
    assert half_shown is not None and float(half_shown) > 0  # never "± 0" for a spread
    digits = half_shown.lstrip("0.")
    assert 1 <= len(digits.replace(".", "")) <= 2 or half_shown.endswith("0")  # 2 significant
    places = ci_decimals(half)
    assert float(half_shown) == pytest.approx(round(half, places), rel=1e-9, abs=1e-15)
    assert float(shown) == pytest.approx(round(mean, places), rel=1e-9, abs=10.0 ** -places)
    if places > 0:  # the mean's last digit at the half-width's
        assert _decimals(shown) == _decimals(half_shown) == places
    else:
        assert "." not in shown and "." not in half_shown


def test_ci_digits_examples_and_units() -> None:
    assert format_ci(0.0000031, 0.0000004) == ("0.00000310", "0.00000040")
    assert format_ci(110.0, 127.06) == ("110", "130")
    assert format_ci(500.0, 9.8) == ("500.0", "9.8")
    assert format_ci(0.0995, 0.0996) == ("0.10", "0.10")  # rounds up to two digits, not three
    assert format_ci(-0.001, 0.3) == ("0.00", "0.30")  # never -0.00
    assert format_ci(55.0, None) == ("55.00", None)
    assert scaled_unit("J", 3.1e-6) == ("µJ", 1e-6) and scaled_unit("J", 1500) == ("kJ", 1e3)
    assert scaled_unit("J", 0.5) == ("J", 1.0) and scaled_unit("MiB", 1e5) == ("MiB", 1.0)
    assert scaled_unit("s", 7200) == ("s", 1.0) and scaled_unit("s", 0.003) == ("ms", 1e-3)
    # a tiny spread in markdown reads in µJ, never "± 0.000000"
    reports = [(f"runs/{g}/", full_report("t", minute=10 * g + i, cpu_j=1e-6 * (3 + i / 10 + g),
                                          phases=(), logs=()))
               for g in range(2) for i in range(4)]
    rows = compare(reports)
    for r in rows:  # the other channels away: a figure of a few µJ
        for key in [k for k in r if k.startswith(("energy_dram", "energy_gpu"))]:
            r[key] = None
    md = format_comparison(rows, "markdown")
    assert not re.search(r"± 0\.0*( |\|)", md), md  # a spread is never shown as 0.00
    assert re.search(r"\| energy cpu \(µJ\) \| 3\.1\d* ± 0\.\d+ \|", md), md


def test_width_estimates_and_wrapping() -> None:
    assert text_width_pt("0123456789") == pytest.approx(50.0)  # cmr10 figures: 5 pt
    assert wrap_text("−40.0 % [−41.2, −38.8], p < 0.001", 60, words=False) == [
        "−40.0 %", "[−41.2, −38.8],", "p < 0.001"]  # an interval is never broken
    assert wrap_text("a b c", 1000) == ["a b c"]
    assert "".join(wrap_text("averyveryverylongname", 30)) == "averyveryverylongname"
    assert wrap_text("Duration", 10, cut=False) == ["Duration"]


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENERGYMETER_REGION", "SE")
    out = tmp_path / "runs"
    make_run(out, "paper_run & 50%")
    return out


def test_cli_report_and_compare_latex_options(runs: Path, tmp_path: Path) -> None:
    code, out, err = invoke("report", "--format", "latex", "--caption", "Cost", "--label",
                            "tab:cost", str(runs))
    assert code == 0, err
    check_latex(out)
    assert r"\caption{Cost}" in out and r"\label{tab:cost-channels}" in out
    assert r"paper\_run \& 50\%" in out
    code, out, err = invoke("compare", "--format", "latex", "--label", "tab:c", str(runs))
    assert code == 0, err
    check_latex(out)
    code, out, err = invoke("compare", "--format", "markdown", str(runs))
    assert code == 0 and check_markdown_tables(out)
    code, _, err = invoke("report", "--format", "latex", "--label", "bad label", str(runs))
    assert code == 2 and "accepted: letters" in err
    code, _, err = invoke("compare", "--caption", "x", str(runs))
    assert code == 2 and "markdown and latex" in err
    code, out, err = invoke("report", "--format", "latex", "--width", "page", str(runs))
    assert code == 0 and r"\begin{table*}" in out and r"\begin{table}" not in out
    code, out, err = invoke("compare", "--format", "latex", "--width", "page", str(runs))
    assert code == 0 and r"\begin{table*}" in out
    code, _, err = invoke("compare", "--width", "page", str(runs))
    assert code == 2 and "--width is for the latex format" in err


@needs_tex
def test_cli_latex_of_a_real_run_compiles(runs: Path, tmp_path: Path) -> None:
    _, report_tex, _ = invoke("report", "--format", "latex", str(runs))
    _, compare_tex, _ = invoke("compare", "--format", "latex", str(runs))
    _, cite_tex, _ = invoke("cite", "--format", "latex", str(runs))
    (tmp_path / "tex").mkdir()
    compile_latex(tmp_path / "tex", report_tex, compare_tex, cite_tex)


def test_the_structure_checks_are_not_blind() -> None:
    good = "\\begin{tabular}{lr}\n\\toprule\na & 1 \\\\\n\\midrule\nb & 2 \\\\\n\\bottomrule\n" \
           "\\end{tabular}"
    check_latex(good)
    for bad in (good.replace("b & 2", "b & 2 & 3"), good.replace("{lr}", "{l|r}"),
                good.replace("\\bottomrule\n", ""), good.replace("a & 1", "a_1 & 1"),
                good.replace("a & 1", "100% & 1"), good.replace("\\end{tabular}", ""),
                good.replace("a & 1", "$x & 1")):
        with pytest.raises(AssertionError):
            check_latex(bad)
    with pytest.raises(AssertionError):
        check_markdown_tables("| a | b |\n|---|---|\n| x | 1 |\n")  # a number left-aligned
