"""Render a Table as Markdown (for people and terminals), CSV (for code) and LaTeX (for a paper).

Conventions, shared by all three: one decimal, half up; "n/a" = the benchmark reported no score;
"—" (Markdown) / "--" (LaTeX) / empty (CSV) = never run; Δ = row minus the vanilla row of the same
backbone, from unrounded values. Markdown and LaTeX mark the best value per column and backbone in
bold and a partial Avg with "*"; CSV keeps numbers bare and says the same in extra columns."""

from __future__ import annotations

import csv
import io

from report.table import AVG, Row, Table, round1

NOT_RUN = "—"
LEGEND = ("**Bold**: best in its column within a backbone. Δ vs vanilla: Avg minus the vanilla Avg "
          "of the same backbone. n/a: no score (never counted as 0). —: not run, or no vanilla to "
          "compare with. *: partial Avg, over fewer benchmarks than the table has.")
COMPARISON_LEGEND = ("Δ: measured minus paper. Avg: over the benchmarks both report. "
                     "n/a: no score (never counted as 0). —: not run, or nothing to compare. *: partial Avg.")


def fmt(x: float, signed: bool = False) -> str:
    value = round1(x)
    if value == 0:
        value = abs(value)  # no "-0.0"
    return f"{value:+}" if signed else str(value)


def _cell(row: Row, col: str) -> str:
    if col not in row.cells:
        return NOT_RUN
    value = row.cells[col]
    return "n/a" if value is None else fmt(value, row.signed)


def _avg(row: Row) -> str:
    return "n/a" if row.avg is None else fmt(row.avg, row.signed) + ("*" if row.partial else "")


def _delta(row: Row) -> str:
    if row.delta_avg is None:
        return NOT_RUN
    return fmt(row.delta_avg, signed=True) + ("*" if row.delta_partial else "")


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


# --- Markdown ---------------------------------------------------------------------------------

def to_markdown(table: Table, title: str = "") -> str:
    labelled = any(r.label for r in table.rows)
    header = ["Backbone", "Caption source", *(["Source"] if labelled else []), *table.benchmarks, AVG,
              *(["Δ vs vanilla"] if table.show_delta else [])]
    align = [":--"] * (3 if labelled else 2) + ["--:"] * (len(header) - (3 if labelled else 2))
    lines = [f"# {title}", ""] if title else []
    lines += [_md_line(header), _md_line(align)]
    lines += [_md_line(_md_cells(table, r, labelled)) for r in table.rows]
    lines += ["", LEGEND if table.show_delta else COMPARISON_LEGEND]
    lines += _footnotes(table)
    return "\n".join(lines) + "\n"


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_cells(table: Table, row: Row, labelled: bool) -> list[str]:
    cells = [row.backbone, row.caption_source, *([row.label] if labelled else [])]
    cells += [_bold(_cell(row, b), b in row.best) for b in table.benchmarks]
    cells.append(_bold(_avg(row), AVG in row.best))
    return cells + ([_delta(row)] if table.show_delta else [])


def _footnotes(table: Table) -> list[str]:
    # dict, not set: keeps row order and drops the repeats of a comparison's three rows
    notes = dict.fromkeys(f"- {r.backbone} / {r.caption_source}: Avg without {', '.join(r.missing)}"
                          for r in table.rows if r.partial)
    return ["", "Partial Avg (*):", *notes] if notes else []


# --- CSV --------------------------------------------------------------------------------------

def to_csv(table: Table) -> str:
    """Bare numbers for code: Avg with an avg_partial flag, per-benchmark deltas vs vanilla as
    delta_<benchmark> columns, and best_in listing the columns where the row is best."""
    labelled = any(r.label for r in table.rows)
    header = ["backbone", "caption_source", *(["source"] if labelled else []), *table.benchmarks,
              AVG, "avg_partial"]
    if table.show_delta:
        header += [f"delta_{b}" for b in [*table.benchmarks, AVG]] + ["best_in"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        writer.writerow(_csv_row(table, row, labelled))
    return out.getvalue()


def _csv_row(table: Table, row: Row, labelled: bool) -> list[str]:
    cells = [row.backbone, row.caption_source, *([row.label] if labelled else [])]
    cells += [_csv_value(row.cells, b) for b in table.benchmarks]
    cells += ["" if row.avg is None else fmt(row.avg), "true" if row.partial else "false"]
    if table.show_delta:
        deltas = {**row.deltas, **({AVG: row.delta_avg} if row.delta_avg is not None else {})}
        cells += [fmt(deltas[b]) if b in deltas else "" for b in [*table.benchmarks, AVG]]
        cells.append(";".join(c for c in [*table.benchmarks, AVG] if c in row.best))
    return cells


def _csv_value(cells: dict, col: str) -> str:
    if col not in cells:
        return ""
    return "n/a" if cells[col] is None else fmt(cells[col])


# --- LaTeX ------------------------------------------------------------------------------------

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                "Δ": r"$\Delta$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table, title: str = "") -> str:
    """A booktabs tabular; the backbone is printed once per group and groups are split by
    \\midrule. Legend and partial-Avg notes go in % comments, for the caption to reuse."""
    header = ["Backbone", "Caption source", *map(tex_escape, table.benchmarks), AVG,
              *([r"$\Delta$ vs vanilla"] if table.show_delta else [])]
    lines = [f"% {title}"] if title else []
    lines += [f"% {LEGEND if table.show_delta else COMPARISON_LEGEND}".replace("**", "")]
    lines += [f"% {note[2:]}" for note in _footnotes(table)[2:]]
    lines += [r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}", r"\toprule",
              " & ".join(header) + r" \\", r"\midrule"]
    previous = None
    for row in table.rows:
        if previous is not None and row.backbone != previous:
            lines.append(r"\midrule")
        lines.append(" & ".join(_tex_cells(table, row, row.backbone != previous)) + r" \\")
        previous = row.backbone
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def _tex_cells(table: Table, row: Row, first: bool) -> list[str]:
    source = tex_escape(row.caption_source) + (f" ({tex_escape(row.label)})" if row.label else "")
    cells = [tex_escape(row.backbone) if first else "", source]
    cells += [_tex(_cell(row, b), b in row.best) for b in table.benchmarks]
    cells.append(_tex(_avg(row), AVG in row.best))
    return cells + ([_tex(_delta(row), False)] if table.show_delta else [])


def _tex(text: str, bold: bool) -> str:
    text = {NOT_RUN: "--"}.get(text, text)
    if text.endswith("*"):
        text = text[:-1] + "$^{*}$"
    if text.startswith("-") and text != "--":
        text = "$-$" + text[1:]  # a real minus sign, not a hyphen
    return rf"\textbf{{{text}}}" if bold else text
