"""Journeys: flow files with located errors, the engine's steps, exits and re-entry, frequency caps
with priorities, quiet hours, consent, unsubscribes, holdouts, idempotent runs on a data home, and
the command line's queue contract."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from personalizer.config import Settings
from personalizer.data.importer import import_path
from personalizer.experiments import in_holdout
from personalizer.journeys.caps import FrequencyCaps, busiest_window
from personalizer.journeys.cli import app
from personalizer.journeys.definitions import (
    Caps,
    FlowDefinitionError,
    FlowSet,
    default_flows,
    parse_duration,
    parse_flows,
)
from personalizer.journeys.engine import QUEUE_COLUMNS, Decided, Engine
from personalizer.journeys.queue import JourneyStore, store_path
from personalizer.journeys.runs import run_journeys
from personalizer.journeys.send_time import local_hours
from personalizer.journeys.timeline import build_timeline, seconds
from personalizer.segments.store import record_evaluation, segments_dir

runner = CliRunner()
T0 = pd.Timestamp("2026-03-02 12:00")  # a Monday, noon UTC
HOUR, DAY = pd.Timedelta(hours=1), pd.Timedelta(days=1)


# --------------------------------------------------------------------------------- helpers
def customers(*ids: str, zone: str = "UTC", consent: bool = True) -> list[dict[str, Any]]:
    return [
        {
            "customer_id": c,
            "timezone": zone,
            "email_consent": consent,
            "signed_up_at": pd.Timestamp("2025-01-01"),
        }
        for c in ids
    ]


_seq = iter(range(10**9))


def event(customer: str, kind: str, at: pd.Timestamp, product: str | None = "p1") -> dict:
    return {
        "event_id": f"e{next(_seq)}",
        "customer_id": customer,
        "type": kind,
        "occurred_at": at,
        "product_id": product,
    }


def order(customer: str, at: pd.Timestamp, order_id: str, product: str = "p2") -> dict:
    return {
        "customer_id": customer,
        "order_id": order_id,
        "product_id": product,
        "quantity": 1.0,
        "unit_price": 10.0,
        "ordered_at": at,
    }


def frames(
    people: list[dict],
    events: list[dict],
    orders: list[dict] = (),  # type: ignore[assignment]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    c = pd.DataFrame(people)
    e = pd.DataFrame(
        events, columns=["event_id", "customer_id", "type", "occurred_at", "product_id"]
    )
    o = pd.DataFrame(
        orders,
        columns=["customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"],
    )
    e["occurred_at"] = pd.to_datetime(e["occurred_at"])
    o["ordered_at"] = pd.to_datetime(o["ordered_at"])
    return c, o, e


def simulate(
    flows: FlowSet,
    people: list[dict],
    events: list[dict],
    orders: list[dict] = (),  # type: ignore[assignment]
    *,
    moments: list[pd.Timestamp],
    start: pd.Timestamp = T0 - DAY,
) -> pd.DataFrame:
    """Run the engine at each moment (in memory) and return every step decided."""
    c, o, e = frames(people, events, orders)
    engine = Engine(flows, build_timeline(c, o, e))
    state = engine.new_state()
    since = int(seconds([start])[0])
    parts = []
    for moment in moments:
        now = int(seconds([moment])[0])
        decided, _ = engine.advance(state, since, now)
        parts.append(decided)
        since = now
    return engine.decisions_frame(Decided.concat(parts))


def hourly(start: pd.Timestamp, hours: int) -> list[pd.Timestamp]:
    return [start + HOUR * k for k in range(1, hours + 1)]


def only(flow: str) -> FlowSet:
    """The shipped flows with one kept, no caps."""
    flows = default_flows()
    kept = [f for f in flows.flows if f.name == flow]
    return flows.model_copy(update={"flows": kept, "caps": Caps(per_week=None, per_day=None)})


def make_home(root: Path, people: list[dict], events: list[dict], orders: list[dict]) -> Settings:
    """A data home whose warehouse holds these rows (imported as feeds)."""
    feeds = root / "feeds"
    feeds.mkdir(parents=True)
    c, o, e = frames(people, events, orders)
    c.to_parquet(feeds / "customers.parquet", index=False)
    if len(o):
        o.to_parquet(feeds / "orders.parquet", index=False)
    if len(e):
        e.assign(properties="{}").to_parquet(feeds / "events.parquet", index=False)
    settings = Settings(home=root / "home", show_progress=False)
    import_path(settings, feeds)
    return settings


# ---------------------------------------------------------------------------- flow files
VALID = """\
caps: {per_week: 2}
flows:
  - name: nudge
    priority: 1
    trigger: {event: add_to_cart}
    exit: {event: order}
    steps:
      - wait: 1h
        template: cart_reminder
"""


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        ("wait: 1h", "wait: 1 fortnight", 8, "steps.0.wait: bad duration '1 fortnight'"),
        ("template: cart_reminder", "template: cart_remindr", 9, "unknown template 'cart_remindr'"),
        ("{event: add_to_cart}", "{segment_entry: vipp}", 5, "unknown segment 'vipp'"),
        ("{event: add_to_cart}", "{event: add_to_bag}", 5, "unknown event type 'add_to_bag'"),
        ("exit: {event: order}", "exit: {event: order, when: now}", 6, "unknown field 'when'"),
        ("priority: 1", "priority: first", 4, "priority: Input should be a valid integer"),
        ("caps: {per_week: 2}", "caps: {per_week: 0}", 1, "caps.per_week"),
        ("    steps:", "    re_entry: sometimes\n    steps:", 7, "bad re_entry 'sometimes'"),
    ],
)
def test_a_bad_flow_file_names_the_file_line_field_and_value(
    old: str, new: str, line: int, reason: str
) -> None:
    with pytest.raises(FlowDefinitionError) as caught:
        parse_flows(VALID.replace(old, new), "mine.yaml")
    assert caught.value.line == line, caught.value
    assert reason in caught.value.reason, caught.value
    assert str(caught.value).startswith(f"mine.yaml:{line}: ")


def test_duplicate_flows_steps_and_moments_going_back_are_errors() -> None:
    twice = VALID + VALID.split("flows:\n", 1)[1]
    with pytest.raises(FlowDefinitionError, match=r"defined twice \(lines 3 and 10\)"):
        parse_flows(twice)
    backwards = VALID.replace(
        "      - wait: 1h\n",
        "      - after_entry: 2d\n        template: welcome\n      - after_entry: 1d\n",
    )
    with pytest.raises(
        FlowDefinitionError, match=r"after_entry 1d is before the previous step's moment \(2d\)"
    ):
        parse_flows(backwards)
    with pytest.raises(FlowDefinitionError, match="YAML syntax error"):
        parse_flows("flows: [\n")


def test_durations_in_short_and_long_forms() -> None:
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("48 hours") == parse_duration("2d") == timedelta(days=2)
    assert parse_duration(0) == timedelta(0)
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("-1h")


def test_the_shipped_flows_load_with_the_issue_s_schedule() -> None:
    flows = {f.name: f for f in default_flows().enabled}
    assert list(flows) == [
        "cart_abandonment",
        "welcome",
        "browse_abandonment",
        "post_purchase",
        "win_back",
    ]
    assert flows["welcome"].offsets == [timedelta(0), timedelta(days=2), timedelta(days=5)]
    assert flows["cart_abandonment"].offsets == [timedelta(hours=1), timedelta(hours=24)]
    assert flows["win_back"].offsets == [timedelta(days=d) for d in (30, 60, 90)]
    for name in ("cart_abandonment", "browse_abandonment", "win_back"):
        assert [e.event for e in flows[name].exit] == ["order"], name
    incentives = [s.params["discount_percent"] for s in flows["win_back"].steps]
    assert incentives == sorted(incentives)
    assert len(set(incentives)) == 3


# ----------------------------------------------------------------------------- the engine
def test_cart_abandonment_reminds_at_1h_then_a_code_at_24h_and_an_order_exits() -> None:
    people = customers("a", "b")
    events = [event("a", "add_to_cart", T0), event("b", "add_to_cart", T0)]
    orders = [order("b", T0 + 3 * HOUR, "o1")]
    decided = simulate(only("cart_abandonment"), people, events, orders, moments=hourly(T0, 30))
    a = decided[decided["customer_id"] == "a"].set_index("step")
    assert list(a.index) == ["reminder", "discount"]
    assert (a["outcome"] == "queued").all()
    assert a.loc["reminder", "send_at"] == T0 + HOUR
    assert a.loc["discount", "send_at"] == T0 + 24 * HOUR
    params = json.loads(a.loc["discount", "params"])
    assert params["discount_code"] == "personal"
    assert params["discount_percent"] == 10
    assert "discount_code" not in json.loads(a.loc["reminder", "params"])
    b = decided[decided["customer_id"] == "b"]
    assert list(b["step"]) == ["reminder"]  # the order at 3 h ended the journey before 24 h


def test_a_missed_scheduler_catches_up_but_drops_steps_past_their_lateness() -> None:
    people = customers("a")
    events = [event("a", "add_to_cart", T0)]
    decided = simulate(
        only("cart_abandonment"), people, events, moments=[T0 + 10 * HOUR, T0 + 2 * DAY]
    )
    outcomes = dict(zip(decided["step"], decided["outcome"], strict=True))
    # the reminder (due 1 h) is 9 h late > 6 h allowed; the discount (24 h) 24 h late
    assert outcomes == {"reminder": "late", "discount": "late"}
    decided = simulate(
        only("cart_abandonment"), people, events, moments=[T0 + 5 * HOUR, T0 + 25 * HOUR]
    )
    assert list(decided["outcome"]) == ["queued", "queued"]
    assert list(decided["send_at"]) == [T0 + 5 * HOUR, T0 + 25 * HOUR]  # not in the past


def test_browse_abandonment_waits_48h_and_skips_customers_who_carted_since() -> None:
    people = customers("a", "b", "c")
    events = [
        event("a", "product_view", T0),
        event("b", "product_view", T0),
        event("b", "add_to_cart", T0 + 2 * HOUR),
        event("c", "product_view", T0),
    ]
    orders = [order("c", T0 + 20 * HOUR, "o1")]
    flows = only("browse_abandonment")
    decided = simulate(flows, people, events, orders, moments=hourly(T0, 60)).set_index(
        "customer_id"
    )
    assert decided.loc["a", "outcome"] == "queued"
    assert decided.loc["a", "due_at"] == T0 + 48 * HOUR
    assert decided.loc["a", "send_at"] >= T0 + 48 * HOUR  # the send-time hour comes after
    assert decided.loc["b", "outcome"] == "condition"
    assert "c" not in decided.index  # bought within 48 h


def test_win_back_at_30_60_90_days_with_growing_incentives_and_orders_restart_it() -> None:
    people = customers("a", "b")
    orders = [order("a", T0, "o1"), order("b", T0, "o2"), order("b", T0 + 45 * DAY, "o3")]
    moments = [T0 + DAY * d + HOUR for d in range(0, 140)]
    decided = simulate(only("win_back"), people, [], orders, moments=moments)
    a = decided[decided["customer_id"] == "a"]
    assert list(a["step"]) == ["day30", "day60", "day90"]
    assert (a["outcome"] == "queued").all()
    assert list(a["due_at"]) == [T0 + DAY * d for d in (30, 60, 90)]
    assert [json.loads(p)["discount_percent"] for p in a["params"]] == [10, 15, 20]
    b = decided[decided["customer_id"] == "b"]
    # day30 of the first order, then the order at day 45 restarts the clock: 75, 105, 135
    assert list(b["due_at"]) == [T0 + DAY * d for d in (30, 75, 105, 135)]
    assert list(b["step"]) == ["day30", "day30", "day60", "day90"]


def test_re_entry_rules_never_always_and_a_minimum_gap() -> None:
    people = customers("a")
    views = [event("a", "product_view", T0 + DAY * d) for d in (0, 1, 3, 9, 10)]
    text = """
flows:
  - {name: once, priority: 1, trigger: {event: product_view}, re_entry: never,
     steps: [{wait: 0, template: browse_reminder}]}
  - {name: weekly, priority: 2, trigger: {event: product_view}, re_entry: 7d,
     steps: [{wait: 0, template: browse_reminder}]}
  - {name: each, priority: 3, trigger: {event: product_view}, re_entry: always,
     steps: [{wait: 0, template: browse_reminder}, {wait: 2d, template: browse_reminder}]}
caps: {per_week: null, per_day: null}
"""
    decided = simulate(parse_flows(text), people, views, moments=hourly(T0, 24 * 14))
    entries = decided[decided["step_index"] == 0].groupby("flow")["due_at"].apply(list)
    assert entries["once"] == [T0]
    assert entries["weekly"] == [T0, T0 + 9 * DAY]
    # `always`: again once the previous journey (2 days long) has ended
    assert entries["each"] == [T0, T0 + 3 * DAY, T0 + 9 * DAY]


def test_caps_across_flows_keep_the_higher_priorities_and_record_the_rest() -> None:
    text = """
caps: {per_week: 2, per_day: null}
flows:
  - {name: first, priority: 1, trigger: {event: product_view}, steps: [{template: browse_reminder}]}
  - {name: third, priority: 3, trigger: {event: signup}, steps: [{template: welcome}]}
  - {name: second, priority: 2, trigger: {event: add_to_cart}, steps: [{template: cart_reminder}]}
  - {name: later, priority: 0, trigger: {event: page_view}, re_entry: always,
     steps: [{template: welcome}]}
"""
    people = customers("a")
    events = [
        event("a", "signup", T0),
        event("a", "add_to_cart", T0 + 10 * 60 * pd.Timedelta(seconds=1)),
        event("a", "product_view", T0 + 20 * 60 * pd.Timedelta(seconds=1)),
        event("a", "page_view", T0 + 3 * DAY),  # the most important flow, but the week is full
        event("a", "page_view", T0 + 8 * DAY),  # a new week
    ]
    flows = parse_flows(text)
    decided = simulate(flows, people, events, moments=[T0 + HOUR, T0 + 4 * DAY, T0 + 9 * DAY])
    outcome = dict(
        zip(
            decided["flow"] + "@" + decided["decided_at"].astype(str),
            decided["outcome"],
            strict=True,
        )
    )
    assert outcome == {
        f"first@{T0 + HOUR}": "queued",
        f"second@{T0 + HOUR}": "queued",
        f"third@{T0 + HOUR}": "capped",
        f"later@{T0 + 4 * DAY}": "capped",
        f"later@{T0 + 9 * DAY}": "queued",
    }
    sent = decided[decided["outcome"] == "queued"]
    assert busiest_window(sent["customer_id"].to_numpy(), seconds(sent["send_at"]), 7 * 86_400) <= 2


def test_a_cap_counts_sends_already_queued_for_later() -> None:
    caps = FrequencyCaps(Caps(per_week=2, per_day=1), {}, np.asarray(["UTC"], dtype=object))
    day = 86_400
    times = [10 * day, 12 * day]
    assert not caps.fits(0, times, 8 * day)  # the window [8, 15) would hold three
    assert caps.fits(0, times, 2 * day)
    assert caps.fits(0, [10 * day], 9 * day + 3600)  # another day
    assert not caps.fits(0, [10 * day + 3600], 10 * day + 7200)  # the same day


def test_quiet_hours_hold_for_a_customer_in_los_angeles_at_any_hour() -> None:
    zone = "America/Los_Angeles"
    people = customers(*(f"c{h:02d}" for h in range(24)), zone=zone)
    # one signup per UTC hour of a day: welcome day0 is due at once, day2 at the model's hour
    events = [event(f"c{h:02d}", "signup", T0 + h * HOUR) for h in range(24)]
    decided = simulate(only("welcome"), people, events, moments=hourly(T0, 24 * 6))
    assert len(decided) == 72
    assert (decided["outcome"] == "queued").all()
    hours = local_hours(np.full(len(decided), zone, dtype=object), seconds(decided["send_at"]))
    assert ((hours >= 7) & (hours < 22)).all(), sorted(set(hours))
    assert (decided["send_at"] >= decided["due_at"]).all()
    # a moment in the quiet hours moves to 09:00 local, not later
    shifted = decided[decided["send_at"] > decided["decided_at"]]
    assert len(shifted)
    assert set(local_hours(np.full(len(shifted), zone, object), seconds(shifted["send_at"]))) <= {
        9,
        10,
    }


def test_send_time_model_steps_go_at_the_customer_s_best_hour() -> None:
    text = """
caps: {per_week: null, per_day: null}
flows:
  - {name: daily, priority: 1, trigger: {event: product_view},
     steps: [{wait: 2d, send_time: model, template: browse_reminder}]}
  - {name: weekly, priority: 2, trigger: {event: product_view},
     steps: [{wait: 2d, send_time: model, send_within: 7d, template: browse_reminder}]}
"""
    zone = "Europe/Berlin"
    people = customers("known", "unknown", zone=zone)
    c, o, e = frames(people, [event(x, "product_view", T0) for x in ("known", "unknown")])
    # Friday 18:00 local for "known"; the shop's hour, Sunday 11:00, for the others
    hours = pd.DataFrame({"customer_id": ["known"], "hour_of_week": [4 * 24 + 18]})
    timeline = build_timeline(c, o, e, send_hours=hours, shop_hour=6 * 24 + 11)
    engine = Engine(parse_flows(text), timeline)
    state = engine.new_state()
    engine.advance(state, int(seconds([T0 - DAY])[0]), int(seconds([T0 + HOUR])[0]))
    due = T0 + 2 * DAY + HOUR  # Wednesday 14:00 local
    decided = engine.decisions_frame(engine.advance(state, 0, int(seconds([due])[0]))[0])
    local = decided.set_index(["flow", "customer_id"])["send_at"].dt.tz_localize("UTC")
    local = local.dt.tz_convert(zone)
    assert local[("daily", "known")] == pd.Timestamp("2026-03-04 18:00", tz=zone)  # same day
    assert local[("daily", "unknown")] == pd.Timestamp("2026-03-05 11:00", tz=zone)  # next day
    assert local[("weekly", "known")] == pd.Timestamp("2026-03-06 18:00", tz=zone)  # Friday
    assert local[("weekly", "unknown")] == pd.Timestamp("2026-03-08 11:00", tz=zone)  # Sunday


def test_real_time_events_of_the_event_store_start_journeys(tmp_path: Path) -> None:
    from personalizer.data.event_store import SqliteEventStore, ingest_events
    from personalizer.data.event_store import store_path as events_path

    settings = make_home(tmp_path, customers("a", "b"), [event("b", "add_to_cart", T0)], [])
    with SqliteEventStore(events_path(settings)) as store:
        fresh = [event("a", "add_to_cart", T0 + 5 * 60 * pd.Timedelta(seconds=1))]
        again = [{**event("b", "add_to_cart", T0), "event_id": "e-dup"}]
        result = ingest_events(store, [{**x, "properties": {}} for x in fresh + again])
        assert result.accepted == 2
    summary = run_journeys(settings, T0 + 2 * HOUR, only("cart_abandonment"))
    assert sorted(summary.queued["customer_id"]) == ["a", "b"]  # b once: same customer and moment
    assert summary.entered["cart_abandonment"] == 2


def test_no_consent_and_unsubscribes_get_nothing_and_an_unsubscribe_exits() -> None:
    people = customers("ok", "late", "gone", "back") + customers("no", consent=False)
    events = [event(c, "signup", T0) for c in ("ok", "no", "late", "back")]
    events += [
        event("late", "unsubscribe", T0 + 3 * DAY),  # after day0 and day2, before day5
        event("gone", "unsubscribe", T0 - DAY),
        event("gone", "add_to_cart", T0),
        event("back", "unsubscribe", T0 - 2 * DAY),  # signed up again since: subscribed
    ]
    flows = default_flows()
    flows = flows.model_copy(update={"caps": Caps(per_week=None, per_day=None)})
    decided = simulate(flows, people, events, moments=hourly(T0, 24 * 6))
    by = decided.groupby("customer_id")["outcome"].apply(list).to_dict()
    assert by["ok"] == ["queued"] * 3
    assert by["back"] == ["queued"] * 3
    assert by["no"] == ["no_consent"] * 3
    assert by["gone"] == ["unsubscribed"] * 2  # both cart steps
    assert by["late"] == ["queued", "queued"]  # day5 never comes: the unsubscribe exited


def test_held_out_customers_enter_are_recorded_and_get_nothing(tmp_path: Path) -> None:
    ids = [f"c{i:03d}" for i in range(200)]
    people = customers(*ids)
    events = [event(c, "add_to_cart", T0) for c in ids]
    flows = only("cart_abandonment")
    flows = flows.model_copy(
        update={"holdout": 0.2, "flows": [flows.flows[0].model_copy(update={"holdout": 0.25})]}
    )
    decided = simulate(flows, people, events, moments=hourly(T0, 30))
    held = {
        c for c in ids if in_holdout(c, 0.2, "global") or in_holdout(c, 0.25, "cart_abandonment")
    }
    assert 40 < len(held) < 120
    outcome = decided.groupby("customer_id")["outcome"].agg(set).to_dict()
    assert {c for c, o in outcome.items() if o == {"holdout"}} == held
    assert all(o == {"queued"} for c, o in outcome.items() if c not in held)
    # on a data home the journeys of held-out customers are stored, marked, with no queue row
    settings = make_home(tmp_path, people, events, [])
    run_journeys(settings, T0 + 2 * HOUR, flows)
    with JourneyStore(store_path(settings)) as store:
        journeys = pd.read_sql_query("SELECT customer_id, holdout FROM journeys", store.con)
        queue = store.queue()
        steps = pd.read_sql_query("SELECT customer_id, outcome FROM steps", store.con)
    assert len(journeys) == 200
    assert set(journeys.loc[journeys["holdout"] == 1, "customer_id"]) == held
    assert not held & set(queue["customer_id"])
    assert set(steps.loc[steps["outcome"] == "holdout", "customer_id"]) == held


def test_triggers_by_category_anniversary_and_fixed_date() -> None:
    text = """
caps: {per_week: null, per_day: null}
flows:
  - {name: tea, priority: 1, trigger: {event: product_view, category: tea},
     steps: [{template: browse_reminder}]}
  - {name: anniversary, priority: 2, trigger: {date: signed_up_at, every: year},
     steps: [{template: vip_offer}]}
  - {name: black_friday, priority: 3, trigger: {date: "2026-03-04 10:00"},
     steps: [{template: vip_offer}]}
"""
    people = customers("a", "b")
    people[0]["signed_up_at"] = pd.Timestamp("2024-03-03 15:00")
    people[1]["signed_up_at"] = pd.Timestamp("2026-03-05")  # after the fixed date
    c, o, e = frames(
        people, [event("a", "product_view", T0, "p1"), event("b", "product_view", T0, "p2")]
    )
    products = pd.DataFrame({"product_id": ["p1", "p2"], "category": ["tea", "coffee"]})
    engine = Engine(parse_flows(text), build_timeline(c, o, e, products=products))
    state = engine.new_state()
    since = int(seconds([T0 - DAY])[0])
    parts = []
    for moment in hourly(T0, 72):
        now = int(seconds([moment])[0])
        parts.append(engine.advance(state, since, now)[0])
        since = now
    decided = engine.decisions_frame(Decided.concat(parts))
    got = set(zip(decided["flow"], decided["customer_id"], decided["due_at"], strict=True))
    assert got == {
        ("tea", "a", T0),
        ("anniversary", "a", pd.Timestamp("2026-03-03 15:00")),
        ("black_friday", "a", pd.Timestamp("2026-03-04 10:00")),
    }


# -------------------------------------------------------------------------- runs on a home
@pytest.fixture
def shop_home(tmp_path: Path) -> Settings:
    people = customers("a", "b", "c") + customers("d", zone="America/Los_Angeles")
    events = [
        event("a", "add_to_cart", T0),
        event("b", "signup", T0 + 30 * pd.Timedelta(minutes=1)),
        event("c", "product_view", T0 - 49 * HOUR),
        event("d", "add_to_cart", T0 + 2 * HOUR),
    ]
    orders = [order("c", T0 - 40 * DAY, "o1")]
    return make_home(tmp_path, people, events, orders)


def test_a_run_twice_at_one_moment_queues_nothing_twice_and_a_later_one_catches_up(
    shop_home: Settings,
) -> None:
    first = run_journeys(shop_home, T0 + 2 * HOUR)
    assert set(zip(first.queued["customer_id"], first.queued["step"], strict=True)) == {
        ("a", "reminder"),
        ("b", "day0"),
        ("c", "reminder"),  # the browse reminder of a view 3 days ago, due 1 day ago (on time)
    }
    assert list(first.queued.columns) == [*QUEUE_COLUMNS, "params"]
    again = run_journeys(shop_home, T0 + 2 * HOUR)
    assert again.queued.empty
    assert again.decided.empty
    later = run_journeys(shop_home, T0 + 30 * HOUR)  # the scheduler missed 27 hours
    got = later.decided.set_index(["customer_id", "step"])["outcome"].to_dict()
    assert got == {
        ("a", "discount"): "queued",
        ("d", "reminder"): "late",  # due at 3 h: 27 h late, the cart allows 6 h
        ("d", "discount"): "queued",  # due at 26 h: 4 h late
    }
    with JourneyStore(store_path(shop_home)) as store:
        queue = store.queue()
    assert len(queue) == 5
    assert not queue.duplicated(["customer_id", "flow", "step"]).any()
    # decision ids are the decision service's for that campaign, template and day
    from personalizer.decisions.decider import make_decision_id

    row = queue[queue["customer_id"] == "a"].iloc[0]
    assert row["decision_id"] == make_decision_id(
        "a", f"{row['flow']}.{row['step']}", row["template"], row["send_at"]
    )
    with pytest.raises(ValueError, match="before the latest run"):
        run_journeys(shop_home, T0)


def test_two_schedulers_at_once_queue_each_email_once(shop_home: Settings) -> None:
    import subprocess
    import sys

    code = "from personalizer.journeys.cli import app; app()"
    args = ["run", "--now", str(T0 + 2 * HOUR), "--home", str(shop_home.home)]
    runs = [subprocess.Popen([sys.executable, "-c", code, *args]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in runs] == [0, 0]
    with JourneyStore(store_path(shop_home)) as store:
        queued = sorted(r[0] for r in store.con.execute("SELECT queued FROM runs"))
        rows = store.con.execute("SELECT count(*) FROM queue").fetchone()[0]
    assert queued == [0, 3]  # one after the other: the second saw the first's state
    assert rows == 3


def test_segment_entries_from_the_membership_history_trigger_a_flow(tmp_path: Path) -> None:
    people = customers("a", "b")
    settings = make_home(tmp_path, people, [event("a", "page_view", T0 - 5 * DAY)], [])
    members = pd.DataFrame({"customer_id": ["a"], "segment": ["vip"]})
    record_evaluation(segments_dir(settings), members, T0 - DAY, ["vip"])
    record_evaluation(segments_dir(settings), members.iloc[:0], T0 - 12 * HOUR, ["vip"])
    text = """
caps: {per_week: null, per_day: null}
flows:
  - name: vip_welcome
    priority: 1
    trigger: {segment_entry: vip}
    exit: {segment_exit: vip}
    steps:
      - {wait: 1h, template: vip_offer, condition: {in_segment: vip}}
      - {wait: 1d, template: vip_offer}
"""
    summary = run_journeys(settings, T0, parse_flows(text))
    # entered a day ago; step 1 at -23 h (a member then), step 2 at +1 h, after leaving at -12 h
    decided = summary.decided
    assert list(zip(decided["customer_id"], decided["step"], decided["outcome"], strict=True)) == [
        ("a", "step1", "queued")
    ]
    assert summary.exited == {("vip_welcome", "segment_exit:vip"): 1}


# ----------------------------------------------------------------------------- command line
def test_the_command_line_runs_writes_the_contract_and_reads_the_queue(
    shop_home: Settings, tmp_path: Path
) -> None:
    home = ["--home", str(shop_home.home)]
    out = tmp_path / "queued.csv"
    result = runner.invoke(app, ["run", "--now", str(T0 + 2 * HOUR), "--out", str(out), *home])
    assert result.exit_code == 0, result.output
    assert "3 emails queued" in result.output
    written = pd.read_csv(out)
    assert list(written.columns) == [*QUEUE_COLUMNS, "params"]
    assert len(written) == 3
    parquet = tmp_path / "later.parquet"
    result = runner.invoke(
        app, ["run", "--now", "2026-03-03T20:00:00+02:00", "--out", str(parquet), *home]
    )
    assert result.exit_code == 0, result.output
    assert list(pd.read_parquet(parquet).columns) == [*QUEUE_COLUMNS, "params"]
    result = runner.invoke(
        app, ["queue", "--since", "2026-03-03 18:00", "--out", str(tmp_path / "q.csv"), *home]
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "q.csv")) == len(pd.read_parquet(parquet))
    result = runner.invoke(app, ["run", "--now", "yesterday-ish", *home])
    assert result.exit_code == 2
    assert "--now: not a timestamp: 'yesterday-ish'" in result.output


def test_validate_reports_the_line_of_a_bad_flow_file(tmp_path: Path) -> None:
    good = tmp_path / "flows.yaml"
    good.write_text(VALID)
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "1 flows OK" in result.output
    assert "nudge: priority 1, step1 +1h" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("template: cart_reminder", "template: cart_remindr"))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:9:" in result.output.replace("\n", "")
    assert "cart_remindr" in result.output
