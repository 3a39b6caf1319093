"""The report's sections: each a pure function from analysed frames to an HTML fragment with charts.

Every section renders without data, saying what is missing and which command produces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from personalizer.analytics.funnels import STAGES, flow_totals
from personalizer.analytics.history import MODEL_SERIES, QUALITY_METRICS
from personalizer.report import charts
from personalizer.report.tables import Col, Kind, card, fmt, html_table, note

RESULT_COLUMNS = ["experiment", "variant", "metric", "value", "ci_low", "ci_high", "p_value"]
MACHINE_NOTE = (
    "Machine opens are opens made by a mail proxy that fetches every image (Apple Mail Privacy "
    "Protection), not by the reader: they are counted apart and left out of the human open rate, "
    "the click-to-open rate and the models."
)
NO_EMAIL = (
    "No email sent yet: the warehouse and the event store hold no email_sent events "
    "(import an events feed or ingest events)."
)
NO_MODEL = (
    "No model registered yet (personalizer train recommender / churn / send-time / engagement / "
    "categories)."
)
NO_RESULTS = (
    "No experiment results yet: no email sent carries an experiment and variant, and no analysis "
    "was provided."
)
SEGMENT_CAPTION = (
    "Emails count for the segments their customer was in when sent (sends before the first "
    "evaluation: the segments of that evaluation); a customer may be in several."
)
CARD_FIGURES: dict[str, Kind] = {
    "sends": "int",
    "delivery_rate": "pct",
    "bounces": "int",
    "human_open_rate": "pct",
    "open_rate": "pct",
    "machine_only_opens": "int",
    "ctr": "pct",
    "click_to_open": "pct",
    "conversions": "int",
    "conversion_rate": "pct",
    "revenue": "money",
    "revenue_per_send": "money",
    "unsubscribes": "int",
    "unsubscribe_rate": "pct",
}
KPI_COLUMNS = [
    Col("sends", "sends", "int", "emails sent (one per customer and campaign)"),
    Col("delivery_rate", "delivered", "pct", "deliveries / sends"),
    Col("opens", "opens", "int", "emails opened at least once, machine opens included"),
    Col(
        "machine_only_opens",
        "machine opens ⚑",
        "int",
        "opened only by a machine (Apple MPP proxy): not counted as human opens",
        css="machine",
    ),
    Col("human_open_rate", "human open rate", "pct", "opened by the reader / deliveries"),
    Col("clicks", "clicks", "int", "emails with a click"),
    Col("ctr", "CTR", "pct", "clicks / deliveries"),
    Col("click_to_open", "click-to-open", "pct", "clicks / human opens"),
    Col("conversions", "conversions", "int", "emails followed by an attributed order"),
    Col("conversion_rate", "conv. rate", "pct", "conversions / deliveries"),
    Col("revenue", "revenue", "money", "revenue of the attributed orders"),
    Col("revenue_per_send", "revenue / send", "money", "attributed revenue / sends"),
    Col("unsubscribes", "unsubs", "int", "emails followed by an unsubscribe"),
    Col("unsubscribe_rate", "unsub rate", "pct", "unsubscribes / deliveries"),
]


@dataclass(frozen=True)
class Section:
    """One section of the report: its anchor, heading and HTML body; `empty` without data."""

    anchor: str
    title: str
    body: str
    empty: bool = False


def _empty(anchor: str, title: str, message: str) -> Section:
    return Section(anchor, title, note(message, "empty"), empty=True)


def _kpi_table(
    kpis: pd.DataFrame,
    label: str,
    first: Col | None = None,
    caption: str = "",
    total: dict[str, object] | None = None,
) -> str:
    """A `kpis.kpi_table` as HTML: its index as the first column (`label`), then the KPIs."""
    frame = kpis.reset_index(names=label)
    lead = [Col(label, label.replace("_", " ")), *([first] if first else [])]
    return html_table(frame, [*lead, *KPI_COLUMNS], caption=caption, total=total, css="kpi")


def kpi_section(
    total: pd.Series,
    campaigns: pd.DataFrame,
    segments: pd.DataFrame,
    flows: pd.DataFrame,
    variants: pd.DataFrame,
    shop_revenue: float,
    window_days: float,
) -> Section:
    """Headline KPIs as cards, then tables per campaign, segment, flow and variant.

    Args:
        total: `kpis.headline` of all sends.
        campaigns, segments, flows, variants: `kpis.kpi_table` by campaign_id, segment, flow and
            (experiment, variant).
        shop_revenue: Revenue of every order in the period (attributed or not).
        window_days: The attribution window, for the explanation.
    """
    title = "Email KPIs"
    if not total["sends"]:
        return _empty("kpis", title, NO_EMAIL)
    opens = float(total["opens"])
    machine_share = float(total["machine_only_opens"]) / opens if opens else float("nan")
    share = float(total["revenue"]) / shop_revenue if shop_revenue else float("nan")
    t = {name: fmt(total[name], kind) for name, kind in CARD_FIGURES.items()}
    cards = [
        card("Sends", t["sends"], f"{t['delivery_rate']} delivered, {t['bounces']} bounced"),
        card("Human open rate", t["human_open_rate"], f"{t['open_rate']} with machine opens"),
        card(
            "Machine opens ⚑",
            t["machine_only_opens"],
            f"{fmt(machine_share, 'pct')} of opens, not counted as human",
            flag=True,
        ),
        card("CTR", t["ctr"], f"click-to-open {t['click_to_open']}"),
        card("Conversions", t["conversions"], f"{t['conversion_rate']} of deliveries"),
        card(
            "Attributed revenue",
            t["revenue"],
            f"{fmt(share, 'pct')} of all revenue, {t['revenue_per_send']} per send",
        ),
        card("Unsubscribes", t["unsubscribes"], f"{t['unsubscribe_rate']} of deliveries"),
    ]
    parts = [
        f'<div class="cards">{"".join(cards)}</div>',
        note(MACHINE_NOTE),
        note(
            f"Revenue is attributed to the campaign of the customer's last click on a tagged link "
            f"(utm_campaign) when the order follows within {window_days:g} days; rates are per "
            f"delivered email, counts unique per customer and campaign."
        ),
        '<h3 id="kpis-campaigns">Per campaign</h3>',
        charts.campaign_chart(campaigns),
        _kpi_table(
            campaigns.sort_values("first_sent_at"),
            "campaign_id",
            Col("first_sent_at", "first sent", "date"),
            total=dict(total) | {"campaign_id": "all campaigns"},
        ),
        '<h3 id="kpis-segments">Per segment</h3>',
    ]
    if segments.empty:
        parts.append(note("No segment membership yet (personalizer segments evaluate).", "empty"))
    else:
        by_size = segments.sort_values("sends", ascending=False)
        parts.append(_kpi_table(by_size, "segment", caption=SEGMENT_CAPTION))
    parts.append('<h3 id="kpis-flows">Per flow</h3>')
    parts.append(
        note("No flow email sent yet (campaign ids '<flow>.<step>').", "empty")
        if flows.empty
        else _kpi_table(flows, "flow")
    )
    parts.append('<h3 id="kpis-variants">Per experiment variant</h3>')
    if variants.empty:
        parts.append(note("No email carries an experiment variant yet.", "empty"))
    else:
        frame = variants.reset_index()
        columns = [Col("experiment", "experiment"), Col("variant", "variant"), *KPI_COLUMNS]
        parts.append(html_table(frame, columns, css="kpi"))
    return Section("kpis", title, "\n".join(parts))


def quality_section(quality: pd.DataFrame) -> Section:
    """Each registered model's main metric per version over time, its baselines, its champion."""
    title = "Model quality over time"
    if quality.empty:
        return _empty("models", title, NO_MODEL)
    rows = []
    for model, part in quality.groupby("model", sort=True):
        own = part[part["series"] == MODEL_SERIES].sort_values("created")
        champion = own[own["champion"]]
        current = champion.iloc[-1] if len(champion) else own.iloc[-1]
        base = part[(part["series"] != MODEL_SERIES) & (part["version"] == current["version"])]
        spec = QUALITY_METRICS.get(str(model))
        higher = spec.higher_is_better if spec else True
        best = (
            (base.nlargest(1, "value") if higher else base.nsmallest(1, "value"))
            if len(base)
            else None
        )
        rows.append(
            {
                "model": model,
                "metric": current["metric"],
                "versions": len(own),
                "champion": f"v{current['version']}" if len(champion) else "none",
                "value": current["value"],
                "baseline": best["series"].iloc[0] if best is not None else None,
                "baseline_value": best["value"].iloc[0] if best is not None else None,
                "trained": current["created"],
            }
        )
    table = pd.DataFrame(rows)
    table["lift"] = table["value"] - table["baseline_value"].astype(float)
    columns = [
        Col("model", "model"),
        Col("metric", "metric"),
        Col("versions", "versions", "int"),
        Col("champion", "champion", "text"),
        Col("value", "champion's value", "float"),
        Col("baseline", "best baseline"),
        Col("baseline_value", "baseline's value", "float"),
        Col("lift", "lift over baseline", "float"),
        Col("trained", "trained", "datetime"),
    ]
    body = [
        note(
            "Each point is a registered version (one training run), validated out of time; "
            "dashed lines are the baselines validated in the same run, the star the champion."
        ),
        charts.quality_chart(quality),
        html_table(table, columns),
    ]
    return Section("models", title, "\n".join(body))


def segments_section(sizes: pd.DataFrame, movements: pd.DataFrame) -> Section:
    """Segment sizes per evaluation, and who entered and left at the latest one."""
    title = "Segment sizes and movements"
    if sizes.empty:
        return _empty(
            "segments", title, "No segment evaluation yet (personalizer segments evaluate)."
        )
    moments = sorted(sizes["at"].unique())
    first = len(moments) == 1
    if first:
        text = (
            f"One evaluation so far, at {fmt(moments[0], 'datetime')}: every member entered at "
            "it. Movements show from the next evaluation on (personalizer segments evaluate)."
        )
    else:
        text = (
            f"{len(moments):,} evaluations that changed memberships, from "
            f"{fmt(moments[0], 'datetime')} to {fmt(moments[-1], 'datetime')}; entries and exits "
            "are those of the latest one."
        )
    body = [note(text), charts.segment_sizes_chart(sizes)]
    if not first and (movements["entered"] + movements["exited"]).sum() > 0:
        body.append(charts.movement_chart(movements))
    table = movements.assign(net=movements["entered"] - movements["exited"])
    columns = [
        Col("segment", "segment"),
        Col("before", "before", "int", "members at the previous evaluation"),
        Col("entered", "entered", "int"),
        Col("exited", "exited", "int"),
        Col("net", "net", "int"),
        Col("size", "members", "int", "members at the latest evaluation"),
    ]
    body.append(html_table(table, columns))
    return Section("segments", title, "\n".join(body))


def funnel_section(funnel: pd.DataFrame | None) -> Section:
    """Per flow and step: queued → sent → opened → clicked → converted."""
    title = "Flow funnels"
    if funnel is None or funnel.empty:
        return _empty("funnels", title, "No journeys run yet: the send queue is empty.")
    sent = funnel["sent"].where(funnel["sent"] > 0)
    table = funnel.assign(
        sent_rate=funnel["sent"] / funnel["queued"].where(funnel["queued"] > 0),
        open_rate=funnel["opened"] / sent,
        ctr=funnel["clicked"] / sent,
        conversion_rate=funnel["converted"] / sent,
    )
    columns = [
        Col("flow", "flow"),
        Col("step", "step"),
        *[Col(s, s, "int") for s in STAGES],
        Col("sent_rate", "sent / queued", "pct"),
        Col("open_rate", "human open rate", "pct", "opened by the reader / sent"),
        Col("ctr", "CTR", "pct", "clicked / sent"),
        Col("conversion_rate", "conv. rate", "pct", "converted / sent"),
        Col("revenue", "revenue", "money"),
    ]
    body = [
        note(
            "Customers queued for each step and how far they went; opened means opened by the "
            "reader (machine opens excluded), converted an order attributed to the step's email."
        ),
        charts.funnel_chart(flow_totals(funnel), STAGES),
        html_table(table, columns),
    ]
    return Section("funnels", title, "\n".join(body))


def experiment_section(results: pd.DataFrame | None) -> Section:
    """Each experiment's estimate per variant and metric, with its interval and p-value.

    `results` has `RESULT_COLUMNS` (`value` may be called `mean`, as `experiments.analyze` names
    it; an `n` column is shown when present), the control first within each experiment and metric.
    """
    title = "Experiment results"
    if results is None or results.empty:
        return _empty("experiments", title, NO_RESULTS)
    if "value" not in results.columns and "mean" in results.columns:
        results = results.rename(columns={"mean": "value"})  # `experiments.analyze` output
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"experiment results lack column(s) {', '.join(missing)}")
    table = results.assign(
        significant=results["p_value"].map(
            lambda p: "" if pd.isna(p) else ("yes" if p < 0.05 else "no")
        )
    )
    columns = [
        Col("experiment", "experiment"),
        Col("metric", "metric"),
        Col("variant", "variant"),
        *([Col("n", "n", "int", "units (customers) in the variant")] if "n" in table else []),
        Col("value", "estimate", "float"),
        Col("ci_low", "interval low", "float"),
        Col("ci_high", "interval high", "float"),
        Col("p_value", "p-value", "p", "against the control (the first variant)"),
        Col("significant", "p < 0.05", "text"),
    ]
    body = [
        note(
            "Point estimates with their 95% intervals; the dotted line is the control's (the "
            "first variant), p-values compare each variant with it."
        ),
        charts.experiment_chart(results[RESULT_COLUMNS]),
        html_table(table, columns),
    ]
    return Section("experiments", title, "\n".join(body))
