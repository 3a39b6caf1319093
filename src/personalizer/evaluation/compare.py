"""Side-by-side comparison of models: one tidy table, rendered for the terminal or as markdown.

`compare` turns `{model: {mode: {metric: value}}}` (what `evaluate_split` returns per model) into a
DataFrame with one row per model and flat columns `mode/metric` (`all/recall@10`,
`new/recall@10`, ...). The best value of each score column is found by `best`; the renderers mark
it in bold. Counts (`customers`) are shown but never marked.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from personalizer.evaluation.split import MODES

COUNT_METRICS = frozenset({"customers"})
# Metric names (before any "@k") where smaller is better; ranking metrics are all "higher".
LOWER_IS_BETTER = frozenset({"logloss", "brier", "mae", "rmse"})
MISSING = "-"

Results = Mapping[str, Mapping[str, Mapping[str, float]]]


def compare(results: Results, sort_by: str | None = None) -> pd.DataFrame:
    """One row per model, one column per `mode/metric`, best model first.

    Args:
        results: Metrics by model name, then evaluation mode (`all`, `new`, `cold`, or others).
        sort_by: Column to rank models by; defaults to the first `all/recall@k` column (the
            headline figure), else the first score column. Ties keep alphabetical order.

    Returns:
        A float DataFrame indexed by `model`; modes in the order all, new, cold, then others;
        metrics in first-seen order with counts last; NaN where a model lacks a value.
    """
    models = sorted(results)
    columns = _columns(results)
    data = {
        f"{mode}/{metric}": [
            float(results[model].get(mode, {}).get(metric, np.nan)) for model in models
        ]
        for mode, metric in columns
    }
    table = pd.DataFrame(data, index=pd.Index(models, name="model"), dtype=float)
    key = sort_by if sort_by is not None else _default_sort(table)
    if key is None:
        return table
    if key not in table.columns:
        raise KeyError(f"cannot sort by {key!r}: no such column")
    ascending = not higher_is_better(key)
    return table.sort_values(key, ascending=ascending, na_position="last", kind="stable")


def best(table: pd.DataFrame) -> pd.DataFrame:
    """Where each score column reaches its best value (ties all marked).

    Columns of counts, and columns with fewer than two values to compare, are never marked.

    Args:
        table: A table from `compare`.

    Returns:
        A boolean DataFrame shaped like `table`.
    """
    mask = pd.DataFrame(False, index=table.index, columns=table.columns)
    for column in table.columns:
        values = table[column]
        if not is_score(column) or values.notna().sum() < 2:
            continue
        target = values.max() if higher_is_better(column) else values.min()
        mask[column] = values == target
    return mask


def render_table(table: pd.DataFrame, title: str | None = None, digits: int = 4) -> Table:
    """A rich Table of `table`, the best value of each score column in bold green.

    Args:
        table: A table from `compare`.
        title: Optional title above the table.
        digits: Decimals shown for scores.

    Returns:
        The table, for `Console.print`.
    """
    marks = best(table)
    out = Table(title=title, caption="bold: best in column" if marks.to_numpy().any() else None)
    out.add_column(Text(str(table.index.name or "model")), no_wrap=True)
    for column in table.columns:
        mode, _, metric = str(column).rpartition("/")
        out.add_column(Text(f"{mode}\n{metric}" if mode else metric), justify="right")
    for model, row in table.iterrows():
        cells = [Text(str(model))]
        for column in table.columns:
            text = _format(row[column], column, digits)
            cells.append(Text(text, style="bold green" if marks.at[model, column] else ""))
        out.add_row(*cells)
    return out


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table of `table`, best values in bold (e.g. an MLflow artifact).

    Args:
        table: A table from `compare`.
        digits: Decimals shown for scores.

    Returns:
        The markdown, ending with a newline.
    """
    marks = best(table)
    header = [str(table.index.name or "model"), *map(str, table.columns)]
    lines = [
        _markdown_row(header),
        _markdown_row([":---", *["---:"] * len(table.columns)]),
    ]
    for model, row in table.iterrows():
        cells = [str(model)]
        for column in table.columns:
            text = _format(row[column], column, digits)
            cells.append(f"**{text}**" if marks.at[model, column] else text)
        lines.append(_markdown_row(cells))
    return "\n".join(lines) + "\n"


def is_score(column: str) -> bool:
    """Whether a `mode/metric` column holds a score (as opposed to a count)."""
    return _metric_name(column) not in COUNT_METRICS


def higher_is_better(column: str) -> bool:
    """Whether larger values of a `mode/metric` column are better."""
    return _metric_name(column) not in LOWER_IS_BETTER


def _columns(results: Results) -> list[tuple[str, str]]:
    modes: list[str] = []
    metrics: dict[str, list[str]] = {}
    for by_mode in results.values():
        for mode, values in by_mode.items():
            if mode not in metrics:
                modes.append(mode)
                metrics[mode] = []
            metrics[mode].extend(m for m in values if m not in metrics[mode])
    known = [m for m in MODES if m in metrics]
    ordered_modes = known + [m for m in modes if m not in known]
    return [
        (mode, metric)
        for mode in ordered_modes
        for metric in sorted(metrics[mode], key=lambda m: m in COUNT_METRICS)
    ]


def _default_sort(table: pd.DataFrame) -> str | None:
    scores = [c for c in table.columns if is_score(c)]
    headline = [c for c in scores if c.startswith("all/recall@")]
    return (headline or scores or [None])[0]


def _metric_name(column: str) -> str:
    return str(column).rpartition("/")[2].partition("@")[0]


def _format(value: float, column: str, digits: int) -> str:
    if pd.isna(value):
        return MISSING
    if not is_score(column):
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
