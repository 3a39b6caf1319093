"""Email analytics on hand-built events with known answers: attribution, KPIs, history, funnels.

The last test checks attribution against the synthetic shop's ground truth: every order the shop
planted as "persuaded by an email, bought after clicking it" must be credited to that campaign.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from personalizer.analytics.attribution import (
    attribute_orders,
    attribution_window,
    conversions,
    email_clicks,
    order_totals,
)
from personalizer.analytics.emails import email_sends, utm_campaign
from personalizer.analytics.funnels import flow_funnel
from personalizer.analytics.history import (
    model_quality,
    segment_movements,
    segment_sizes,
)
from personalizer.analytics.kpis import headline, kpi_table, segment_outcomes, send_outcomes
from personalizer.analytics.variants import variant_results

T0 = pd.Timestamp("2026-03-02 09:00")
MPP = json.dumps({"user_agent": "Mozilla/5.0"})
IPHONE = json.dumps({"user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)"})


def event(customer: str, kind: str, hours: float, campaign: str | None = "c1", **props: object):
    """One canonical event `hours` after T0 (properties as JSON text, as the warehouse stores)."""
    return {
        "event_id": f"{customer}-{kind}-{hours}-{campaign}-{len(props)}",
        "customer_id": customer,
        "type": kind,
        "occurred_at": T0 + pd.Timedelta(hours=hours),
        "campaign_id": campaign,
        "properties": json.dumps(props) if props else "{}",
    }


def frame(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def orders(*rows: tuple[str, str, float, float]) -> pd.DataFrame:
    """Orders (order_id, customer_id, hours after T0, revenue)."""
    return pd.DataFrame(
        {
            "order_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "ordered_at": [T0 + pd.Timedelta(hours=r[2]) for r in rows],
            "revenue": [r[3] for r in rows],
        }
    )


def attributed(events: pd.DataFrame, placed: pd.DataFrame, days: float = 3) -> pd.Series:
    result = attribute_orders(placed, email_clicks(events), attribution_window(days))
    return result.set_index("order_id")["campaign_id"]


# ------------------------------------------------------------------------------- attribution
def test_an_order_within_the_window_after_a_click_is_credited_to_that_campaign() -> None:
    events = frame(event("a", "email_click", 0, "spring"))
    placed = orders(("o1", "a", 1, 50.0), ("o2", "a", 71.9, 20.0))
    result = attributed(events, placed)
    assert result.to_dict() == {"o1": "spring", "o2": "spring"}


def test_an_order_outside_the_window_or_before_the_click_is_not_credited() -> None:
    events = frame(event("a", "email_click", 10, "spring"))
    placed = orders(("late", "a", 10 + 72 + 0.1, 50.0), ("early", "a", 9, 20.0))
    result = attributed(events, placed)
    assert result.isna().all()
    # a longer window takes the late order in; the order before the click never counts
    longer = attributed(events, placed, days=4)
    assert longer["late"] == "spring"
    assert pd.isna(longer["early"])


def test_with_two_clicks_the_last_one_before_the_order_wins() -> None:
    events = frame(
        event("a", "email_click", 0, "first"),
        event("a", "email_click", 20, "second"),
        event("a", "email_click", 30, "after_the_order"),
    )
    result = attribute_orders(orders(("o1", "a", 25, 80.0)), email_clicks(events))
    assert result["campaign_id"].tolist() == ["second"]
    assert result["clicked_at"].tolist() == [T0 + pd.Timedelta(hours=20)]


def test_an_order_without_a_click_of_its_customer_is_unattributed() -> None:
    events = frame(event("someone_else", "email_click", 0, "spring"), event("a", "email_open", 0))
    result = attribute_orders(orders(("o1", "a", 1, 50.0)), email_clicks(events))
    assert result["campaign_id"].isna().all()
    assert conversions(result).empty


def test_the_links_utm_campaign_credits_its_campaign_before_the_events_campaign_id() -> None:
    url = "https://shop.example/p/1?ref=x&utm_source=personalizer&utm_campaign=winback.2"
    events = frame(
        event("a", "email_click", 0, "esp-123", url=url),
        event("b", "email_click", 0, None, utm_campaign="direct"),
    )
    result = attributed(events, orders(("oa", "a", 1, 10.0), ("ob", "b", 1, 5.0)))
    assert result.to_dict() == {"oa": "winback.2", "ob": "direct"}
    assert utm_campaign('{"link": "https://x.test/?utm_campaign=z"}') == "z"
    assert utm_campaign("{}") is None
    assert utm_campaign("not json") is None


def test_times_with_an_offset_are_compared_in_utc_and_any_index_works() -> None:
    events = frame(event("a", "email_click", 0, "spring"), event("b", "email_click", 0, "x"))
    events["occurred_at"] = pd.to_datetime(events["occurred_at"]).dt.tz_localize("Europe/Paris")
    events.index = [7, 7]  # a concatenation's duplicated index
    # the click was at 09:00 in Paris, 08:00 UTC; orders are stored as naive UTC
    placed = orders(("before", "a", -1.5, 5.0), ("after", "a", -0.5, 5.0))
    result = attributed(events, placed)
    assert pd.isna(result["before"])  # 07:30 UTC
    assert result["after"] == "spring"  # 08:30 UTC: after the click, though before 09:00
    assert sorted(email_clicks(events)["campaign_id"]) == ["spring", "x"]


def test_a_window_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        attribution_window(0)
    with pytest.raises(ValueError, match="positive"):
        attribute_orders(orders(), email_clicks(frame()), pd.Timedelta(0))


def test_order_lines_are_summed_per_order() -> None:
    lines = pd.DataFrame(
        {
            "order_id": ["o1", "o1", "o2"],
            "customer_id": ["a", "a", "b"],
            "product_id": ["p1", "p2", "p1"],
            "quantity": [2.0, 1.0, 1.0],
            "unit_price": [10.0, 5.5, 3.0],
            "ordered_at": [T0, T0 + pd.Timedelta(seconds=1), T0],
        }
    )
    totals = order_totals(lines).set_index("order_id")
    assert totals.loc["o1", "revenue"] == pytest.approx(25.5)
    assert totals.loc["o1", "ordered_at"] == T0
    assert totals.loc["o2", "revenue"] == pytest.approx(3.0)


# ------------------------------------------------------------------------------------- KPIs
def campaign_events() -> pd.DataFrame:
    """Four sends of campaign c1 with known outcomes.

    a: delivered, opened twice by the reader, clicked, bought 40 within the window.
    b: delivered, opened by the MPP proxy only.
    c: delivered, MPP proxy open and a human open on an iPhone (also "Mozilla/5.0 ..."),
       unsubscribed.
    d: bounced.
    """
    rows = []
    for customer in "abcd":
        rows.append(event(customer, "email_sent", 0))
    for customer in "abc":
        rows.append(event(customer, "email_delivered", 0.01))
    rows += [
        event("d", "email_bounced", 0.01),
        event("a", "email_open", 1, user_agent="Outlook"),
        event("a", "email_open", 5, user_agent="Outlook"),
        event("a", "email_click", 5.1, url="https://shop.example/p?utm_campaign=c1"),
        event("b", "email_open", 0.1),
        event("c", "email_open", 0.1),
        event("c", "email_open", 2),
        event("c", "unsubscribe", 2.1),
    ]
    table = frame(*rows)
    mpp = (table["type"] == "email_open") & table["customer_id"].isin(["b", "c"])
    table.loc[mpp, "properties"] = MPP
    table.loc[table.index[mpp][-1], "properties"] = IPHONE  # c's second open is the reader's
    return table


def outcomes_of(events: pd.DataFrame, placed: pd.DataFrame | None = None) -> pd.DataFrame:
    placed = orders() if placed is None else placed
    credited = attribute_orders(placed, email_clicks(events))
    return send_outcomes(email_sends(events), conversions(credited))


def test_kpis_count_unique_opens_and_keep_machine_opens_out_of_the_human_open_rate() -> None:
    outcomes = outcomes_of(campaign_events(), orders(("o1", "a", 30, 40.0), ("o2", "b", 30, 9.0)))
    total = headline(outcomes)
    assert total["sends"] == 4
    assert total["bounces"] == 1
    assert total["deliveries"] == 3
    assert total["delivery_rate"] == pytest.approx(3 / 4)
    assert total["opens"] == 3  # a (twice, once counted), b, c
    assert total["machine_opens"] == 2  # b and c
    assert total["machine_only_opens"] == 1  # b
    assert total["human_opens"] == 2  # a and c
    assert total["open_rate"] == pytest.approx(3 / 3)
    assert total["human_open_rate"] == pytest.approx(2 / 3)
    assert total["machine_open_share"] == pytest.approx(1 / 3)
    assert total["clicks"] == 1
    assert total["ctr"] == pytest.approx(1 / 3)
    assert total["click_to_open"] == pytest.approx(1 / 2)
    assert total["conversions"] == 1  # b's order had no click
    assert total["revenue"] == pytest.approx(40.0)
    assert total["revenue_per_send"] == pytest.approx(10.0)
    assert total["unsubscribes"] == 1
    assert total["unsubscribe_rate"] == pytest.approx(1 / 3)


def test_a_click_without_an_open_event_is_a_human_open() -> None:
    events = frame(
        event("a", "email_sent", 0), event("a", "email_delivered", 0), event("a", "email_click", 1)
    )
    total = headline(outcomes_of(events))
    assert total["human_opens"] == 1
    assert total["click_to_open"] == pytest.approx(1.0)


def test_without_delivery_receipts_every_send_that_did_not_bounce_is_delivered() -> None:
    events = frame(
        event("a", "email_sent", 0, "quiet"),
        event("b", "email_sent", 0, "quiet"),
        event("b", "email_bounced", 0, "quiet"),
        event("a", "email_sent", 0, "receipts"),
        event("b", "email_sent", 0, "receipts"),
        event("b", "email_delivered", 0, "receipts"),
    )
    sends = email_sends(events).set_index(["campaign_id", "customer_id"])["delivered"]
    assert sends.to_dict() == {
        ("quiet", "a"): True,  # no receipts for this campaign at all: inferred
        ("quiet", "b"): False,  # bounced
        ("receipts", "a"): False,  # the campaign has receipts, a's is missing
        ("receipts", "b"): True,
    }


def test_kpis_per_campaign_flow_and_variant() -> None:
    events = frame(
        event("a", "email_sent", 0, "welcome.1", experiment="subject", variant="A"),
        event("b", "email_sent", 0, "welcome.1", experiment="subject", variant="B"),
        event("b", "email_delivered", 0, "welcome.1"),
        event("b", "email_open", 1, "welcome.1", user_agent="Outlook"),
        event("a", "email_sent", 48, "welcome.2"),
        event("c", "email_sent", 0, "newsletter"),
    )
    outcomes = outcomes_of(events)
    campaigns = kpi_table(outcomes, "campaign_id")
    assert campaigns["sends"].to_dict() == {"newsletter": 1, "welcome.1": 2, "welcome.2": 1}
    flows = kpi_table(outcomes, "flow")
    assert flows["sends"].to_dict() == {"welcome": 3}  # the newsletter is no flow
    variants = kpi_table(outcomes, ["experiment", "variant"])
    assert variants.loc[("subject", "B"), "human_opens"] == 1
    assert variants.loc[("subject", "A"), "human_opens"] == 0
    assert len(variants) == 2


def test_experiment_results_compare_each_variant_with_the_control_per_customer() -> None:
    rows = []
    for i in range(60):
        customer, variant = f"c{i}", ("control", "bold")[i % 2]
        for campaign in ("promo.1", "promo.2"):  # two sends each: the customer is the unit
            rows.append(
                event(customer, "email_sent", 0, campaign, experiment="subject", variant=variant)
            )
        if variant == "bold" and i % 4 == 1:  # 15 of the 30 bold customers click, twice
            rows.append(event(customer, "email_click", 1, "promo.1"))
            rows.append(event(customer, "email_click", 2, "promo.2"))
    rows.append(event("x", "email_sent", 0, "other", experiment="solo", variant="only"))
    results = variant_results(outcomes_of(frame(*rows), orders(("o1", "c1", 3, 30.0))))
    assert results is not None
    assert set(results["experiment"]) == {"subject"}  # one variant: nothing to compare
    clicked = results[results["metric"] == "clicked"].set_index("variant")
    assert list(clicked.index) == ["control", "bold"]  # the control first
    assert clicked["n"].tolist() == [30, 30]
    assert clicked.loc["bold", "value"] == pytest.approx(0.5)
    assert clicked.loc["control", "value"] == 0
    assert clicked.loc["bold", "p_value"] < 0.001
    assert pd.isna(clicked.loc["control", "p_value"])
    revenue = results[results["metric"] == "revenue"].set_index("variant")["value"]
    assert revenue["bold"] == pytest.approx(30.0 / 30)
    assert variant_results(outcomes_of(campaign_events())) is None  # no variants at all


def test_revenue_credited_to_a_send_outside_the_period_still_adds_up() -> None:
    events = frame(event("a", "email_sent", 0, "old"), event("a", "email_click", 200, "old"))
    since = T0 + pd.Timedelta(hours=100)
    credited = attribute_orders(orders(("o1", "a", 201, 30.0)), email_clicks(events))
    outcomes = send_outcomes(email_sends(events, since=since), conversions(credited))
    total = headline(outcomes)
    assert total["sends"] == 0
    assert total["revenue"] == pytest.approx(30.0)


def test_a_send_counts_for_the_segments_its_customer_was_in_when_it_was_sent() -> None:
    events = frame(
        event("a", "email_sent", 0, "early"),  # before the first evaluation
        event("a", "email_sent", 100, "middle"),
        event("a", "email_sent", 300, "late"),
    )
    first, second = T0 + pd.Timedelta(hours=50), T0 + pd.Timedelta(hours=200)
    memberships = pd.DataFrame(
        {
            "customer_id": ["a", "a"],
            "segment": ["vip", "lapsed"],
            "entered_at": [first, second],
            "exited_at": [second, pd.NaT],
        }
    )
    outcomes = outcomes_of(events)
    by = segment_outcomes(outcomes, memberships)
    assert sorted(zip(by["campaign_id"], by["segment"], strict=True)) == [
        ("early", "vip"),
        ("late", "lapsed"),
        ("middle", "vip"),
    ]
    assert segment_outcomes(outcomes, None).empty


# ---------------------------------------------------------------------------------- history
def two_evaluations() -> pd.DataFrame:
    first, second = pd.Timestamp("2026-01-01"), pd.Timestamp("2026-02-01")
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "a", "d"],
            "segment": ["vip", "vip", "vip", "lapsed", "vip"],
            "entered_at": [first, first, first, second, second],
            "exited_at": [pd.NaT, second, second, pd.NaT, pd.NaT],
        }
    )


def test_segment_sizes_per_evaluation_and_the_latest_movements() -> None:
    sizes = segment_sizes(two_evaluations()).set_index(["segment", "at"])["size"]
    assert sizes[("vip", pd.Timestamp("2026-01-01"))] == 3
    assert sizes[("vip", pd.Timestamp("2026-02-01"))] == 2
    assert sizes[("lapsed", pd.Timestamp("2026-01-01"))] == 0
    moves = segment_movements(two_evaluations()).set_index("segment")
    assert moves.loc["vip"].to_dict() == {"before": 3, "entered": 1, "exited": 2, "size": 2}
    assert moves.loc["lapsed"].to_dict() == {"before": 0, "entered": 1, "exited": 0, "size": 1}
    assert segment_sizes(None).empty
    assert segment_movements(None).empty


def test_model_quality_follows_the_gate_metric_with_its_baselines_and_champion() -> None:
    versions = pd.DataFrame(
        {
            "name": ["churn", "churn", "recommender"],
            "version": [1, 2, 1],
            "aliases": ["", "champion", "champion"],
            "created": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-01-05"], utc=True),
            "run_id": ["r1", "r2", "r3"],
            "auc": [0.80, 0.85, None],
            "recency_auc": [0.70, 0.72, None],
            "bgnbd_auc": [0.75, None, None],
            "ndcg@10": [None, None, 0.4],
        }
    )
    table = pd.DataFrame({"model": ["blend", "popular"], "all/ndcg@10": [0.4, 0.1]})
    quality = model_quality(versions, {"r3": table})
    churn = quality[quality["model"] == "churn"]
    own = churn[churn["series"] == "model"]
    assert own["value"].tolist() == [0.80, 0.85]
    assert own["champion"].tolist() == [False, True]
    assert set(churn.loc[churn["version"] == 1, "series"]) == {"model", "recency", "bgnbd"}
    assert set(churn.loc[churn["version"] == 2, "series"]) == {"model", "recency"}
    rec = quality[quality["model"] == "recommender"].set_index("series")["value"]
    assert rec.to_dict() == {"model": 0.4, "popular": 0.1}


# ---------------------------------------------------------------------------------- funnels
def test_a_flow_funnel_follows_each_queued_customer_through_send_open_click_and_order() -> None:
    queue = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "a", "a"],
            "flow": ["welcome"] * 6,
            "step": ["1", "1", "1", "1", "2", "2"],  # a queued twice for step 2: counts once
            "template": ["welcome"] * 6,
            "send_at": [T0] * 4 + [T0 + pd.Timedelta(days=2)] * 2,
            "decision_id": list("uvwxyz"),
        }
    )
    events = frame(
        event("a", "email_sent", 0, "welcome.1"),
        event("b", "email_sent", 0, "welcome.1"),
        event("c", "email_sent", 0, "welcome.1"),
        event("a", "email_open", 1, "welcome.1", user_agent="Outlook"),
        event("b", "email_open", 1, "welcome.1"),  # machine open: not "opened"
        event("a", "email_click", 2, "welcome.1"),
        event("a", "email_sent", 48, "welcome.2"),
    )
    events.loc[(events["customer_id"] == "b") & (events["type"] == "email_open"), "properties"] = (
        MPP
    )
    outcomes = outcomes_of(events, orders(("o1", "a", 3, 25.0)))
    funnel = flow_funnel(queue, outcomes).set_index("step")
    assert funnel.loc["1", ["queued", "sent", "opened", "clicked", "converted"]].tolist() == [
        4,
        3,
        1,
        1,
        1,
    ]
    assert funnel.loc["1", "revenue"] == pytest.approx(25.0)
    assert funnel.loc["2", ["queued", "sent", "opened"]].tolist() == [1, 1, 0]
    assert list(funnel.index) == ["1", "2"]
    with pytest.raises(ValueError, match="flow"):
        flow_funnel(queue.drop(columns="flow"), outcomes)


# ------------------------------------------------------------------------ synthetic truth
def test_every_order_the_shop_planted_after_a_click_is_credited_to_its_campaign(
    tmp_path: Path,
) -> None:
    from personalizer.data.synthetic import ShopConfig, generate_shop

    shop = tmp_path / "shop"
    generate_shop(ShopConfig(n_customers=1500, seed=3), shop)
    events = pd.read_parquet(shop / "events")
    lines = pd.read_parquet(shop / "orders")
    truth = pd.read_parquet(shop / "truth" / "campaign_assignments.parquet")
    planted = truth[truth["persuaded_order_id"].notna() & truth["clicked"]]
    assert len(planted) >= 10, "the shop should plant some orders after clicks"
    credited = attribute_orders(order_totals(lines), email_clicks(events)).set_index("order_id")
    got = credited.loc[planted["persuaded_order_id"], "campaign_id"]
    assert (got.to_numpy() == planted["campaign_id"].to_numpy()).all()
    # and KPIs on the whole shop agree with the truth's own counts
    total = headline(send_outcomes(email_sends(events), conversions(credited.reset_index())))
    sent = truth[truth["group"] == "treatment"]
    assert total["sends"] == len(sent)
    assert total["clicks"] == int(sent["clicked"].sum())
    assert total["machine_opens"] == int(sent["machine_open"].sum())
    assert total["human_opens"] == int((sent["human_open"] | sent["clicked"]).sum())
