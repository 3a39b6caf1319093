"""The canonical data model: four tables and the event vocabulary, defined once.

Each table is a pydantic model describing one record. The same models drive three things:
validation of one record (the HTTP API), vectorised validation of whole feeds (the importers, in
`personalizer.data.validate`), and the warehouse DDL (`personalizer.data.warehouse`). Timestamps are
stored as naive UTC; a customer's local time comes from their `timezone`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, available_timezones

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

TABLES = ("customers", "products", "orders", "events")
TableName = Literal["customers", "products", "orders", "events"]

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class EventType(StrEnum):
    """Every event the warehouse knows. Feeds naming any other type are quarantined."""

    PAGE_VIEW = "page_view"
    PRODUCT_VIEW = "product_view"
    ADD_TO_CART = "add_to_cart"
    CHECKOUT_STARTED = "checkout_started"
    PURCHASE = "purchase"
    RETURN = "return"
    EMAIL_SENT = "email_sent"
    EMAIL_DELIVERED = "email_delivered"
    EMAIL_BOUNCED = "email_bounced"
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"
    UNSUBSCRIBE = "unsubscribe"
    SIGNUP = "signup"


EMAIL_EVENT_TYPES = frozenset(
    {
        EventType.EMAIL_SENT,
        EventType.EMAIL_DELIVERED,
        EventType.EMAIL_BOUNCED,
        EventType.EMAIL_OPEN,
        EventType.EMAIL_CLICK,
        EventType.UNSUBSCRIBE,
    }
)


def _clean_id(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _to_naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _check_timezone(value: str | None) -> str | None:
    if value is not None and value not in known_timezones():
        raise ValueError(f"unknown time zone {value!r}")
    return value


Id = Annotated[str, AfterValidator(_clean_id)]
UtcDatetime = Annotated[datetime, AfterValidator(_to_naive_utc)]
TimeZoneName = Annotated[str | None, AfterValidator(_check_timezone)]


class Record(BaseModel):
    """Base of the table records: strict about types, silent about unknown columns."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, str_strip_whitespace=True, allow_inf_nan=False
    )

    table: ClassVar[TableName]
    key: ClassVar[tuple[str, ...]]


class Customer(Record):
    """One customer. Columns of a feed beyond these land in `attributes`."""

    table: ClassVar[TableName] = "customers"
    key: ClassVar[tuple[str, ...]] = ("customer_id",)

    customer_id: Id
    email: str | None = None
    country: str | None = None
    timezone: TimeZoneName = None
    signed_up_at: UtcDatetime | None = None
    email_consent: bool = False
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL_RE.match(value):
            raise ValueError(f"not an email address: {value!r}")
        return value.lower() if value else value


class Product(Record):
    """One catalog entry."""

    table: ClassVar[TableName] = "products"
    key: ClassVar[tuple[str, ...]] = ("product_id",)

    product_id: Id
    title: str | None = None
    category: str | None = None
    price: float | None = Field(default=None, ge=0)
    url: str | None = None
    image_url: str | None = None
    in_stock: bool = True


class OrderLine(Record):
    """One line of one order: the only table a shop must provide."""

    table: ClassVar[TableName] = "orders"
    key: ClassVar[tuple[str, ...]] = ("order_id", "product_id", "line_no")

    customer_id: Id
    order_id: Id
    product_id: Id
    quantity: float = Field(gt=0)
    unit_price: float = Field(ge=0)
    ordered_at: UtcDatetime
    # Position of this line among the lines of the same order and product, in feed order; makes
    # repeated identical lines distinct and re-imports idempotent. Feeds need not provide it.
    line_no: int = Field(default=0, ge=0)


class Event(Record):
    """One thing a customer did or was sent. `event_id` makes ingestion idempotent."""

    table: ClassVar[TableName] = "events"
    key: ClassVar[tuple[str, ...]] = ("event_id",)

    event_id: Id
    customer_id: Id
    type: EventType
    occurred_at: UtcDatetime
    product_id: str | None = None
    campaign_id: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


RECORDS: dict[str, type[Record]] = {
    "customers": Customer,
    "products": Product,
    "orders": OrderLine,
    "events": Event,
}


@dataclass(frozen=True)
class Column:
    """How one field of a record is stored and validated in bulk."""

    name: str
    kind: Literal[
        "id", "str", "float", "int", "bool", "datetime", "enum", "json", "timezone", "email"
    ]
    required: bool
    default: Any = None
    ge: float | None = None
    gt: float | None = None


_KIND_BY_FIELD = {
    "email": "email",
    "timezone": "timezone",
    "type": "enum",
}


def columns(table: str) -> list[Column]:
    """The columns of `table`, derived from its pydantic record (the single definition)."""
    model = RECORDS[table]
    out = []
    for name, field in model.model_fields.items():
        metadata = {type(m).__name__: m for m in field.metadata}
        ge = getattr(metadata.get("Ge"), "ge", None)
        gt = getattr(metadata.get("Gt"), "gt", None)
        annotation = str(field.annotation)
        if name in _KIND_BY_FIELD:
            kind = _KIND_BY_FIELD[name]
        elif "dict" in annotation:
            kind = "json"
        elif "datetime" in annotation:
            kind = "datetime"
        elif "bool" in annotation:
            kind = "bool"
        elif "float" in annotation:
            kind = "float"
        elif "int" in annotation:
            kind = "int"
        elif name in model.key or name == "customer_id":
            kind = "id"
        else:
            kind = "str"
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        out.append(Column(name, kind, field.is_required(), default, ge, gt))  # type: ignore[arg-type]
    return out


def required_columns(table: str) -> list[str]:
    """Columns a feed of `table` must have (those without a default)."""
    return [c.name for c in columns(table) if c.required]


_TIMEZONES: frozenset[str] | None = None


def known_timezones() -> frozenset[str]:
    """IANA time zone names known to this machine (cached)."""
    global _TIMEZONES
    if _TIMEZONES is None:
        _TIMEZONES = frozenset(available_timezones()) | {"UTC"}
    return _TIMEZONES


def zone(name: str | None) -> ZoneInfo:
    """The ZoneInfo of a customer's time zone, UTC when unknown."""
    return ZoneInfo(name) if name else ZoneInfo("UTC")
