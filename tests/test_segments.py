"""Segments: definitions rejected with their line, the default set on a synthetic shop, event
sequences on hand-made frames with a known answer, and the enter/exit history of memberships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personalizer.config import Settings
from personalizer.data.importer import import_path
from personalizer.data.synthetic import ShopConfig, generate_shop
from personalizer.data.warehouse import Warehouse
from personalizer.segments.batch import (
    evaluable,
    evaluate_segments,
    evaluate_warehouse,
    update_memberships,
)
from personalizer.segments.definitions import (
    SegmentDefinitionError,
    default_segments,
    load_segments,
    parse_segments,
)

DEFAULT_NAMES = {
    "vip",
    "highly_engaged",
    "moderately_engaged",
    "dormant",
    "cart_abandoner",
    "browse_abandoner",
    "new_subscriber",
    "one_time_buyer",
    "repeat_buyer",
    "lapsed_30d",
    "lapsed_60d",
    "lapsed_90d",
    "churn_risk_high",
    "high_predicted_value",
    "likely_to_buy",
}
PREDICTED = {"churn_risk_high", "high_predicted_value", "likely_to_buy"}
AS_OF = pd.Timestamp("2026-10-01")


# --- loading ----------------------------------------------------------------------------------
VALID = """\
segments:
  - name: big_spender
    description: test
    parameters: {amount: 100, window: 30 days}
    condition:
      all:
        - {feature: spend, window: "${window}", op: ">", value: "${amount}"}
        - {feature: recency_days, op: "<", value: 10}
"""


def test_a_valid_file_loads_with_parameters_substituted(tmp_path: Path) -> None:
    path = tmp_path / "segments.yaml"
    path.write_text(VALID)
    [segment] = load_segments(path)
    assert segment.name == "big_spender"
    assert segment.line == 2
    spend = segment.condition.all[0]  # type: ignore[union-attr]
    assert spend.value == 100  # type: ignore[union-attr]
    assert spend.window == pd.Timedelta(days=30)  # type: ignore[union-attr]
    [cheaper] = load_segments(path, overrides={"big_spender": {"amount": 50}})
    assert cheaper.condition.all[0].value == 50  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("bad_line", "replacement", "line", "reason"),
    [
        (7, '        - {feature: recency_dayz, op: "<", value: 10}', 7, "unknown feature"),
        (4, '    parameters: {amount: 100, window: "3 fortnights"}', 4, "bad window"),
        (7, '        - {feature: spend, window: 3 fortnights, op: ">", value: 1}', 7, "bad window"),
        (7, '        - {feature: recency_days, op: "=<", value: 10}', 7, "op"),
        (7, '        - {feature: recency_days, op: "<", value: [10}', 7, "YAML syntax error"),
        (6, "      al:", 6, "exactly one of"),
        (
            7,
            "        - {sequence: {event: add_to_kart, without: purchase, delay: 1 hour}}",
            7,
            "event type",
        ),
        (4, "    parameters: {amount: 100}", 7, "unknown parameter 'window'"),
        (2, "  - name: Big Spender", 2, "name: String should match pattern"),
    ],
)
def test_an_invalid_definition_is_rejected_with_its_line(
    bad_line: int, replacement: str, line: int, reason: str
) -> None:
    lines = VALID.splitlines()
    lines[bad_line - 1] = replacement
    with pytest.raises(SegmentDefinitionError) as caught:
        parse_segments("\n".join(lines), "mine.yaml")
    assert caught.value.line == line, caught.value
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"mine.yaml:{line}: ")


def test_two_segments_with_one_name_are_an_error_naming_both_lines() -> None:
    twice = VALID + VALID.split("segments:\n", 1)[1]
    with pytest.raises(SegmentDefinitionError, match=r"defined twice \(lines 2 and 9\)"):
        parse_segments(twice)


def test_the_default_set_loads_and_marks_the_predicted_segments() -> None:
    segments = default_segments()
    assert {s.name for s in segments} == DEFAULT_NAMES
    assert {s.name for s in segments if s.needs_predictions} == PREDICTED
    ready, skipped = evaluable(segments, None)
    assert set(skipped) == PREDICTED
    assert "none given" in skipped["churn_risk_high"]
    assert "propensity_<category>" in skipped["likely_to_buy"]
    assert len(ready) == len(DEFAULT_NAMES) - len(PREDICTED)


def test_a_for_each_category_segment_becomes_one_segment_per_category_predicted() -> None:
    predictions = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "propensity_shoes": [0.9, 0.1, 0.5],
            "propensity_home_garden": [0.2, 0.4, 0.8],
            "churn_probability": [0.1, 0.9, 0.2],
        }
    )
    likely = [s for s in default_segments() if s.for_each == "category"]
    ready, skipped = evaluable(likely, predictions)
    assert not skipped
    assert [s.name for s in ready] == ["likely_to_buy_home_garden", "likely_to_buy_shoes"]
    assert ready[1].needs_predictions == ["propensity_shoes"]
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "order_id": ["1", "2", "3"],
            "product_id": ["p", "p", "p"],
            "quantity": [1, 1, 1],
            "unit_price": [1.0, 1.0, 1.0],
            "ordered_at": pd.to_datetime(["2026-01-01"] * 3),
        }
    )
    members = evaluate_segments(likely, orders, None, None, AS_OF, predictions)
    assert _members(members, "likely_to_buy_shoes") == {"a", "c"}  # threshold 0.3
    assert _members(members, "likely_to_buy_home_garden") == {"b", "c"}


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("{prediction: 'propensity_{category}', op: '>', value: 0.5}", "needs 'for_each"),
        ("{feature: p_alive, op: '<', value: 0.5}", "is a model prediction"),
    ],
)
def test_predictions_misused_as_features_or_placeholders_are_rejected(
    condition: str, reason: str
) -> None:
    text = f"segments:\n  - name: x\n    condition: {condition}\n"
    with pytest.raises(SegmentDefinitionError, match=reason):
        parse_segments(text)


# --- the default set on a synthetic shop ------------------------------------------------------
@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """A 1,000-customer shop imported into a temporary warehouse, then read back."""
    root = tmp_path_factory.mktemp("segments")
    generate_shop(ShopConfig(n_customers=1000, seed=3, chunk_size=1000), root / "shop")
    settings = Settings(home=root / "home", show_progress=False)
    import_path(settings, root / "shop")
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        tables = {t: wh.query(f"SELECT * FROM {t}") for t in ("customers", "orders", "events")}
        tables["members"] = evaluate_warehouse(wh, default_segments(), AS_OF)
        tables["members_by_97"] = evaluate_warehouse(
            wh, default_segments(), AS_OF, chunk_customers=97
        )
    return tables


def _members(frame: pd.DataFrame, segment: str) -> set[str]:
    return set(frame.loc[frame["segment"] == segment, "customer_id"])


def test_every_default_segment_has_a_sensible_size(shop: dict[str, pd.DataFrame]) -> None:
    members = shop["members"]
    sizes = members["segment"].value_counts()
    assert set(sizes.index) == DEFAULT_NAMES - PREDICTED  # all evaluated, none empty
    assert (sizes < 0.6 * len(shop["customers"])).all(), sizes
    assert sizes["vip"] < 0.05 * len(shop["customers"])
    assert sizes["highly_engaged"] < sizes["moderately_engaged"]
    lapsed = [_members(members, f"lapsed_{d}d") for d in (30, 60, 90)]
    assert lapsed[0] >= lapsed[1] >= lapsed[2]
    assert not _members(members, "one_time_buyer") & _members(members, "repeat_buyer")
    tiers = [_members(members, t) for t in ("highly_engaged", "moderately_engaged", "dormant")]
    assert not (tiers[0] & tiers[1])
    assert not (tiers[1] & tiers[2])
    assert not (tiers[0] & tiers[2])


def test_the_warehouse_read_chunk_by_chunk_gives_what_the_whole_tables_give(
    shop: dict[str, pd.DataFrame],
) -> None:
    tables = shop["orders"], shop["events"], shop["customers"]
    whole = evaluate_segments(default_segments(), *tables, AS_OF, chunk_customers=None)
    assert len(whole) > 1000
    pd.testing.assert_frame_equal(shop["members"], whole)
    pd.testing.assert_frame_equal(shop["members_by_97"], whole)


def test_vips_are_exactly_those_who_spent_over_1000_in_180_days(
    shop: dict[str, pd.DataFrame],
) -> None:
    orders = shop["orders"]
    recent = orders[
        (orders["ordered_at"] >= AS_OF - pd.Timedelta(days=180)) & (orders["ordered_at"] < AS_OF)
    ]
    spend = (recent["quantity"] * recent["unit_price"]).groupby(recent["customer_id"]).sum()
    assert _members(shop["members"], "vip") == set(spend.index[spend > 1000])


def test_repeat_buyers_and_lapsed_match_the_orders(shop: dict[str, pd.DataFrame]) -> None:
    before = shop["orders"][shop["orders"]["ordered_at"] < AS_OF]
    orders = before.groupby("customer_id")["order_id"].nunique()
    last = before.groupby("customer_id")["ordered_at"].max()
    assert _members(shop["members"], "repeat_buyer") == set(orders.index[orders >= 2])
    assert _members(shop["members"], "lapsed_90d") == set(
        last.index[last <= AS_OF - pd.Timedelta(days=90)]
    )


def test_predicted_segments_are_evaluated_when_predictions_are_given(
    shop: dict[str, pd.DataFrame],
) -> None:
    ids = shop["customers"]["customer_id"].to_numpy()[:200]
    predictions = pd.DataFrame(
        {
            "customer_id": ids,
            "churn_probability": np.linspace(0, 1, len(ids)),
            "predicted_value": np.arange(len(ids), dtype=float),
        }
    )
    predicted = [s for s in default_segments() if s.needs_predictions]
    members = evaluate_segments(
        predicted, shop["orders"], shop["events"], shop["customers"], AS_OF, predictions
    )
    churn = _members(members, "churn_risk_high")
    assert churn == set(predictions.loc[predictions["churn_probability"] >= 0.7, "customer_id"])
    assert _members(members, "high_predicted_value") == set(ids[-20:])  # the top 10%


TOP_SCORE = """\
segments:
  - name: most_engaged
    description: the top quarter by email score, among buyers
    condition:
      all:
        - {sum: {email_click: 3, human_open: 1}, window: 90 days, op: top, value: 0.25}
        - {not: {feature: orders_total, op: "==", value: 0}}
"""


@pytest.mark.parametrize("chunk", [7, 333])
def test_chunked_evaluation_equals_the_whole_population_at_once(
    shop: dict[str, pd.DataFrame], chunk: int
) -> None:
    ids = shop["customers"]["customer_id"].to_numpy()[:200]
    predictions = pd.DataFrame(
        {
            "customer_id": ids,
            "churn_probability": np.linspace(0, 1, len(ids)),
            "predicted_value": np.arange(len(ids), dtype=float),
            "propensity_toys": np.linspace(1, 0, len(ids)),
        }
    )
    # every default segment, and `top` rankings that must span the chunks
    segments = [*default_segments(), *parse_segments(TOP_SCORE, "top.yaml")]
    tables = shop["orders"], shop["events"], shop["customers"]
    whole = evaluate_segments(segments, *tables, AS_OF, predictions, chunk_customers=None)
    chunked = evaluate_segments(segments, *tables, AS_OF, predictions, chunk_customers=chunk)
    expected = DEFAULT_NAMES - {"likely_to_buy"} | {"likely_to_buy_toys", "most_engaged"}
    assert set(whole["segment"]) == expected
    pd.testing.assert_frame_equal(chunked, whole)


# --- event sequences on hand-made frames ------------------------------------------------------
T0 = pd.Timestamp("2026-03-02 10:00")
NO_ORDERS = pd.DataFrame(
    {
        "customer_id": pd.Series(dtype=str),
        "order_id": pd.Series(dtype=str),
        "product_id": pd.Series(dtype=str),
        "quantity": pd.Series(dtype=float),
        "unit_price": pd.Series(dtype=float),
        "ordered_at": pd.Series(dtype="datetime64[us]"),
    }
)


def _events(*rows: tuple[str, str, pd.Timestamp, str | None]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "type", "occurred_at", "product_id"])
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    frame["properties"] = "{}"
    return frame


def _order(customer: str, product: str, at: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [customer],
            "order_id": ["o1"],
            "product_id": [product],
            "quantity": [1.0],
            "unit_price": [20.0],
            "ordered_at": [at],
        }
    )


def _segment(name: str) -> list:
    return [s for s in default_segments() if s.name == name]


def test_a_cart_becomes_abandoned_after_the_delay_and_a_purchase_ends_it() -> None:
    events = _events(("c1", "add_to_cart", T0, "p1"), ("c2", "page_view", T0, None))
    orders = _order("c1", "p9", T0 + pd.Timedelta(hours=6))  # any purchase ends it
    cart = _segment("cart_abandoner")  # delay 4 hours
    history, changes = None, []
    expected = {1: set(), 5: {"c1"}, 7: set()}
    for hours, members in expected.items():
        at = T0 + pd.Timedelta(hours=hours)
        current = evaluate_segments(cart, orders, events, None, at)
        assert set(current["customer_id"]) == members, hours
        history, change = update_memberships(history, current, at)
        changes.append(change)
    assert changes[0].empty
    assert changes[1][["customer_id", "change"]].values.tolist() == [["c1", "enter"]]
    assert changes[2][["customer_id", "change"]].values.tolist() == [["c1", "exit"]]
    assert history is not None
    [row] = history.to_dict("records")
    assert row["entered_at"] == T0 + pd.Timedelta(hours=5)
    assert row["exited_at"] == T0 + pd.Timedelta(hours=7)


def test_browse_abandoners_need_three_views_of_one_product_and_no_purchase_of_it() -> None:
    views = [("c1", "product_view", T0 + pd.Timedelta(hours=h), "p1") for h in (0, 1, 2)]
    views += [("c2", "product_view", T0 + pd.Timedelta(hours=h), f"p{h}") for h in (0, 1, 2)]
    events = _events(*views)
    browse = _segment("browse_abandoner")  # 3 views, 48 hours
    at = T0 + pd.Timedelta(hours=60)
    assert (
        set(
            evaluate_segments(browse, NO_ORDERS, events, None, T0 + pd.Timedelta(hours=40))[
                "customer_id"
            ]
        )
        == set()
    )
    assert set(evaluate_segments(browse, NO_ORDERS, events, None, at)["customer_id"]) == {"c1"}
    other = _order("c1", "p7", T0 + pd.Timedelta(hours=55))
    assert set(evaluate_segments(browse, other, events, None, at)["customer_id"]) == {"c1"}
    same = _order("c1", "p1", T0 + pd.Timedelta(hours=55))
    assert evaluate_segments(browse, same, events, None, at).empty


# --- membership history -----------------------------------------------------------------------
def _current(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["customer_id", "segment"])


def test_memberships_record_enters_exits_and_reentries() -> None:
    t1, t2, t3 = (pd.Timestamp(f"2026-0{m}-01") for m in (1, 2, 3))
    history, changes = update_memberships(None, _current(("a", "vip"), ("b", "vip")), t1)
    assert set(changes["change"]) == {"enter"}
    assert len(history) == 2
    history, changes = update_memberships(history, _current(("b", "vip"), ("b", "dormant")), t2)
    assert changes[["customer_id", "segment", "change"]].values.tolist() == [
        ["b", "dormant", "enter"],
        ["a", "vip", "exit"],
    ]
    assert (changes["at"] == t2).all()
    history, changes = update_memberships(history, _current(("a", "vip")), t3)
    stays = history[(history["customer_id"] == "a") & (history["segment"] == "vip")]
    assert stays["entered_at"].tolist() == [t1, t3]
    assert stays["exited_at"].iloc[0] == t2
    assert pd.isna(stays["exited_at"].iloc[1])
    assert len(changes) == 3  # a enters again; b leaves vip and dormant
    with pytest.raises(ValueError, match="before the latest change"):
        update_memberships(history, _current(), t1)


def test_a_skipped_segment_keeps_its_open_memberships() -> None:
    t1, t2 = pd.Timestamp("2026-01-01"), pd.Timestamp("2026-01-02")
    history, _ = update_memberships(None, _current(("a", "churn_risk_high"), ("a", "vip")), t1)
    history, changes = update_memberships(history, _current(), t2, segments=["vip"])
    assert changes[["segment", "change"]].values.tolist() == [["vip", "exit"]]
    assert history.loc[history["segment"] == "churn_risk_high", "exited_at"].isna().all()


def test_a_shop_without_orders_or_events_still_gets_its_segments() -> None:
    columns = ["customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"]
    orders = pd.DataFrame({c: pd.Series(dtype=object) for c in columns}).astype(
        {"quantity": float, "unit_price": float, "ordered_at": "datetime64[ns]"}
    )
    customers = pd.DataFrame(
        {
            "customer_id": ["new", "old"],
            "email_consent": [True, True],
            "signed_up_at": pd.to_datetime(["2026-09-28", "2025-01-01"]),
        }
    )
    as_of = pd.Timestamp("2026-10-01")
    members = evaluate_segments(default_segments(), orders, None, customers, as_of)
    assert set(members.itertuples(index=False, name=None)) == {("new", "new_subscriber")}
    line = {"customer_id": "old", "order_id": "o1", "product_id": "p", "quantity": 1.0}
    one = pd.DataFrame([{**line, "unit_price": 5.0, "ordered_at": pd.Timestamp("2026-09-01")}])
    members = evaluate_segments(default_segments(), one, None, customers, as_of)
    assert ("old", "one_time_buyer") in set(members.itertuples(index=False, name=None))


# --- the default set on Online Retail ---------------------------------------------------------
@pytest.mark.slow
def test_online_retail_default_segments_match_the_orders(tmp_path: Path) -> None:
    from conftest import dataset

    settings = Settings(home=tmp_path, show_progress=False)
    import_path(settings, dataset("online_retail", "online_retail.parquet"))
    as_of = pd.Timestamp("2011-12-10")
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        members = evaluate_warehouse(wh, default_segments(), as_of)
        orders = wh.query(
            "SELECT customer_id, order_id, quantity, unit_price, ordered_at FROM orders"
        )
    print("\nOnline Retail segments at 2011-12-10:")
    print(members["segment"].value_counts().sort_index().to_string())

    recent = orders[orders["ordered_at"] >= as_of - pd.Timedelta(days=180)]
    spend = (recent["quantity"] * recent["unit_price"]).groupby(recent["customer_id"]).sum()
    assert _members(members, "vip") == set(spend.index[spend > 1000])
    assert len(spend.index[spend > 1000]) > 100

    per_buyer = orders[orders["ordered_at"] < as_of].groupby("customer_id")["order_id"].nunique()
    once, repeat = _members(members, "one_time_buyer"), _members(members, "repeat_buyer")
    assert not once & repeat
    assert once | repeat == set(per_buyer.index)
    assert repeat == set(per_buyer.index[per_buyer >= 2])
