"""Request bodies of the decision service: validated with pydantic, errors naming field and value.

A body names one customer (`customer_id`) or many (`customer_ids`, up to `MAX_BATCH`); the answer
then is one object or `{"results": [...]}` in the order asked, an unknown customer in a batch
being an entry with an `error` rather than a failure of the whole call.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_BATCH = 10_000
MAX_EVENTS = 10_000
# A campaign names UTM parameters and decision ids: short, URL-safe.
Campaign = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Customers(_Body):
    """One customer or a batch."""

    customer_id: str | None = Field(default=None, min_length=1, max_length=128)
    customer_ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _one_of(self) -> Customers:
        if (self.customer_id is None) == (self.customer_ids is None):
            raise ValueError("give either customer_id or customer_ids")
        for cid in self.customer_ids or []:
            if not cid or len(cid) > 128:
                raise ValueError(f"customer_ids: bad id {cid[:40]!r} (1 to 128 characters)")
        return self

    @property
    def ids(self) -> list[str]:
        return [self.customer_id] if self.customer_id is not None else list(self.customer_ids or [])

    @property
    def batch(self) -> bool:
        return self.customer_ids is not None


class ProductFilters(_Body):
    """Filters of `recommend`."""

    category: str | None = Field(default=None, max_length=128)
    max_price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    in_stock_only: bool = True
    exclude: list[str] = Field(default_factory=list, max_length=1000)


class RecommendRequest(Customers):
    """`recommend`: strategy personal, also_bought, next_purchase or trending."""

    strategy: Literal["personal", "also_bought", "next_purchase", "trending"] = "personal"
    n: int = Field(default=4, ge=1, le=50)
    filters: ProductFilters = Field(default_factory=ProductFilters)
    campaign: Campaign = "recommend"


class DecideRequest(Customers):
    """`decide`: a template of the renderer, the campaign (UTM and decision id), N products."""

    template: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    campaign: Campaign | None = None
    n: int = Field(default=4, ge=1, le=12)
    now: str | None = Field(default=None, max_length=40, description="ISO time (tests, replays)")


class EventsRequest(_Body):
    """`events`: up to `MAX_EVENTS` events, each validated with the schema on ingestion."""

    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS)


def errors_of(exc: ValidationError) -> list[dict[str, Any]]:
    """Readable validation errors: the field (dotted path), the reason and the value given."""
    out = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "body"
        value = error.get("input")
        shown = value if isinstance(value, str | int | float | bool) or value is None else None
        if isinstance(shown, str):
            shown = shown[:80]
        out.append(
            {
                "field": field,
                "reason": str(error["msg"]).removeprefix("Value error, "),
                "value": shown,
            }
        )
    return out
