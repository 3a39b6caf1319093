"""Build the report: analyse the frames, make the sections, render one self-contained HTML page.

`build_report` is pure (frames in, HTML out); `write_report` reads a data home and writes the file.
The page carries its CSS and its charts (inline SVG): no script, no stylesheet or image to fetch,
so it can be mailed, archived or opened offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd
from jinja2 import Environment, select_autoescape

from personalizer import __version__
from personalizer.analytics.attribution import (
    DEFAULT_WINDOW,
    attribute_orders,
    conversions,
    email_clicks,
)
from personalizer.analytics.emails import email_sends
from personalizer.analytics.funnels import flow_funnel
from personalizer.analytics.history import model_quality, segment_movements, segment_sizes
from personalizer.analytics.kpis import headline, kpi_table, segment_outcomes, send_outcomes
from personalizer.analytics.variants import variant_results
from personalizer.config import Settings
from personalizer.report.sections import (
    Section,
    experiment_section,
    funnel_section,
    kpi_section,
    quality_section,
    segments_section,
)
from personalizer.report.sources import ReportData, load_report_data

logger = logging.getLogger(__name__)

DEFAULT_FILE = "report.html"
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Analysis:
    """Everything the sections show, computed from `ReportData` (`analyse`)."""

    outcomes: pd.DataFrame
    total: pd.Series
    campaigns: pd.DataFrame
    segments: pd.DataFrame
    flows: pd.DataFrame
    variants: pd.DataFrame
    shop_revenue: float
    quality: pd.DataFrame
    sizes: pd.DataFrame
    movements: pd.DataFrame
    funnel: pd.DataFrame | None
    experiments: pd.DataFrame | None


@dataclass(frozen=True)
class ReportResult:
    """A written report: where, how big, its headline KPIs and the sections without data."""

    path: Path
    size_bytes: int
    total: pd.Series
    empty_sections: list[str]


def analyse(
    data: ReportData, window: pd.Timedelta = DEFAULT_WINDOW, since: pd.Timestamp | None = None
) -> Analysis:
    """Sends, attributed revenue and KPIs per cut; model quality; segment history; funnels.

    With `since`, only emails sent and orders placed from then on count. Experiment results are
    those of `data.experiments`, else computed from the sends that carry a variant.
    """
    sends = email_sends(data.events, since=since)
    orders = data.orders
    if since is not None:
        orders = orders[(orders["ordered_at"] >= pd.Timestamp(since)).to_numpy(bool)]
    attributed = attribute_orders(orders, email_clicks(data.events), window)
    outcomes = send_outcomes(sends, conversions(attributed))
    variants = kpi_table(outcomes, ["experiment", "variant"])
    return Analysis(
        outcomes=outcomes,
        total=headline(outcomes),
        campaigns=kpi_table(outcomes, "campaign_id"),
        segments=kpi_table(segment_outcomes(outcomes, data.memberships), "segment"),
        flows=kpi_table(outcomes, "flow"),
        variants=variants[variants["sends"] > 0],
        shop_revenue=float(orders["revenue"].sum()),
        quality=model_quality(data.versions, data.tables),
        sizes=segment_sizes(data.memberships),
        movements=segment_movements(data.memberships),
        funnel=None if data.queue is None else flow_funnel(data.queue, outcomes),
        experiments=data.experiments if data.experiments is not None else variant_results(outcomes),
    )


def build_sections(analysis: Analysis, window_days: float) -> list[Section]:
    """The five sections, in reading order."""
    a = analysis
    return [
        kpi_section(
            a.total, a.campaigns, a.segments, a.flows, a.variants, a.shop_revenue, window_days
        ),
        quality_section(a.quality),
        segments_section(a.sizes, a.movements),
        funnel_section(a.funnel),
        experiment_section(a.experiments),
    ]


def render_page(
    sections: list[Section],
    *,
    home: str,
    as_of: pd.Timestamp,
    window_days: float,
    since: pd.Timestamp | None = None,
    period: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> str:
    """The HTML page of `sections` with its header (as-of time, data home) and contents."""
    env = Environment(autoescape=select_autoescape(default=True), trim_blocks=True)
    template = env.from_string(
        resources.files("personalizer.report").joinpath(TEMPLATE).read_text(encoding="utf-8")
    )
    return template.render(
        sections=sections,
        home=home,
        as_of=f"{as_of:%Y-%m-%d %H:%M} UTC",
        since=f"{since:%Y-%m-%d}" if since is not None else None,
        period=(f"{period[0]:%Y-%m-%d}", f"{period[1]:%Y-%m-%d}") if period else None,
        window_days=f"{window_days:g}",
        version=__version__,
    )


def build_report(
    data: ReportData,
    *,
    home: str,
    as_of: pd.Timestamp,
    attribution_days: float = DEFAULT_WINDOW.days,
    since: pd.Timestamp | None = None,
) -> str:
    """The report's HTML from its data: pure, no file read or written.

    Args:
        data: The frames (`load_report_data`, or built by hand).
        home: The data home, as shown in the header.
        as_of: The moment the report describes (naive UTC), shown in the header.
        attribution_days: The attribution window in days.
        since: Only emails sent from this moment on (None: all).
    """
    return _build(data, home, as_of, attribution_days, since)[0]


def _build(
    data: ReportData,
    home: str,
    as_of: pd.Timestamp,
    attribution_days: float,
    since: pd.Timestamp | None,
) -> tuple[str, Analysis, list[Section]]:
    analysis = analyse(data, pd.Timedelta(days=attribution_days), since)
    sections = build_sections(analysis, attribution_days)
    page = render_page(
        sections,
        home=home,
        as_of=as_of,
        window_days=attribution_days,
        since=since,
        period=_period(data),
    )
    return page, analysis, sections


def _period(data: ReportData) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    stamps = pd.concat([data.events["occurred_at"], data.orders["ordered_at"]]).dropna()
    if stamps.empty:
        return None
    return pd.Timestamp(stamps.min()), pd.Timestamp(stamps.max())


def write_report(
    settings: Settings,
    out: Path | None = None,
    *,
    since: pd.Timestamp | None = None,
    attribution_days: float = DEFAULT_WINDOW.days,
    as_of: pd.Timestamp | None = None,
) -> ReportResult:
    """Read the data home of `settings`, build the report and write it to `out`.

    Args:
        settings: The data home to report on.
        out: The HTML file (default `<home>/report.html`); its folder is created.
        since: Only emails sent from this moment on (naive UTC).
        attribution_days: Orders up to this many days after a click count for its campaign.
        as_of: The moment shown in the header (default: now).

    Raises:
        ValueError: When the attribution window is not positive.
    """
    if not attribution_days > 0:
        raise ValueError(f"the attribution window must be positive, got {attribution_days} days")
    moment = as_of if as_of is not None else pd.Timestamp.now("UTC").tz_localize(None)
    data = load_report_data(settings, since)
    page, analysis, sections = _build(
        data, str(settings.home.resolve()), moment, attribution_days, since
    )
    target = out if out is not None else settings.home / DEFAULT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    logger.info("report written to %s (%d bytes)", target, len(page.encode()))
    return ReportResult(
        target, target.stat().st_size, analysis.total, [s.title for s in sections if s.empty]
    )
