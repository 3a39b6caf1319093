"""Shop webhooks: check the signature, turn an order into canonical order lines and a purchase.

An endpoint does three things with a request: `verify_signature` on the raw body (before parsing
it), `shopify_order_to_events` on the parsed JSON, then stores the lines and `ingest_events` the
purchase. The event id is derived from the order id, so a webhook delivered twice (shops retry
until acknowledged) or an `orders/updated` for the same order adds no second purchase.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import Counter
from typing import Any

from pydantic import ValidationError

from personalizer.schema import Event, EventType, OrderLine

SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"
SOURCE = "shopify"


def sign(body: bytes, secret: str) -> str:
    """The Shopify-style signature of a body: base64 of its HMAC-SHA256 under `secret`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Whether `header` is the signature of the raw `body` under `secret` (constant-time).

    Args:
        body: the request body exactly as received (not re-serialised JSON).
        header: the value of `X-Shopify-Hmac-Sha256`; None or malformed never verifies.
        secret: the app's shared secret; an empty secret never verifies.
    """
    if not header or not secret:
        return False
    try:
        given = base64.b64decode(header.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


def shopify_order_to_events(
    payload: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Canonical order lines and one `purchase` event from a Shopify-style order webhook.

    Args:
        payload: the parsed JSON of an `orders/create` (or `orders/paid`) webhook: `id`,
            `created_at`, `customer.id`, `line_items[{product_id, variant_id, quantity, price}]`,
            `currency`, optionally `total_price` and `email`.

    Returns:
        Order lines (`schema.OrderLine` fields; ids as text, `ordered_at` naive UTC) and events
        (`schema.Event` fields) ready for `ingest_events`.

    Raises:
        ValueError: naming the field (`line_items[1].price`, `customer.id`, ...) of a malformed
            payload.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"payload: expected a JSON object, got {type(payload).__name__}")
    order_id = _id(payload, "id", "id")
    customer = payload.get("customer")
    if not isinstance(customer, dict):
        raise ValueError("customer: missing (guest checkouts cannot be attributed)")
    customer_id = _id(customer, "id", "customer.id")
    created_at = _required(payload, "created_at", "created_at")
    items = payload.get("line_items")
    if not isinstance(items, list) or not items:
        raise ValueError("line_items: expected a non-empty list")
    lines = []
    seen: Counter[str] = Counter()
    for i, item in enumerate(items):
        where = f"line_items[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        product_id = _id(item, "product_id", f"{where}.product_id")
        record = {
            "customer_id": customer_id,
            "order_id": order_id,
            "product_id": product_id,
            "quantity": _required(item, "quantity", f"{where}.quantity"),
            "unit_price": _required(item, "price", f"{where}.price"),
            "ordered_at": created_at,
            "line_no": seen[product_id],
        }
        seen[product_id] += 1
        lines.append(_validated(OrderLine, record, where))
    properties = {
        "source": SOURCE,
        "order_id": order_id,
        "currency": payload.get("currency"),
        "total_price": _number(payload.get("total_price"), "total_price"),
        "line_items": len(lines),
    }
    variants = [str(v) for item in items if (v := item.get("variant_id")) is not None]
    if variants:
        properties["variant_ids"] = variants
    event = _validated(
        Event,
        {
            "event_id": f"{SOURCE}-order-{order_id}",
            "customer_id": customer_id,
            "type": EventType.PURCHASE.value,
            "occurred_at": created_at,
            "properties": properties,
        },
        "order",
    )
    event["type"] = EventType.PURCHASE.value
    return lines, [event]


def _required(obj: dict[str, Any], key: str, field: str) -> Any:
    value = obj.get(key)
    if value is None or value == "":
        raise ValueError(f"{field}: missing")
    return value


def _id(obj: dict[str, Any], key: str, field: str) -> str:
    value = _required(obj, key, field)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{field}: expected an id (number or text), got {value!r}")
    text = str(value).strip()
    if not text:
        raise ValueError(f"{field}: missing")
    return text


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: not a number: {value!r}") from None


def _validated(
    model: type[OrderLine | Event], record: dict[str, Any], where: str
) -> dict[str, Any]:
    """The record checked by its schema model; errors name the payload field."""
    line = where.startswith("line_items")
    # Schema field → where it came from in the payload.
    names = {
        "ordered_at": "created_at",
        "occurred_at": "created_at",
        "customer_id": "customer.id",
        "order_id": "id",
        "unit_price": f"{where}.price",
        "quantity": f"{where}.quantity",
        "product_id": f"{where}.product_id" if line else "product_id",
    }
    try:
        return model.model_validate(record).model_dump()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "?"
        field = names.get(name, name)
        raise ValueError(f"{field}: {error['msg']} (got {error.get('input')!r})") from None
