"""Render a Table as Markdown (for people and terminals), CSV (for code) and LaTeX (for a paper).

Conventions, shared by all three: one decimal, half up; "n/a" = the benchmark reported no score;
"—" (Markdown) / "--" (LaTeX) / empty (CSV) = never run; Δ = row minus the baseline row (vanilla
unless one is chosen) of the same backbone, from unrounded values. A score may carry "± std" (over
seeds), "[lo, hi]" (its 95% interval) and "†" (its difference with the baseline is significant
after Holm's correction). Markdown and LaTeX mark the best value per column and backbone in bold
and a partial Avg with "*"; CSV keeps numbers bare and says the same in extra columns; the
paired comparisons behind Δ get a table of their own."""

from __future__ import annotations

import csv
import io

from report.confidence import MCNEMAR, method_notes
from report.paper import VANILLA
from report.table import AVG, Row, Table, round1

NOT_RUN = "—"
LEGEND = ("**Bold**: best in its column within a backbone. Δ vs vanilla: Avg minus the vanilla Avg "
          "of the same backbone. n/a: no score (never counted as 0). —: not run, or no vanilla to "
          "compare with. *: partial Avg, over fewer benchmarks than the table has.")
DELTA_STATS = ("Δ [lo, hi]: 95% paired bootstrap interval, resampling the questions both rows answered "
               "(for Δ Avg each benchmark is resampled on its own). †: the difference with the baseline "
               "is significant at 0.05 after Holm-Bonferroni correction across the row's benchmarks.")
COMPARISON_LEGEND = ("Δ: measured minus paper. Avg: over the benchmarks both report. "
                     "n/a: no score (never counted as 0). —: not run, or nothing to compare. *: partial Avg.")


def fmt(x: float, signed: bool = False) -> str:
    value = round1(x)
    if value == 0:
        value = abs(value)  # no "-0.0"
    return f"{value:+}" if signed else str(value)


def fmt_interval(interval: tuple[float, float], signed: bool = False) -> str:
    return f"[{fmt(interval[0], signed)}, {fmt(interval[1], signed)}]"


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _cell(row: Row, col: str) -> str:
    if col not in row.cells:
        return NOT_RUN
    value = row.cells[col]
    return "n/a" if value is None else fmt(value, row.signed)


def _extras(row: Row, col: str) -> tuple[str, str, bool]:
    """What follows a score: (" ± std" over seeds, " [lo, hi]", significant vs the baseline)."""
    std = f" ± {fmt(row.spread[col])}" if col in row.spread else ""
    interval = f" {fmt_interval(row.intervals[col])}" if col in row.intervals else ""
    return std, interval, col in row.significant


def _avg(row: Row) -> str:
    return "n/a" if row.avg is None else fmt(row.avg, row.signed) + ("*" if row.partial else "")


def _delta(row: Row) -> str:
    if row.delta_avg is None:
        return NOT_RUN
    return fmt(row.delta_avg, signed=True) + ("*" if row.delta_partial else "")


def _delta_interval(row: Row) -> str:
    return f" {fmt_interval(row.delta_interval, signed=True)}" if row.delta_interval else ""


def _seeds(row: Row) -> str:
    return ", ".join("?" if s is None else str(s) for s in row.seeds)


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def _delta_header(table: Table) -> str:
    return f"Δ vs {table.baseline}"


def legend(table: Table) -> list[str]:
    """The legend paragraph, then the statistics used and the notes, as Markdown lines."""
    if not table.show_delta and not table.legend:
        return [COMPARISON_LEGEND]
    text = LEGEND if table.baseline == VANILLA else LEGEND.replace(
        "Δ vs vanilla: Avg minus the vanilla Avg", f"Δ vs {table.baseline}: Avg minus the {table.baseline} Avg")
    lines = [table.legend or text]
    stats = method_notes(table.methods)
    if any(r.comparisons for r in table.rows):
        stats.append(DELTA_STATS)
    if stats:
        lines += ["", "Statistics:", *(f"- {line}" for line in stats)]
    if table.has_seeds:
        lines += ["", "Several seeds: the score is their mean ± their standard deviation (n - 1)."]
    return lines


def notes(table: Table) -> list[str]:
    """Why some cells have no interval or no paired test."""
    return ["", "Notes:", *(f"- {note}" for note in table.notes)] if table.notes else []


# --- Markdown ---------------------------------------------------------------------------------

def _id_header(table: Table, labelled: bool) -> list[str]:
    return ["Backbone", "Caption source", *(["Settings"] if table.has_jobs else []),
            *(["Seeds"] if table.has_seeds else []), *(["Source"] if labelled else [])]


def _id_cells(table: Table, row: Row, labelled: bool) -> list[str]:
    return [row.backbone, row.caption_source, *([row.job or ""] if table.has_jobs else []),
            *([_seeds(row)] if table.has_seeds else []), *([row.label] if labelled else [])]


def to_markdown(table: Table, title: str = "") -> str:
    labelled = any(r.label for r in table.rows)
    ids = _id_header(table, labelled)
    header = [*ids, *table.benchmarks, AVG, *([_delta_header(table)] if table.show_delta else [])]
    align = [":--"] * len(ids) + ["--:"] * (len(header) - len(ids))
    lines = [f"# {title}", ""] if title else []
    lines += [_md_line(header), _md_line(align)]
    lines += [_md_line(_md_cells(table, r, labelled)) for r in table.rows]
    lines += ["", *legend(table)]
    lines += _footnotes(table)
    lines += _scoring(table)
    lines += notes(table)
    lines += _md_comparisons(table)
    return "\n".join(lines) + "\n"


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_cells(table: Table, row: Row, labelled: bool) -> list[str]:
    cells = _id_cells(table, row, labelled)
    for b in table.benchmarks:
        std, interval, significant = _extras(row, b)
        cells.append(_bold(_cell(row, b), b in row.best) + std + interval + ("†" if significant else ""))
    cells.append(_bold(_avg(row), AVG in row.best))
    return cells + ([_delta(row) + _delta_interval(row)] if table.show_delta else [])


def _scoring(table: Table) -> list[str]:
    from report.footnotes import footnotes_for

    texts = footnotes_for(table.benchmarks) if table.lmms_eval_notes else []
    return ["", "Scoring:", *(f"- {t}" for t in texts)] if texts else []


def _footnotes(table: Table) -> list[str]:
    # dict, not set: keeps row order and drops the repeats of a comparison's three rows
    everywhere = dict.fromkeys(b for r in table.rows for b in r.na_everywhere)
    notes = dict.fromkeys([f"- every row: Avg without {', '.join(everywhere)} (no row has a score there)"]
                          if everywhere else [])
    notes.update(dict.fromkeys(f"- {r.backbone} / {r.name}: Avg without {', '.join(r.missing)}"
                               for r in table.rows if r.missing))
    return ["", "Partial Avg (*):", *notes] if notes else []


COMPARISON_HEADER = ["Backbone", "Caption source", "Settings", "Against", "Benchmark", "Δ", "95% CI", "p",
                     "p (Holm)", "Test", "Questions"]


def comparison_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and one line per (row, benchmark) compared with its baseline, as text cells; the
    Settings column only when some row has settings."""
    header = [h for h in COMPARISON_HEADER if table.has_jobs or h != "Settings"]
    out = []
    for row in table.rows:
        for bench in table.benchmarks:
            c = row.comparisons.get(bench)
            if c is None:
                continue
            test = f"McNemar exact (b={c.discordant[0]}, c={c.discordant[1]})" if c.test == MCNEMAR \
                else "sign-flip permutation"
            out.append([row.backbone, row.caption_source, *([row.job or ""] if table.has_jobs else []),
                        row.baseline, bench, fmt(c.delta, signed=True) + ("†" if c.significant else ""),
                        fmt_interval(c.interval, signed=True), fmt_p(c.p), fmt_p(c.p_holm), test, str(c.n)])
    return header, out


def _md_comparisons(table: Table) -> list[str]:
    header, rows = comparison_rows(table)
    if not rows:
        return []
    align = [":--" if h in ("Backbone", "Caption source", "Settings", "Against", "Benchmark", "Test") else "--:"
             for h in header]
    intro = ("Paired comparisons (row minus the row it is against, on the same questions; "
             "† = significant after Holm-Bonferroni across the row's benchmarks):")
    return ["", intro, "",
            _md_line(header), _md_line(align), *(_md_line(r) for r in rows)]


# --- CSV --------------------------------------------------------------------------------------

def to_csv(table: Table) -> str:
    """Bare numbers for code: per benchmark its score, 95% interval and std over seeds; Avg with
    an avg_partial flag; per-benchmark deltas vs the baseline as delta_<benchmark> columns with
    the interval of delta_Avg; best_in and significant_in list the columns where the row is best
    and where its difference with the baseline is significant."""
    labelled = any(r.label for r in table.rows)
    header = ["backbone", "caption_source", *(["source"] if labelled else []), "job", "seeds"]
    header += [f"{b}{suffix}" for b in table.benchmarks for suffix in ("", "_ci_low", "_ci_high", "_std")]
    header += [AVG, "avg_partial"]
    if table.show_delta:
        header += [f"delta_{b}" for b in [*table.benchmarks, AVG]]
        header += ["delta_Avg_ci_low", "delta_Avg_ci_high", "baseline", "best_in", "significant_in"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        writer.writerow(_csv_row(table, row, labelled))
    return out.getvalue()


def _csv_row(table: Table, row: Row, labelled: bool) -> list[str]:
    cells = [row.backbone, row.caption_source, *([row.label] if labelled else []), row.job or "",
             ";".join(str(seed) for seed in row.seeds if seed is not None)]
    for b in table.benchmarks:
        lo, hi = row.intervals.get(b, (None, None))
        cells += [_csv_value(row.cells, b), _num(lo), _num(hi), _num(row.spread.get(b))]
    cells += ["" if row.avg is None else fmt(row.avg), "true" if row.partial else "false"]
    if table.show_delta:
        deltas = {**row.deltas, **({AVG: row.delta_avg} if row.delta_avg is not None else {})}
        cells += [fmt(deltas[b]) if b in deltas else "" for b in [*table.benchmarks, AVG]]
        lo, hi = row.delta_interval or (None, None)
        cells += [_num(lo), _num(hi), row.baseline or ""]
        cells.append(";".join(c for c in [*table.benchmarks, AVG] if c in row.best))
        cells.append(";".join(b for b in table.benchmarks if b in row.significant))
    return cells


def _num(x: float | None) -> str:
    return "" if x is None else fmt(x)


def _csv_value(cells: dict, col: str) -> str:
    if col not in cells:
        return ""
    return "n/a" if cells[col] is None else fmt(cells[col])


def comparisons_csv(table: Table) -> str:
    """The paired comparisons, one line per (row, benchmark), with exact p-values."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["backbone", "caption_source", "job", "baseline", "benchmark", "delta", "ci_low", "ci_high",
                     "p", "p_holm", "significant", "test", "b", "c", "questions"])
    for row in table.rows:
        for bench in table.benchmarks:
            if (c := row.comparisons.get(bench)) is not None:
                b, c_ = c.discordant or ("", "")
                writer.writerow([row.backbone, row.caption_source, row.job or "", row.baseline, bench, fmt(c.delta),
                                 fmt(c.interval[0]), fmt(c.interval[1]), f"{c.p:.6g}", f"{c.p_holm:.6g}",
                                 "true" if c.significant else "false", c.test, b, c_, c.n])
    return out.getvalue()


# --- LaTeX ------------------------------------------------------------------------------------

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                "Δ": r"$\Delta$", "±": r"$\pm$", "†": r"$^{\dagger}$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table, title: str = "") -> str:
    """A booktabs tabular; the backbone is printed once per group and groups are split by
    \\midrule. Legend, statistics and notes go in % comments, for the caption to reuse."""
    labelled = any(r.label for r in table.rows)
    header = [*_id_header(table, labelled), *map(tex_escape, table.benchmarks), AVG,
              *([tex_escape(_delta_header(table))] if table.show_delta else [])]
    lines = [f"% {title}"] if title else []
    lines += [f"% {line}".rstrip().replace("**", "") for line in legend(table)]
    lines += [f"% {note[2:]}" for note in _footnotes(table)[2:]]
    lines += [f"% {note[2:]}" for note in _scoring(table)[2:]]
    lines += [f"% {note}" for note in notes(table)[1:]]
    lines += [r"\begin{tabular}{ll" + "l" * (len(_id_header(table, labelled)) - 2)
              + "r" * (len(header) - len(_id_header(table, labelled))) + "}", r"\toprule",
              " & ".join(header) + r" \\", r"\midrule"]
    previous = None
    for row in table.rows:
        if previous is not None and row.backbone != previous:
            lines.append(r"\midrule")
        lines.append(" & ".join(_tex_cells(table, row, row.backbone != previous, labelled)) + r" \\")
        previous = row.backbone
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def _tex_cells(table: Table, row: Row, first: bool, labelled: bool) -> list[str]:
    source = tex_escape(row.caption_source) + (f" ({tex_escape(row.label)})" if row.label else "")
    cells = [tex_escape(row.backbone) if first else "", source]
    cells += [tex_escape(c) for c in _id_cells(table, row, False)[2:]]
    for b in table.benchmarks:
        std, interval, significant = _extras(row, b)
        cells.append(_tex(_cell(row, b), b in row.best) + _tex_small(std, interval)
                     + (r"$^{\dagger}$" if significant else ""))
    cells.append(_tex(_avg(row), AVG in row.best))
    if table.show_delta:
        cells.append(_tex(_delta(row), False) + _tex_small("", _delta_interval(row)))
    return cells


def _tex_small(std: str, interval: str) -> str:
    text = (r" $\pm$ " + _tex(std[3:], False) if std else "")
    return text + (r" {\scriptsize " + _tex_interval(interval.strip()) + "}" if interval else "")


def _tex_interval(text: str) -> str:
    inner = text[1:-1].split(", ")
    return "[" + ", ".join(_tex(x, False) for x in inner) + "]"


def _tex(text: str, bold: bool) -> str:
    text = {NOT_RUN: "--"}.get(text, text)
    if text.endswith("*"):
        text = text[:-1] + "$^{*}$"
    if text.startswith("-") and text != "--":
        text = "$-$" + text[1:]  # a real minus sign, not a hyphen
    return rf"\textbf{{{text}}}" if bold else text


def comparisons_latex(table: Table, title: str = "") -> str:
    """The paired comparisons as a booktabs tabular."""
    header, rows = comparison_rows(table)
    numeric = ("Δ", "95% CI", "p", "p (Holm)", "Questions")
    lines = [f"% {title}: paired comparisons"] if title else []
    lines += [f"% {DELTA_STATS}", r"\begin{tabular}{" + "".join("r" if h in numeric else "l" for h in header) + "}",
              r"\toprule", " & ".join(tex_escape(h) for h in header) + r" \\", r"\midrule"]
    for cells in rows:
        lines.append(" & ".join(_tex_comparison_cell(h, c) for h, c in zip(header, cells)) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def _tex_comparison_cell(column: str, text: str) -> str:
    if column == "Δ":
        return _tex(text.rstrip("†"), False) + (r"$^{\dagger}$" if text.endswith("†") else "")
    if column == "95% CI":
        return _tex_interval(text)
    return tex_escape(text)
