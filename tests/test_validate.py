"""Vectorised validation: every quarantine reason, typed output, and agreement with pydantic."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from personalizer.data.validate import FeedError, check_header, validate_frame
from personalizer.schema import OrderLine

GOOD_ORDER = {
    "customer_id": "c1",
    "order_id": "o1",
    "product_id": "p1",
    "quantity": "2",
    "unit_price": "9.99",
    "ordered_at": "2024-05-01T12:30:00Z",
}


def one(table: str, **row: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    checked = validate_frame(table, pd.DataFrame([row]))
    return checked.good, checked.bad


def test_good_order_comes_out_typed() -> None:
    good, bad = one("orders", **GOOD_ORDER)
    assert bad.empty
    row = good.iloc[0]
    assert row["quantity"] == 2.0
    assert row["unit_price"] == pytest.approx(9.99)
    assert row["ordered_at"] == pd.Timestamp("2024-05-01 12:30:00")
    assert good["ordered_at"].dt.tz is None


@pytest.mark.parametrize(
    ("table", "change", "reason"),
    [
        ("orders", {"customer_id": ""}, "customer_id: missing"),
        ("orders", {"order_id": None}, "order_id: missing"),
        ("orders", {"quantity": "two"}, "quantity: not a number"),
        ("orders", {"quantity": "inf"}, "quantity: not finite"),
        ("orders", {"quantity": "0"}, "quantity: must be > 0"),
        ("orders", {"unit_price": "-1"}, "unit_price: must be >= 0"),
        ("orders", {"ordered_at": "yesterday-ish"}, "ordered_at: unparsable date"),
        ("orders", {"ordered_at": "1850-01-01"}, "ordered_at: date out of range"),
        ("orders", {"line_no": "1.5"}, "line_no: not an integer"),
    ],
)
def test_each_order_reason_is_named_with_field_and_value(
    table: str, change: dict[str, object], reason: str
) -> None:
    good, bad = one(table, **{**GOOD_ORDER, **change})
    assert good.empty
    assert f"{bad['field'].iat[0]}: {bad['reason'].iat[0]}" == reason
    field, value = next(iter(change.items()))
    if value not in ("", None):
        assert bad["value"].iat[0] == str(value)
    assert bad[field].iat[0] == value  # the original row is kept as read


def test_event_reasons() -> None:
    base = {
        "event_id": "e1",
        "customer_id": "c1",
        "type": "email_open",
        "occurred_at": "2024-01-01",
    }
    assert one("events", **base)[1].empty
    _, bad = one("events", **{**base, "type": "teleport"})
    assert bad["reason"].iat[0] == "unknown event type"
    _, bad = one("events", **{**base, "properties": "[1, 2]"})
    assert (bad["field"].iat[0], bad["reason"].iat[0]) == ("properties", "not a JSON object")
    good, _ = one("events", **{**base, "type": " Email_Open ", "properties": {"a": 1}})
    assert good["type"].iat[0] == "email_open"
    assert good["properties"].iat[0] == '{"a":1}'


def test_customer_reasons_and_free_attributes() -> None:
    base = {"customer_id": "c1", "email": "x@example.com", "loyalty_tier": "gold"}
    good, bad = one("customers", **base)
    assert bad.empty
    assert json.loads(good["attributes"].iat[0]) == {"loyalty_tier": "gold"}
    assert not good["email_consent"].iat[0]  # no consent unless the feed says so
    for change, reason in [
        ({"email": "not-an-address"}, "not an email address"),
        ({"timezone": "Mars/Base"}, "unknown time zone"),
        ({"email_consent": "perhaps"}, "not a boolean"),
        ({"signed_up_at": "32/13/2024"}, "unparsable date"),
    ]:
        _, bad = one("customers", **{**base, **change})
        assert bad["reason"].iat[0] == reason, change


def test_booleans_accept_common_spellings() -> None:
    frame = pd.DataFrame(
        {"customer_id": list("abcdef"), "email_consent": ["true", "Yes", "1", "false", "N", None]}
    )
    checked = validate_frame("customers", frame)
    assert checked.good["email_consent"].tolist() == [True, True, True, False, False, False]


def test_ids_read_as_numbers_lose_their_decimal_point() -> None:
    frame = pd.DataFrame({**{k: [v] for k, v in GOOD_ORDER.items()}, "customer_id": [17850.0]})
    assert validate_frame("orders", frame).good["customer_id"].iat[0] == "17850"


def test_a_bad_row_does_not_take_good_rows_with_it() -> None:
    rows = [GOOD_ORDER, {**GOOD_ORDER, "unit_price": "-5"}, {**GOOD_ORDER, "order_id": "o2"}]
    checked = validate_frame("orders", pd.DataFrame(rows))
    assert checked.good["order_id"].tolist() == ["o1", "o2"]
    assert checked.bad["_row"].tolist() == [1]


def test_header_missing_a_required_column_is_refused_with_its_name() -> None:
    with pytest.raises(FeedError, match="missing required column\\(s\\) unit_price"):
        check_header(
            "orders",
            ["customer_id", "order_id", "product_id", "quantity", "ordered_at"],
            "feed.csv",
        )
    check_header("orders", [c.upper() for c in GOOD_ORDER], "feed.csv")  # case-insensitive


POOLS = {
    "customer_id": st.sampled_from(["c1", " c2 ", "", "  "]),
    "order_id": st.sampled_from(["o1", "o-2"]),
    "product_id": st.sampled_from(["p1", ""]),
    "quantity": st.sampled_from(["1", "2.5", "0", "-1", "abc", "", "inf", "1e2"]),
    "unit_price": st.sampled_from(["0", "9.99", "-0.01", "x", "nan"]),
    "ordered_at": st.sampled_from(
        ["2024-01-01", "2024-01-01T10:00:00+01:00", "2024-13-45", "garbage", ""]
    ),
}


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries(POOLS))
def test_vectorised_validation_agrees_with_the_pydantic_record(row: dict[str, str]) -> None:
    try:
        OrderLine(**{k: (v if v.strip() else None) for k, v in row.items()})
        expected = True
    except ValidationError:
        expected = False
    checked = validate_frame("orders", pd.DataFrame([row]))
    assert (len(checked.good) == 1) == expected, checked.bad.to_dict(orient="records")
