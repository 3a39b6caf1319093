"""Shop webhooks: signatures verify only for the exact body and secret; a Shopify order becomes
schema-valid order lines and one purchase event; malformed payloads name the field."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from personalizer.data.event_store import SqliteEventStore, ingest_events
from personalizer.data.webhooks import shopify_order_to_events, sign, verify_signature

SECRET = "hush-8f1c2e"

# An `orders/create` webhook as Shopify sends it (trimmed of address and fulfilment detail).
ORDER: dict[str, Any] = {
    "id": 820982911946154508,
    "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
    "email": "jon@example.com",
    "created_at": "2026-09-30T16:15:47-04:00",
    "updated_at": "2026-09-30T16:15:49-04:00",
    "number": 234,
    "order_number": 1234,
    "currency": "EUR",
    "presentment_currency": "EUR",
    "financial_status": "paid",
    "subtotal_price": "199.00",
    "total_tax": "0.00",
    "total_price": "209.00",
    "test": False,
    "customer": {
        "id": 115310627314723954,
        "email": "jon@example.com",
        "first_name": "Jon",
        "last_name": "Snow",
        "accepts_marketing": True,
    },
    "line_items": [
        {
            "id": 866550311766439020,
            "product_id": 632910392,
            "variant_id": 808950810,
            "sku": "IPOD2008PINK",
            "title": "IPod Nano - 8GB",
            "quantity": 1,
            "price": "199.00",
        },
        {
            "id": 141249953214522974,
            "product_id": 632910393,
            "variant_id": 49148385,
            "sku": "CABLE-USB",
            "title": "USB cable",
            "quantity": 2,
            "price": "0.00",
        },
        {
            "id": 141249953214522975,
            "product_id": 632910393,
            "variant_id": 49148386,
            "sku": "CABLE-USB-C",
            "title": "USB cable (C)",
            "quantity": 1,
            "price": "5.00",
        },
    ],
    "shipping_lines": [{"title": "Standard", "price": "10.00"}],
}


def _body() -> bytes:
    return json.dumps(ORDER, separators=(",", ":")).encode()


# --- signatures ---------------------------------------------------------------------------------
def test_a_signature_made_as_shopify_does_verifies() -> None:
    body = _body()
    header = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    assert sign(body, SECRET) == header
    assert verify_signature(body, header, SECRET)
    assert verify_signature(body, f" {header}\n", SECRET)  # header whitespace is not the body


@pytest.mark.parametrize(
    "header",
    [None, "", "not base64 !!", "ZZZZ", base64.b64encode(b"x" * 32).decode(), "ü"],
)
def test_a_missing_or_wrong_signature_does_not_verify(header: str | None) -> None:
    assert not verify_signature(_body(), header, SECRET)


def test_a_tampered_body_or_another_secret_does_not_verify() -> None:
    body = _body()
    header = sign(body, SECRET)
    tampered = body.replace(b'"quantity":2', b'"quantity":9')
    assert tampered != body
    assert not verify_signature(tampered, header, SECRET)
    assert not verify_signature(body + b" ", header, SECRET)  # re-serialised JSON differs
    assert not verify_signature(body, header, "another-secret")
    assert not verify_signature(body, header, "")


# --- mapping ------------------------------------------------------------------------------------
def test_an_order_becomes_order_lines_and_one_purchase() -> None:
    lines, events = shopify_order_to_events(copy.deepcopy(ORDER))
    ordered_at = datetime(2026, 9, 30, 20, 15, 47)  # -04:00 → naive UTC
    assert [(x["product_id"], x["quantity"], x["unit_price"], x["line_no"]) for x in lines] == [
        ("632910392", 1.0, 199.0, 0),
        ("632910393", 2.0, 0.0, 0),
        ("632910393", 1.0, 5.0, 1),  # a second line of one product stays distinct
    ]
    assert {x["order_id"] for x in lines} == {"820982911946154508"}
    assert {x["customer_id"] for x in lines} == {"115310627314723954"}
    assert {x["ordered_at"] for x in lines} == {ordered_at}
    [event] = events
    assert event["event_id"] == "shopify-order-820982911946154508"
    assert event["type"] == "purchase"
    assert event["customer_id"] == "115310627314723954"
    assert event["occurred_at"] == ordered_at
    assert event["properties"]["currency"] == "EUR"
    assert event["properties"]["total_price"] == 209.0
    assert event["properties"]["variant_ids"] == ["808950810", "49148385", "49148386"]


def test_the_purchase_is_stored_once_however_often_the_webhook_is_delivered(
    tmp_path: Path,
) -> None:
    _, events = shopify_order_to_events(copy.deepcopy(ORDER))
    with SqliteEventStore(tmp_path / "events.sqlite") as store:
        first = ingest_events(store, events)
        again = ingest_events(store, shopify_order_to_events(copy.deepcopy(ORDER))[1])
        assert (first.accepted, first.rejected) == (1, ())
        assert (again.accepted, again.duplicates) == (0, 1)
        [row] = store.read().to_dict("records")
        assert row["type"] == "purchase"
        assert json.loads(row["properties"])["order_id"] == "820982911946154508"


def _broken(path: str, value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(ORDER)
    *parents, last = path.split(".")
    node: Any = payload
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return payload


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("id", _DELETE, "id"),
        ("customer", None, "customer"),
        ("customer.id", _DELETE, "customer.id"),
        ("customer.id", {"nested": 1}, "customer.id"),
        ("created_at", _DELETE, "created_at"),
        ("created_at", "yesterday", "created_at"),
        ("line_items", [], "line_items"),
        ("line_items.1.product_id", None, "line_items[1].product_id"),
        ("line_items.0.quantity", 0, "line_items[0].quantity"),
        ("line_items.0.quantity", _DELETE, "line_items[0].quantity"),
        ("line_items.2.price", "-5.00", "line_items[2].price"),
        ("line_items.2.price", "five", "line_items[2].price"),
        ("total_price", "lots", "total_price"),
    ],
)
def test_a_malformed_order_is_refused_naming_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(field) + ": "):
        shopify_order_to_events(_broken(path, value))


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="payload"):
        shopify_order_to_events([ORDER])  # type: ignore[arg-type]
