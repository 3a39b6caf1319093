"""The report's charts: matplotlib figures rendered to inline SVG (text kept as text, no files).

Every chart function takes the frame its section shows and returns an `<svg>` element ready to
be placed in the page: no XML prolog, no external references, scaled to the width of its box.
Figures are built with `matplotlib.figure.Figure` directly (no pyplot state, no GUI backend).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PALETTE = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777")
INK, MUTED, GRID = "#1f2937", "#6b7280", "#e5e7eb"
GOOD, BAD = "#16a34a", "#dc2626"
WIDE = 12.5  # inches: a chart across the page (1,200 CSS pixels)
_STYLE: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: smaller files, crisp and searchable
    "svg.hashsalt": "personalizer-report",  # stable element ids
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SIZE = re.compile(r'<svg([^>]*?) width="([\d.]+)pt" height="([\d.]+)pt"')


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_STYLE):  # type: ignore[arg-type]  # keys are rcParams names
        yield


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Figure, label: str) -> str:
    """The figure as an inline `<svg>` element with an accessible `label`, scaled to its box."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = _METADATA.sub("", _PROLOG.sub("", buffer.getvalue(), count=1))
    match = _SIZE.search(text)
    width = float(match.group(2)) * 4 / 3 if match else 720.0  # points to CSS pixels
    style = f'style="width:100%;max-width:{width:.0f}px;height:auto"'
    text = _SIZE.sub(
        rf'<svg\1 class="chart" role="img" aria-label="{_attr(label)}" {style}', text, count=1
    )
    return text.strip()


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _percent_axis(ax: Axes) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def _integer_axis(ax: Axes, axis: str = "y") -> None:
    from matplotlib.ticker import MaxNLocator

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(MaxNLocator(integer=True))


def _date_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def campaign_chart(kpis: pd.DataFrame, last: int = 60) -> str:
    """Per campaign (the latest `last`, by first send): opens by the reader against all opens,
    CTR, and the attributed revenue."""
    frame = kpis[kpis["sends"] > 0].sort_values("first_sent_at").tail(last)
    x = np.arange(len(frame))
    with _style():
        fig = _figure(WIDE, 4.8)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        top.bar(
            x,
            frame["open_rate"],
            width=0.8,
            color=GRID,
            edgecolor=MUTED,
            linewidth=0.4,
            label="all opens (machine opens included)",
        )
        top.bar(x, frame["human_open_rate"], width=0.8, color=PALETTE[0], label="human open rate")
        top.plot(
            x,
            frame["ctr"],
            color=PALETTE[1],
            marker="o",
            markersize=3.5,
            linewidth=1.2,
            label="CTR",
        )
        _percent_axis(top)
        highest = np.nanmax(frame[["open_rate", "human_open_rate", "ctr"]].to_numpy(float))
        top.set_ylim(0, (highest if np.isfinite(highest) and highest > 0 else 1.0) * 1.3)
        top.set_title("Opens and clicks per campaign (share of deliveries)")
        handles, labels = top.get_legend_handles_labels()
        top.legend(handles[1:] + handles[:1], labels[1:] + labels[:1], loc="upper left", ncols=3)
        top.grid(axis="x", visible=False)
        bottom.bar(x, frame["revenue"], width=0.8, color=PALETTE[2])
        bottom.set_title("Attributed revenue per campaign")
        bottom.set_ylabel("revenue")
        bottom.grid(axis="x", visible=False)
        step = max(1, -(-len(frame) // 16))
        labels = frame.index.astype(str).to_numpy()
        bottom.set_xticks(x[::step], labels[::step], rotation=30, ha="right")
        bottom.set_xlim(-0.6, max(len(frame), 4) - 0.4)
        return to_svg(fig, "opens, clicks and attributed revenue per campaign")


def quality_chart(quality: pd.DataFrame) -> str:
    """One panel per model: its metric per version over time, baselines dashed, champion starred."""
    models = list(dict.fromkeys(quality["model"]))
    columns = min(3, len(models))
    rows = -(-len(models) // columns)
    with _style():
        fig = _figure(min(WIDE, 4.2 * columns + 0.4), 3.2 * rows)
        axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
        for ax, model in zip(axes, models, strict=False):
            _quality_panel(ax, quality[quality["model"] == model])
        for ax in axes[len(models) :]:
            ax.set_visible(False)
        return to_svg(fig, "model quality per version over time, with baselines")


def _quality_panel(ax: Axes, rows: pd.DataFrame) -> None:
    own = rows[rows["series"] == "model"].sort_values("created")
    at = pd.to_datetime(own["created"]).dt.tz_localize(None).to_numpy()
    ax.plot(at, own["value"], color=PALETTE[0], marker="o", linewidth=2, label="model")
    for i, (baseline, part) in enumerate(rows[rows["series"] != "model"].groupby("series")):
        part = part.sort_values("created")
        ax.plot(
            pd.to_datetime(part["created"]).dt.tz_localize(None).to_numpy(),
            part["value"],
            color=PALETTE[(i + 1) % len(PALETTE)],
            linestyle="--",
            marker=".",
            linewidth=1.2,
            label=str(baseline),
        )
    for version, created, value in zip(own["version"], at, own["value"], strict=True):
        ax.annotate(
            f"v{version}",
            (created, value),
            textcoords="offset points",
            xytext=(0, 9),
            ha="center",
            fontsize=7,
            color=MUTED,
        )
    champion = own[own["champion"]]
    if len(champion):
        ax.scatter(
            pd.to_datetime(champion["created"]).dt.tz_localize(None).to_numpy(),
            champion["value"],
            marker="*",
            s=180,
            color="#eab308",
            edgecolor=INK,
            linewidth=0.6,
            zorder=5,
            label="champion",
        )
    ax.set_title(f"{own['model'].iloc[0] if len(own) else ''} · {rows['metric'].iloc[0]}")
    ax.margins(x=0.15, y=0.25)
    if len(at) and (at.max() - at.min()) < np.timedelta64(1, "h"):
        middle = at.min() + (at.max() - at.min()) / 2  # one run: a day around it, not years
        ax.set_xlim(middle - np.timedelta64(12, "h"), middle + np.timedelta64(12, "h"))
    _date_axis(ax)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3, fontsize=7)


def segment_sizes_chart(sizes: pd.DataFrame, top: int = 10) -> str:
    """Segment sizes: bars at a single evaluation, lines over time with several."""
    moments = sizes["at"].nunique()
    last = sizes[sizes["at"] == sizes["at"].max()].sort_values("size", ascending=False)
    chosen = list(last["segment"].head(top))
    with _style():
        if moments <= 1:
            fig = _figure(WIDE, 0.25 * len(last) + 0.9)
            ax = fig.subplots()
            shown = last.iloc[::-1]
            ax.barh(shown["segment"].astype(str), shown["size"], color=PALETTE[0])
            ax.set_title(
                f"Customers per segment at {pd.Timestamp(sizes['at'].max()):%Y-%m-%d %H:%M}"
            )
            ax.grid(axis="y", visible=False)
            _integer_axis(ax, "x")
            return to_svg(fig, "customers per segment")
        fig = _figure(WIDE, 3.8)
        ax = fig.subplots()
        for i, segment in enumerate(chosen):
            part = sizes[sizes["segment"] == segment].sort_values("at")
            ax.plot(
                part["at"].to_numpy(),
                part["size"],
                marker="o",
                markersize=3,
                color=PALETTE[i % len(PALETTE)],
                label=segment,
            )
        ax.set_title(f"Customers per segment at each evaluation (largest {len(chosen)})")
        _integer_axis(ax)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        _date_axis(ax)
        return to_svg(fig, "segment sizes over time")


def movement_chart(movements: pd.DataFrame) -> str:
    """Entries (right, green) and exits (left, red) per segment at the latest evaluation."""
    moved = movements[(movements["entered"] + movements["exited"]) > 0]
    moved = moved.sort_values("segment", ascending=False)
    with _style():
        fig = _figure(WIDE, 0.25 * max(len(moved), 1) + 1.0)
        ax = fig.subplots()
        labels = moved["segment"].astype(str)
        ax.barh(labels, moved["entered"], color=GOOD, label="entered")
        ax.barh(labels, -moved["exited"], color=BAD, label="exited")
        ax.axvline(0, color=INK, linewidth=0.8)
        _integer_axis(ax, "x")
        ax.set_title("Entries and exits at the latest evaluation")
        ax.legend(loc="lower right")
        ax.grid(axis="y", visible=False)
        return to_svg(fig, "segment entries and exits")


def funnel_chart(totals: pd.DataFrame, stages: tuple[str, ...]) -> str:
    """One funnel per flow: customers at each stage, with the share of those queued."""
    flows = list(totals.index)
    with _style():
        fig = _figure(WIDE, 1.5 * len(flows) + 0.6)
        axes = np.atleast_1d(fig.subplots(len(flows), 1, squeeze=False)).ravel()
        for ax, flow in zip(axes, flows, strict=True):
            counts = totals.loc[flow, list(stages)].astype(float).to_numpy()
            y = np.arange(len(stages))[::-1]
            ax.barh(y, counts, color=[PALETTE[i % len(PALETTE)] for i in range(len(stages))])
            queued = counts[0] if counts[0] > 0 else 1.0
            for yy, count in zip(y, counts, strict=True):
                ax.text(
                    count,
                    yy,
                    f"  {count:,.0f} ({count / queued:.0%})",
                    va="center",
                    fontsize=8,
                    color=INK,
                )
            ax.set_yticks(y, list(stages))
            ax.set_title(f"flow {flow}")
            ax.grid(axis="y", visible=False)
            ax.set_xlim(0, max(counts.max(), 1) * 1.25)
        return to_svg(fig, "flow funnels")


def experiment_chart(results: pd.DataFrame) -> str:
    """Point estimates with their intervals per variant, one panel per experiment and metric."""
    groups = list(results.groupby(["experiment", "metric"], sort=True))
    with _style():
        heights = [max(1, frame["variant"].nunique()) for _, frame in groups]
        fig = _figure(WIDE, sum(0.35 * h + 0.8 for h in heights))
        axes = np.atleast_1d(
            fig.subplots(len(groups), 1, squeeze=False, height_ratios=heights)
        ).ravel()
        for ax, ((experiment, metric), frame) in zip(axes, groups, strict=True):
            frame = frame.reset_index(drop=True)
            y = np.arange(len(frame))[::-1]
            value = frame["value"].astype(float).to_numpy()
            low = frame["ci_low"].astype(float).fillna(frame["value"]).to_numpy()
            high = frame["ci_high"].astype(float).fillna(frame["value"]).to_numpy()
            errors = np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])
            ax.errorbar(
                value,
                y,
                xerr=errors,
                fmt="o",
                color=PALETTE[0],
                ecolor=MUTED,
                capsize=4,
                markersize=6,
            )
            ax.axvline(value[0], color=MUTED, linestyle=":", linewidth=1)
            ax.set_yticks(y, frame["variant"].astype(str))
            ax.set_title(f"{experiment} · {metric}")
            ax.margins(x=0.15)
            ax.grid(axis="y", visible=False)
        return to_svg(fig, "experiment results with intervals")
