"""What an email template may read: the `EmailContext` schema, and sample contexts for previews.

The service builds an `EmailContext` (or a plain mapping with the same keys) per email. Every
field but `customer` and `unsubscribe_url` is optional; in lenient rendering a missing field
renders as empty, so a mapping may leave out what a template does not use.

Template variables (besides these fields): `template` (the email's name, used in UTM content
tags), `subject` (in the HTML `<title>`), `blocks` (the rendered content block of each slot) and,
in a block template, `slot` and `params`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from personalizer.schema import Product

WinbackStage = Literal[30, 60, 90]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerRef(_Model):
    """Who the email is for; `first_name` for the greeting, when known."""

    customer_id: str
    first_name: str | None = None


class ProductCard(_Model):
    """A product as an email shows it, with why it was chosen (shown only in the markup's data)."""

    product_id: str
    title: str
    price: float | None = Field(default=None, ge=0)
    currency: str = "EUR"
    image_url: str | None = None
    url: str | None = None
    strategy: str = ""  # the recommender that chose it: "als", "popular", "cross_sell", ...
    reason: str = ""  # internal, for debugging: a data attribute, never displayed

    @classmethod
    def from_product(
        cls, product: Product, strategy: str = "", reason: str = "", currency: str = "EUR"
    ) -> ProductCard:
        """The card of a catalogue product (`schema.Product`)."""
        return cls(
            product_id=product.product_id,
            title=product.title or product.product_id,
            price=product.price,
            currency=currency,
            image_url=product.image_url,
            url=product.url,
            strategy=strategy,
            reason=reason,
        )


class Shop(_Model):
    """The sender: its name and the home page the header links to."""

    name: str
    url: str


class EmailContext(_Model):
    """Everything a shipped template reads. `model_dump()` gives the mapping to render."""

    customer: CustomerRef
    unsubscribe_url: str = Field(min_length=1)
    shop: Shop | None = None
    segments: list[str] = Field(default_factory=list)
    products: list[ProductCard] = Field(default_factory=list)
    campaign: str = ""  # utm_campaign; the template's name when empty
    template: str = ""  # set by the renderer
    discount_code: str | None = None  # cart_reminder, vip_offer, win_back
    discount_percent: int | None = Field(default=None, ge=0, le=100)
    viewed_categories: list[str] = Field(default_factory=list)  # slugs viewed in 30 days
    category: str | None = None  # browse_reminder: the category of interest, as displayed
    winback_stage: WinbackStage | None = None  # win_back: days since the last purchase


SAMPLE_SHOP = Shop(name="Northwind Outfitters", url="https://shop.example.com/?ref=home")
_SAMPLE_PRODUCTS = (
    ("P100", "Merino running tee", 49.0, "fitness_apparel", "als", "bought by similar customers"),
    ("P200", "Trail shoes GTX", 139.9, "shoes", "cross_sell", "often bought with P100"),
    ("P300", "Insulated bottle 750 ml", 24.5, "accessories", "popular", "popular this week"),
    ("P400", "Compression tights", 69.0, "fitness_apparel", "als", "viewed category"),
)


def sample_products(n: int = 4) -> list[ProductCard]:
    """`n` realistic product cards (at most four), for previews and tests."""
    return [
        ProductCard(
            product_id=pid,
            title=title,
            price=price,
            image_url=f"https://cdn.example.com/img/{pid}.jpg",
            url=f"https://shop.example.com/p/{pid}?variant=1#reviews",
            strategy=strategy,
            reason=reason,
        )
        for pid, title, price, _, strategy, reason in _SAMPLE_PRODUCTS[:n]
    ]


_SAMPLES: dict[str, dict[str, Any]] = {
    "welcome": {"segments": ["new_subscriber"]},
    "vip_offer": {"segments": ["vip"], "discount_code": "VIP-7KQ2", "discount_percent": 20},
    "cart_reminder": {
        "segments": ["cart_abandoner"],
        "discount_code": "CART-9XH4",
        "discount_percent": 10,
    },
    "browse_reminder": {
        "segments": ["browse_abandoner"],
        "viewed_categories": ["fitness_apparel"],
        "category": "fitness apparel",
    },
    "post_purchase": {"segments": ["one_time_buyer"]},
    "win_back": {"segments": ["lapsed_60d"], "winback_stage": 60, "discount_code": "BACK-3MZ8"},
}


def sample_context(template: str = "welcome", **overrides: Any) -> EmailContext:
    """A realistic context for `template` (a shipped email's name), for previews and tests.

    Args:
        template: the email; an unknown name gets the context of `welcome`.
        overrides: fields replacing the sample's, such as `segments=["vip"]`.
    """
    fields: dict[str, Any] = {
        "customer": CustomerRef(customer_id="C0001", first_name="Ada"),
        "unsubscribe_url": "https://shop.example.com/unsubscribe?c=C0001&t=tok123",
        "shop": SAMPLE_SHOP,
        "products": sample_products(),
        "campaign": f"{template}_sample",
        **_SAMPLES.get(template, _SAMPLES["welcome"]),
        **overrides,
    }
    return EmailContext.model_validate(fields)
