"""The pydantic records and the column specs derived from them agree, and reject what they should."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from personalizer.schema import (
    TABLES,
    Customer,
    Event,
    EventType,
    OrderLine,
    Product,
    columns,
    required_columns,
)


def test_every_table_has_columns_and_a_key() -> None:
    for table in TABLES:
        names = [c.name for c in columns(table)]
        assert names, table
        from personalizer.schema import RECORDS

        assert set(RECORDS[table].key) <= set(names)


def test_orders_alone_need_exactly_the_documented_columns() -> None:
    assert required_columns("orders") == [
        "customer_id",
        "order_id",
        "product_id",
        "quantity",
        "unit_price",
        "ordered_at",
    ]
    assert required_columns("events") == ["event_id", "customer_id", "type", "occurred_at"]


def test_event_types_cover_the_product_vocabulary() -> None:
    needed = {
        "page_view",
        "product_view",
        "add_to_cart",
        "checkout_started",
        "purchase",
        "email_sent",
        "email_delivered",
        "email_open",
        "email_click",
        "unsubscribe",
        "signup",
    }
    assert needed <= {t.value for t in EventType}


def test_order_line_normalises_time_to_naive_utc() -> None:
    line = OrderLine(
        customer_id=" c1 ",
        order_id="o1",
        product_id="p1",
        quantity=2,
        unit_price=3.5,
        ordered_at="2024-03-01T10:00:00+02:00",
    )
    assert line.customer_id == "c1"
    assert line.ordered_at == datetime(2024, 3, 1, 8, 0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quantity", 0, "greater than 0"),
        ("unit_price", -1, "greater than or equal to 0"),
        ("ordered_at", "not a date", "datetime"),
        ("customer_id", "  ", "must not be empty"),
    ],
)
def test_order_line_rejects_bad_values(field: str, value: object, message: str) -> None:
    good = {
        "customer_id": "c1",
        "order_id": "o1",
        "product_id": "p1",
        "quantity": 1,
        "unit_price": 1.0,
        "ordered_at": "2024-01-01",
    }
    with pytest.raises(ValidationError, match=message):
        OrderLine(**{**good, field: value})


def test_event_rejects_unknown_type_and_accepts_known() -> None:
    ok = Event(event_id="e1", customer_id="c1", type="email_open", occurred_at="2024-01-01")
    assert ok.type is EventType.EMAIL_OPEN
    with pytest.raises(ValidationError, match="type"):
        Event(event_id="e1", customer_id="c1", type="teleport", occurred_at="2024-01-01")


def test_customer_checks_email_and_timezone_and_defaults_consent_to_false() -> None:
    c = Customer(customer_id="c1", email="A@Example.com", timezone="Europe/Berlin")
    assert c.email == "a@example.com"
    assert c.email_consent is False
    with pytest.raises(ValidationError, match="not an email address"):
        Customer(customer_id="c1", email="nobody")
    with pytest.raises(ValidationError, match="unknown time zone"):
        Customer(customer_id="c1", timezone="Mars/Olympus")


def test_product_price_must_not_be_negative() -> None:
    assert Product(product_id="p1", price=0).price == 0
    with pytest.raises(ValidationError):
        Product(product_id="p1", price=-0.01)
