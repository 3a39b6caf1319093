"""HTML tables and numbers for the report: thousands separators, percentages, escaped text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Literal

import pandas as pd

Kind = Literal["text", "int", "pct", "money", "float", "date", "datetime", "p"]
DASH = "–"
TALL_ROWS = 20  # longer tables scroll inside a box, their heading kept in view


@dataclass(frozen=True)
class Col:
    """One column of an HTML table: the frame's column, its heading, how values are written.

    Attributes:
        name: Column of the frame (or of its index, when the index is reset first).
        label: Heading shown.
        kind: How values are formatted (`fmt`).
        title: Tooltip of the heading (the definition).
        css: Extra class of the column's cells (e.g. "machine" to flag machine opens).
    """

    name: str
    label: str
    kind: Kind = "text"
    title: str = ""
    css: str = ""


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def fmt(value: Any, kind: Kind) -> str:
    """`value` for a reader: "12,345", "9.9%", "1,234.50", "2026-11-29"; "–" when missing."""
    if _missing(value):
        return DASH
    if kind == "int":
        return f"{float(value):,.0f}"
    if kind == "pct":
        number = float(value)
        return f"{number:.1%}" if abs(number) >= 0.001 or number == 0 else f"{number:.2%}"
    if kind == "money":
        return f"{float(value):,.2f}"
    if kind == "float":
        return f"{float(value):,.4g}" if abs(float(value)) < 1000 else f"{float(value):,.0f}"
    if kind == "p":
        return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"
    if kind in ("date", "datetime"):
        stamp = pd.Timestamp(value)
        return f"{stamp:%Y-%m-%d}" if kind == "date" else f"{stamp:%Y-%m-%d %H:%M}"
    return str(value)


def html_table(
    frame: pd.DataFrame,
    columns: Sequence[Col],
    *,
    caption: str = "",
    total: dict[str, Any] | None = None,
    css: str = "",
) -> str:
    """An HTML table of `columns` of `frame` (escaped), with an optional caption and total row.

    Args:
        frame: Rows to show (its index is not shown: reset it first to show it).
        columns: What to show, in order.
        caption: Text above the table.
        total: Values of a last, bold row (`Col.name` -> value; missing names are blank).
        css: Extra class of the `<table>`.
    """
    head = "".join(
        f'<th class="{_cell_class(c)}" scope="col"'
        + (f' title="{escape(c.title)}"' if c.title else "")
        + f">{escape(c.label)}</th>"
        for c in columns
    )
    body = []
    for record in frame.to_dict("records"):
        cells = "".join(
            f'<td class="{_cell_class(c)}">{escape(fmt(record.get(c.name), c.kind))}</td>'
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    foot = ""
    if total is not None:
        cells = "".join(
            f'<td class="{_cell_class(c)}">'
            + (escape(fmt(total[c.name], c.kind)) if c.name in total else "")
            + "</td>"
            for c in columns
        )
        foot = f"<tfoot><tr>{cells}</tr></tfoot>"
    caption_html = f"<caption>{escape(caption)}</caption>" if caption else ""
    wrap = "table-wrap tall" if len(frame) > TALL_ROWS else "table-wrap"
    return (
        f'<div class="{wrap}"><table class="data {escape(css)}">{caption_html}'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>{foot}</table></div>"
    )


def _cell_class(col: Col) -> str:
    align = "num" if col.kind not in ("text",) else "txt"
    return f"{align} {col.css}".strip()


def note(text: str, kind: Literal["empty", "info"] = "info") -> str:
    """A short paragraph: "empty" for a section without data yet, "info" for an explanation."""
    return f'<p class="note {kind}">{escape(text)}</p>'


def card(label: str, value: str, detail: str = "", flag: bool = False) -> str:
    """One headline figure: its label, value and a line of detail (flagged: highlighted)."""
    detail_html = f'<div class="detail">{escape(detail)}</div>' if detail else ""
    return (
        f'<div class="card{" flag" if flag else ""}"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div>{detail_html}</div>'
    )
