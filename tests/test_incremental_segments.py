"""Incremental segments: a touched customer's memberships equal a full batch evaluation at the same
moment; time alone makes a cart abandoner (via `tick`) and a purchase ends it; `follow` resumes from
a sequence number without emitting anything twice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from personalizer.data.event_store import SqliteEventStore, ingest_events
from personalizer.data.synthetic import ShopConfig, make_catalog, simulate_chunk
from personalizer.segments.batch import evaluate_segments
from personalizer.segments.definitions import default_segments
from personalizer.segments.incremental import SegmentUpdater, follow

AS_OF = pd.Timestamp("2026-10-01")
T0 = pd.Timestamp("2026-10-01 08:00")


@pytest.fixture(scope="module")
def shop() -> dict[str, pd.DataFrame]:
    config = ShopConfig(n_customers=400, seed=5, chunk_size=400)
    tables = simulate_chunk(config, make_catalog(config), 0)
    return {t: tables[t] for t in ("customers", "orders", "events")}


def _no_orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "order_id": pd.Series(dtype=object),
            "product_id": pd.Series(dtype=object),
            "quantity": pd.Series(dtype=float),
            "unit_price": pd.Series(dtype=float),
            "ordered_at": pd.Series(dtype="datetime64[us]"),
        }
    )


def _event(i: int, customer: str, kind: str, at: pd.Timestamp, product: str | None = "p1") -> dict:
    return {
        "event_id": f"n{i}",
        "customer_id": customer,
        "type": kind,
        "occurred_at": at,
        "product_id": product,
        "properties": "{}",
    }


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["customer_id"].astype(str), frame["segment"], strict=True))


def test_touched_customers_match_a_full_batch_evaluation(shop: dict[str, pd.DataFrame]) -> None:
    before = dict(shop)
    before["orders"] = shop["orders"][shop["orders"]["ordered_at"] < AS_OF]
    before["events"] = shop["events"][shop["events"]["occurred_at"] < AS_OF]
    definitions = default_segments()
    updater = SegmentUpdater(
        definitions, before["orders"], before["events"], before["customers"], AS_OF
    )
    assert {"churn_risk_high", "high_predicted_value"} <= set(updater.skipped)
    assert _pairs(updater.memberships()) == _pairs(
        evaluate_segments(definitions, **_tables(before), as_of=AS_OF)
    )
    # The shop's own next week, replayed in three steps, plus carts and emails of our own.
    later = shop["events"][
        (shop["events"]["occurred_at"] >= AS_OF)
        & (shop["events"]["occurred_at"] < AS_OF + pd.Timedelta(days=7))
    ]
    extra = pd.DataFrame(
        [
            _event(1, "c0000003", "add_to_cart", AS_OF + pd.Timedelta(days=1)),
            _event(2, "c0000004", "email_click", AS_OF + pd.Timedelta(days=2), None),
            _event(3, "new-customer", "add_to_cart", AS_OF + pd.Timedelta(days=3)),
        ]
    )
    stream = pd.concat([later, extra], ignore_index=True).sort_values("occurred_at")
    events = before["events"]
    orders = before["orders"]
    for day in (2, 4, 8):
        now = AS_OF + pd.Timedelta(days=day)
        batch = stream[(stream["occurred_at"] < now) & ~stream["event_id"].isin(events["event_id"])]
        lines = shop["orders"][
            (shop["orders"]["ordered_at"] < now) & (shop["orders"]["ordered_at"] >= AS_OF)
        ]
        new_lines = lines[~lines.index.isin(orders.index)]
        changes = updater.apply(batch, now, orders=new_lines)
        events = pd.concat([events, batch])
        orders = pd.concat([orders, new_lines])
        full = evaluate_segments(definitions, orders, events, shop["customers"], now).astype(
            {"customer_id": str}
        )
        touched = set(batch["customer_id"].astype(str)) | set(new_lines["customer_id"].astype(str))
        assert len(touched) > 3
        mine = updater.memberships()
        assert _pairs(mine[mine["customer_id"].isin(touched)]) == _pairs(
            full[full["customer_id"].isin(touched)]
        ), day
        assert set(changes["customer_id"]) <= touched
        assert (changes["at"] == now).all()


def _tables(t: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {"orders": t["orders"], "events": t["events"], "customers": t["customers"]}


def test_a_cart_abandoner_enters_after_the_delay_by_tick_and_leaves_on_purchase() -> None:
    cart = [d for d in default_segments() if d.name == "cart_abandoner"]  # delay 4 hours
    updater = SegmentUpdater(cart, _no_orders(), None, None, T0)
    added = pd.DataFrame([_event(1, "c1", "add_to_cart", T0 + pd.Timedelta(minutes=5))])
    assert updater.apply(added, T0 + pd.Timedelta(minutes=6)).empty
    assert updater.pending >= 1
    assert updater.tick(T0 + pd.Timedelta(hours=4)).empty  # 5 minutes short of the delay
    entered = updater.tick(T0 + pd.Timedelta(hours=4, minutes=5))
    assert entered[["customer_id", "segment", "change"]].values.tolist() == [
        ["c1", "cart_abandoner", "enter"]
    ]
    assert entered["at"].tolist() == [T0 + pd.Timedelta(hours=4, minutes=5)]
    assert updater.segments_of("c1") == {"cart_abandoner"}
    bought = pd.DataFrame([_event(2, "c1", "purchase", T0 + pd.Timedelta(hours=5), None)])
    left = updater.apply(bought, T0 + pd.Timedelta(hours=5, seconds=1))
    assert left[["customer_id", "change"]].values.tolist() == [["c1", "exit"]]
    assert updater.segments_of("c1") == frozenset()
    assert updater.tick(T0 + pd.Timedelta(days=30)).empty  # nothing left to fire


def test_a_cart_bought_before_the_delay_never_enters() -> None:
    cart = [d for d in default_segments() if d.name == "cart_abandoner"]
    updater = SegmentUpdater(cart, _no_orders(), None, None, T0)
    events = pd.DataFrame(
        [
            _event(1, "c1", "add_to_cart", T0),
            _event(2, "c1", "purchase", T0 + pd.Timedelta(hours=1), None),
        ]
    )
    updater.apply(events, T0 + pd.Timedelta(hours=2))
    assert updater.tick(T0 + pd.Timedelta(hours=10)).empty
    assert updater.memberships().empty


def test_follow_resumes_from_a_sequence_number_without_re_emitting(tmp_path: Path) -> None:
    cart = [d for d in default_segments() if d.name == "cart_abandoner"]
    updater = SegmentUpdater(cart, _no_orders(), None, None, T0)
    old = T0 - pd.Timedelta(hours=5)  # older than the delay: an abandoner as soon as applied
    with SqliteEventStore(tmp_path / "events.sqlite") as store:
        first = [_event(i, f"c{i}", "add_to_cart", old) for i in (1, 2)]
        ingest_events(store, [{**e, "occurred_at": e["occurred_at"].isoformat()} for e in first])
        changes, last = follow(store, updater, 0, now=T0)
        assert sorted(changes["customer_id"]) == ["c1", "c2"]
        assert set(changes["change"]) == {"enter"}
        again, same = follow(store, updater, last, now=T0)
        assert again.empty
        assert same == last
        third = _event(3, "c3", "add_to_cart", old)
        ingest_events(store, [{**third, "occurred_at": old.isoformat()}])
        # a duplicate of an applied event is refused by the store and never read again
        ingest_events(store, [{**first[0], "occurred_at": old.isoformat()}])
        changes, resumed = follow(store, updater, last, now=T0 + pd.Timedelta(seconds=1))
        assert changes[["customer_id", "change"]].values.tolist() == [["c3", "enter"]]
        assert resumed > last


def test_segments_ranking_customers_against_each_other_are_skipped() -> None:
    predictions = pd.DataFrame(
        {"customer_id": ["c1"], "churn_probability": [0.9], "predicted_value": [10.0]}
    )
    updater = SegmentUpdater(default_segments(), _no_orders(), None, None, T0, predictions)
    assert "high_predicted_value" in updater.skipped
    assert "churn_risk_high" in updater.segments
    with pytest.raises(ValueError, match="before the last evaluation"):
        updater.tick(T0 - pd.Timedelta(seconds=1))


def test_a_customer_who_never_ordered_is_evaluated_like_the_batch_does() -> None:
    definitions = default_segments()
    # `evaluate_segments` needs one order line somewhere to compute buyer features: c8's.
    orders = pd.DataFrame(
        [
            {
                "customer_id": "c8",
                "order_id": "o1",
                "product_id": "p1",
                "quantity": 1.0,
                "unit_price": 5.0,
                "ordered_at": T0 - pd.Timedelta(days=40),
            }
        ]
    )
    updater = SegmentUpdater(definitions, orders, None, None, T0)
    kinds = ["email_sent", "email_sent", "email_click", "add_to_cart"]
    emails = pd.DataFrame(
        [_event(i, "c9", k, T0 + pd.Timedelta(hours=i), None) for i, k in enumerate(kinds)]
    )
    now = T0 + pd.Timedelta(days=1)
    changes = updater.apply(emails, now)  # c9 alone is touched: no order line among its rows
    full = evaluate_segments(definitions, orders, emails, None, now)
    assert _pairs(updater.memberships()) == _pairs(full)
    assert updater.segments_of("c9") == {"moderately_engaged", "cart_abandoner"}
    assert set(changes["change"]) == {"enter"}


def test_a_signup_with_consent_makes_a_new_subscriber_at_once() -> None:
    new = [d for d in default_segments() if d.name == "new_subscriber"]
    updater = SegmentUpdater(new, _no_orders(), None, None, T0)
    signup = pd.DataFrame([_event(1, "c5", "signup", T0, None)])
    row = pd.DataFrame({"customer_id": ["c5"], "signed_up_at": [T0], "email_consent": [True]})
    changes = updater.apply(signup, T0 + pd.Timedelta(minutes=1), customers=row)
    assert changes[["customer_id", "segment", "change"]].values.tolist() == [
        ["c5", "new_subscriber", "enter"]
    ]
    withdrawn = row.assign(email_consent=False)
    changes = updater.apply(signup.iloc[:0], T0 + pd.Timedelta(minutes=2), customers=withdrawn)
    assert changes["change"].tolist() == ["exit"]


def test_tick_alone_keeps_every_default_segment_equal_to_the_batch(
    shop: dict[str, pd.DataFrame],
) -> None:
    # windows, sequence delays, and days-since features (lapsed, new subscribers) crossing
    # their thresholds: all on scheduled deadlines, with no event arriving
    definitions = default_segments()
    orders = shop["orders"][shop["orders"]["ordered_at"] < AS_OF]
    events = shop["events"][shop["events"]["occurred_at"] < AS_OF]
    updater = SegmentUpdater(definitions, orders, events, shop["customers"], AS_OF)
    moved = []
    for hours in (3, 30, 24 * 20, 24 * 100, 24 * 200):
        now = AS_OF + pd.Timedelta(hours=hours)
        moved.append(updater.tick(now))
        full = evaluate_segments(definitions, orders, events, shop["customers"], now)
        assert _pairs(updater.memberships()) == _pairs(full), hours
    changes = pd.concat(moved)
    assert len(changes) > 20  # customers did leave windows and reach delays on the way
    entered = set(changes.loc[changes["change"] == "enter", "segment"])
    assert {"lapsed_30d", "lapsed_90d"} <= entered
