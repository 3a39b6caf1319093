"""Send time: known answers on hand-made customers, shrinkage, local time (DST included), quiet
hours, persistence, input errors, then the planted hours of the synthetic shop and the next-order
proxy on Online Retail (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import dataset
from personalizer.data.adapters import online_retail
from personalizer.data.synthetic import ShopConfig, generate_shop
from personalizer.evaluation.send_time import (
    circular_distance,
    next_order_hits,
    planted_recovery,
)
from personalizer.features.engagement_times import hour_of_week, machine_opens
from personalizer.models.send_time import SendTimeModel

NO_ORDERS = pd.DataFrame(
    {"customer_id": pd.Series([], dtype=object), "ordered_at": pd.Series([], dtype="M8[us]")}
)
HUMAN = json.dumps({"user_agent": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook)"})
MPP = json.dumps({"user_agent": "Mozilla/5.0"})


def local_to_utc(stamps: list[str] | pd.DatetimeIndex, zone: str) -> pd.DatetimeIndex:
    """Naive UTC of local wall-clock times in `zone`."""
    return pd.DatetimeIndex(stamps).tz_localize(zone).tz_convert("UTC").tz_localize(None)


def weekly(first_local: str, weeks: int, zone: str = "UTC") -> pd.DatetimeIndex:
    """The same local day and time, `weeks` weeks in a row, as naive UTC."""
    return local_to_utc(pd.date_range(first_local, periods=weeks, freq="7D"), zone)


def opens(
    customer: str, at: pd.DatetimeIndex, kind: str = "email_open", **extra: object
) -> pd.DataFrame:
    n = len(at)
    return pd.DataFrame(
        {
            "event_id": [f"{customer}-{kind}-{i}-{extra}" for i in range(n)],
            "customer_id": customer,
            "type": kind,
            "occurred_at": at,
            "campaign_id": [f"k{i}" for i in range(n)],
            "properties": extra.get("properties", HUMAN),
        }
    )


def background(n: int = 50, local: str = "2024-01-04 19:10") -> pd.DataFrame:
    """`n` customers in UTC opening five emails each on Thursdays around 19:00: the shop's habit."""
    return pd.concat([opens(f"bg{i}", weekly(local, 5)) for i in range(n)], ignore_index=True)


# --- known answers ----------------------------------------------------------------------------


def test_a_customer_who_always_opens_on_tuesday_at_nine_gets_tuesday_nine() -> None:
    at = weekly("2024-01-02 09:10", 8, "America/New_York")  # Tuesdays, 09:10 in New York
    events = pd.concat(
        [background(), opens("ny", at), opens("ny", at[:3], "email_click"), opens("ny2", at[:6])]
    )
    customers = pd.DataFrame({"customer_id": ["ny", "ny2"], "timezone": ["America/New_York"] * 2})
    model = SendTimeModel(segment_by=None).fit(events, NO_ORDERS, customers)
    best = model.best_hour(["ny", "ny2", "stranger"]).set_index("customer_id")
    assert best.loc["ny", "hour_of_week"] == best.loc["ny2", "hour_of_week"] == 24 + 9
    assert best.loc["stranger", "hour_of_week"] == 3 * 24 + 19  # the shop's habit
    assert best.loc["ny", "confidence"] > best.loc["ny2", "confidence"] > 0.3  # more evidence
    prefs = model.preferences(["ny", "stranger"])
    assert prefs.shape == (2, 168)
    np.testing.assert_allclose(prefs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(prefs[1], model.shop_pattern_, rtol=1e-5)
    assert model.signal_counts(["ny"]).iloc[0].to_dict() == {
        "email_click": 3,
        "email_open": 8,
        "order": 0,
        "site_visit": 0,
    }


def test_one_event_stays_near_the_prior_many_events_follow_the_customer() -> None:
    monday_3am = weekly("2024-01-01 03:20", 40)
    events = pd.concat([background(), opens("one", monday_3am[:1]), opens("many", monday_3am)])
    model = SendTimeModel(segment_by=None).fit(events, NO_ORDERS)
    best = model.best_hour(["one", "many"]).set_index("customer_id")["hour_of_week"]
    assert best["one"] == 3 * 24 + 19
    assert best["many"] == 3
    one, many, prior = model.preferences(["one", "many", "stranger"])
    assert np.abs(one - prior).sum() < np.abs(many - prior).sum()
    assert prior[3] < one[3] < many[3]
    # a Dirichlet posterior: one open of weight 1 against a prior of strength 5
    assert np.abs(one - prior).sum() <= 2 / 6 + 1e-6


def test_the_segment_prior_sits_between_the_customer_and_the_shop() -> None:
    morning = pd.concat(
        [opens(f"es{i}", weekly("2024-01-03 08:10", 5)) for i in range(40)], ignore_index=True
    )
    events = pd.concat([background(), morning, opens("newcomer", weekly("2024-01-05 14:00", 1))])
    countries = ["GB"] * 50 + ["ES"] * 40 + ["ES"]
    ids = [f"bg{i}" for i in range(50)] + [f"es{i}" for i in range(40)] + ["newcomer"]
    customers = pd.DataFrame({"customer_id": ids, "country": countries})
    model = SendTimeModel().fit(events, NO_ORDERS, customers)
    best = model.best_hour(["newcomer", "bg0", "stranger"]).set_index("customer_id")
    assert best.loc["newcomer", "hour_of_week"] % 24 == 8  # the Spanish morning habit
    assert best.loc["bg0", "hour_of_week"] % 24 == 19
    assert best.loc["stranger", "hour_of_week"] % 24 in (8, 19)  # the shop: one of the two


def test_purchases_and_visits_speak_when_there_is_no_email_history() -> None:
    at = weekly("2024-01-06 14:05", 12)  # Saturdays 14:05
    orders = pd.DataFrame(
        {
            "customer_id": "buyer",
            "order_id": np.repeat([f"o{i}" for i in range(12)], 3),  # three lines per order
            "ordered_at": np.repeat(at, 3),
        }
    )
    visits = pd.concat([opens("buyer", at + pd.Timedelta(minutes=m), "page_view") for m in (1, 2)])
    model = SendTimeModel(segment_by=None).fit(pd.concat([background(), visits]), orders)
    assert model.best_hour(["buyer"])["hour_of_week"].iat[0] == 5 * 24 + 14
    counts = model.signal_counts(["buyer"]).iloc[0]
    assert counts["order"] == 12  # an order counts once, whatever its lines
    assert counts["site_visit"] == 12  # one visit per hour, however many pages


def test_machine_opens_are_ignored_and_repeat_opens_count_once() -> None:
    night = opens("mpp", weekly("2024-01-01 02:01", 20), properties=MPP)
    evening = opens("mpp", weekly("2024-01-02 16:30", 8))
    again = evening.assign(occurred_at=evening["occurred_at"] + pd.Timedelta(days=1))
    events = pd.concat([background(), night, evening, again], ignore_index=True)
    model = SendTimeModel(segment_by=None).fit(events, NO_ORDERS)
    assert model.best_hour(["mpp"])["hour_of_week"].iat[0] % 24 == 16
    assert model.signal_counts(["mpp"])["email_open"].iat[0] == 8

    flagged = pd.DataFrame(
        {
            "type": ["email_open"] * 4 + ["page_view"],
            "properties": [
                MPP,
                HUMAN,
                {"user_agent": "Mozilla/5.0"},
                '{"machine_open": true}',
                MPP,
            ],
        }
    )
    assert machine_opens(flagged).tolist() == [True, False, True, True, False]


# --- local time -------------------------------------------------------------------------------


def test_hour_of_week_is_local_and_follows_daylight_saving() -> None:
    at = ["2024-01-08 12:00", "2024-07-08 12:00"] * 3 + ["2024-01-08 12:00"]
    zones = ["Europe/London"] * 2 + ["Asia/Kolkata"] * 2 + [None, "Not/AZone", "America/New_York"]
    assert hour_of_week(pd.to_datetime(at), zones).tolist() == [12, 13, 17, 17, 12, 12, 7]
    aware = pd.Series([pd.Timestamp("2024-01-08 12:00", tz="Europe/Berlin")])
    assert hour_of_week(aware).tolist() == [11]
    sunday_late = hour_of_week(pd.to_datetime(["2024-01-08 03:00"]), ["America/Los_Angeles"])
    assert sunday_late.tolist() == [6 * 24 + 19]  # Sunday 19:00 in Los Angeles


def test_a_local_habit_stays_one_hour_across_the_dst_change() -> None:
    # Wednesdays 08:15 in New York from February to May: 13:15 UTC, then 12:15 UTC after 10 March.
    at = weekly("2024-02-07 08:15", 14, "America/New_York")
    assert set(at.hour) == {12, 13}
    customers = pd.DataFrame({"customer_id": ["ny"], "timezone": ["America/New_York"]})
    model = SendTimeModel(segment_by=None).fit(opens("ny", at), NO_ORDERS, customers)
    row = model.counts_[0].toarray().ravel()
    assert np.flatnonzero(row).tolist() == [2 * 24 + 8]
    assert model.best_hour(["ny"])["hour_of_week"].iat[0] == 2 * 24 + 8


# --- quiet hours and the send moment ----------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "Europe/Berlin"]


@pytest.fixture(scope="module")
def night_owls() -> tuple[SendTimeModel, pd.DataFrame]:
    """Customers in five zones who open at 23:10 or 03:10 local, on Fridays."""
    frames, rows = [], []
    for z, zone in enumerate(ZONES):
        for hour in (23, 3):
            customer = f"{z}-{hour}"
            frames.append(opens(customer, weekly(f"2024-01-05 {hour:02d}:10", 10, zone)))
            rows.append((customer, zone))
    customers = pd.DataFrame(rows, columns=["customer_id", "timezone"])
    events = pd.concat([background(), *frames], ignore_index=True)
    return SendTimeModel(segment_by=None).fit(events, NO_ORDERS, customers), customers


@pytest.mark.parametrize("after", ["2024-03-30 21:40", "2024-10-26 05:00", "2025-06-01 12:00"])
def test_next_send_time_never_falls_in_local_quiet_hours(
    night_owls: tuple[SendTimeModel, pd.DataFrame], after: str
) -> None:
    model, customers = night_owls
    ids = [*customers["customer_id"], "stranger"]
    zones = [*customers["timezone"], "UTC"]
    plan = model.next_send_time(ids, after=after, window_hours=168, quiet_hours=(22, 7))
    start = pd.Timestamp(after)
    assert plan["send_at"].notna().all()
    assert (plan["send_at"] >= start).all()
    assert (plan["send_at"] < start + pd.Timedelta(hours=168)).all()
    local = hour_of_week(plan["send_at"], zones)
    assert (local == plan["hour_of_week"].to_numpy()).all()
    assert not np.isin(local % 24, [22, 23, 0, 1, 2, 3, 4, 5, 6]).any()
    # 23:00 is next to 21:00, which is allowed; 03:00 is far from it: the shop's habit instead
    chosen = dict(zip(ids, local % 24, strict=True))
    for z in range(len(ZONES)):
        assert chosen[f"{z}-23"] == 21
        assert chosen[f"{z}-3"] == 19
    kolkata = plan.loc[plan["customer_id"].str.startswith("2-"), "send_at"]
    assert (kolkata.dt.minute == 30).all()  # the start of a local hour in a +05:30 zone
    assert plan["confidence"].between(0, 1).all()


def test_best_hour_respects_quiet_hours_and_a_window_of_quiet_hours_gives_none(
    night_owls: tuple[SendTimeModel, pd.DataFrame],
) -> None:
    model, _ = night_owls
    free = model.best_hour(["0-23"])["hour_of_week"].iat[0]
    quiet = model.best_hour(["0-23"], quiet_hours=(22, 7))["hour_of_week"].iat[0]
    assert free % 24 == 23
    assert quiet % 24 == 21
    plan = model.next_send_time(["0-23"], after="2024-03-05 23:00", window_hours=3)
    assert plan["send_at"].isna().all()
    assert plan["hour_of_week"].isna().all()
    assert plan["confidence"].iat[0] == 0.0
    nearest = model.next_send_time(["0-23"], after="2024-03-05 23:00", window_hours=9)
    assert nearest["send_at"].iat[0] == pd.Timestamp("2024-03-06 07:00")


# --- persistence and errors -------------------------------------------------------------------


def test_save_and_load_give_the_same_answers(
    night_owls: tuple[SendTimeModel, pd.DataFrame], tmp_path: Path
) -> None:
    model, customers = night_owls
    model.save(tmp_path / "send_time")
    assert sorted(p.name for p in (tmp_path / "send_time").iterdir()) == [
        "send_time.json",
        "send_time.npz",
    ]
    loaded = SendTimeModel.load(tmp_path / "send_time")
    ids = [*customers["customer_id"], "stranger"]
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.preferences(ids), model.preferences(ids))
    pd.testing.assert_frame_equal(loaded.best_hour(ids), model.best_hour(ids))
    after = "2024-05-01 08:00"
    pd.testing.assert_frame_equal(
        loaded.next_send_time(ids, after=after), model.next_send_time(ids, after=after)
    )


def test_unfitted_model_and_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        SendTimeModel().best_hour(["a"])
    (tmp_path / "send_time.json").write_text(json.dumps({"model": "Other", "format_version": 1}))
    with pytest.raises(ValueError, match="Other"):
        SendTimeModel.load(tmp_path)


EVENTS = opens("a", weekly("2024-01-01 10:00", 2))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: SendTimeModel().fit(None, NO_ORDERS.drop(columns="ordered_at")), "ordered_at"),
        (
            lambda: SendTimeModel().fit(
                None, pd.DataFrame({"customer_id": ["a"], "ordered_at": ["soon"]})
            ),
            "orders.ordered_at",
        ),
        (lambda: SendTimeModel().fit(EVENTS.drop(columns="type"), NO_ORDERS), "type"),
        (
            lambda: SendTimeModel().fit(
                EVENTS, NO_ORDERS, pd.DataFrame({"customer_id": ["a"], "timezone": ["UTC"]})
            ),
            "country",
        ),
        (lambda: SendTimeModel(weights={"sms": 1.0}).fit(EVENTS, NO_ORDERS), "weights"),
        (lambda: SendTimeModel(prior_strength=-1).fit(EVENTS, NO_ORDERS), "prior_strength"),
        (lambda: SendTimeModel().fit(None, NO_ORDERS), "orders"),
        (
            lambda: SendTimeModel().fit(EVENTS, NO_ORDERS).next_send_time(["a"], "2024", 0),
            "window_hours",
        ),
        (
            lambda: SendTimeModel().fit(EVENTS, NO_ORDERS).best_hour(["a"], quiet_hours=(25, 3)),
            "quiet_hours",
        ),
        (lambda: SendTimeModel().fit(EVENTS, NO_ORDERS).best_hour("a"), "customer_ids"),
    ],
)
def test_bad_input_errors_name_the_field(call: object, field: str) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        call()  # type: ignore[operator]


# --- the synthetic shop: planted preferred hours ----------------------------------------------

SHOP = ShopConfig(n_customers=2000, seed=5, campaign_every_days=7, chunk_size=1000)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("send_time_shop")
    generate_shop(SHOP, out)
    frames = {name: pd.read_parquet(out / f"{name}.parquet") for name in ("customers",)}
    for name in ("orders", "events"):
        parts = sorted((out / name).glob("part-*.parquet"))
        frames[name] = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    frames["truth"] = pd.read_parquet(out / "truth" / "customers.parquet")
    return frames


def test_synthetic_shop_planted_hours_are_recovered(shop: dict[str, pd.DataFrame]) -> None:
    model = SendTimeModel().fit(shop["events"], shop["orders"], shop["customers"])
    figures = planted_recovery(model, shop["truth"], min_events=3)
    print("\nsend time, synthetic shop (≥3 human opens or clicks):", _rounded(figures))
    assert figures["customers"] >= 300
    # The readers open at their preferred time of day whatever the day: that is recovered ...
    assert figures["model/time_of_day_hit"] >= 0.8
    assert figures["model/time_of_day_hit"] >= 2.5 * figures["global/time_of_day_hit"]
    # ... and the day, which the simulation barely reveals, still far better than one hour.
    assert figures["model/hour_of_week_hit"] >= 3 * figures["global/hour_of_week_hit"]

    # Customers with no email history at all still get a send time, near the shop's pattern.
    silent = model.best_hour(["nobody"])
    assert 0 <= silent["hour_of_week"].iat[0] < 168


def test_coded_events_give_the_same_model_as_text_events(shop: dict[str, pd.DataFrame]) -> None:
    # Training reads events with their text columns as categoricals (see data/training.py).
    events = shop["events"]
    coded = events.assign(
        **{c: events[c].astype("category") for c in ("customer_id", "type", "campaign_id")}
    )
    assert isinstance(coded["type"].dtype, pd.CategoricalDtype)
    text = SendTimeModel().fit(events, shop["orders"], shop["customers"])
    model = SendTimeModel().fit(coded, shop["orders"], shop["customers"])
    assert (model.counts_ != text.counts_).nnz == 0
    np.testing.assert_array_equal(model.customer_ids_, text.customer_ids_)
    np.testing.assert_array_equal(model.signal_counts_, text.signal_counts_)
    ids = pd.Series(text.customer_ids_[:200])
    pd.testing.assert_frame_equal(model.best_hour(ids), text.best_hour(ids))


def test_more_email_history_means_more_confidence(shop: dict[str, pd.DataFrame]) -> None:
    model = SendTimeModel().fit(shop["events"], shop["orders"], shop["customers"])
    ids = shop["truth"]["customer_id"]
    email = model.signal_counts(ids)[["email_click", "email_open"]].sum(axis=1)
    confidence = model.best_hour(ids)["confidence"]
    by_history = confidence.groupby(np.minimum(email, 6)).mean()
    assert by_history.is_monotonic_increasing, by_history
    planted = shop["truth"]["preferred_hour_of_week"].to_numpy()
    chosen = model.best_hour(ids)["hour_of_week"].to_numpy()
    hit = circular_distance(chosen % 24, planted % 24, 24) <= 1
    sure = confidence.to_numpy() > np.median(confidence)
    assert hit[sure].mean() > hit[~sure].mean()


# --- Online Retail: the next order's hour (slow) ----------------------------------------------


@pytest.mark.slow
def test_online_retail_next_order_hour_beats_the_shop_wide_best_hour() -> None:
    tables = {
        name: frames[0]
        for name, frames, _ in online_retail.read(
            dataset("online_retail", "online_retail.parquet"), 100_000
        )
    }
    orders = tables["orders"][tables["orders"]["_error"].isna()]
    # InvoiceDate is the UK shop's own clock and there are no customer time zones: read as UTC;
    # the customers' country is the segment.
    customers = tables["customers"][["customer_id", "country"]]
    figures = next_order_hits(orders, "2011-09-01", customers=customers)
    print("\nsend time, Online Retail next order after 2011-09-01:", _rounded(figures))
    assert figures["customers"] > 1_500
    assert figures["model/time_of_day_hit"] > figures["global/time_of_day_hit"]
    assert figures["model/hour_of_week_hit"] > figures["global/hour_of_week_hit"]
    assert figures["confident_half/time_of_day_hit"] > figures["other_half/time_of_day_hit"]


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in figures.items()}
