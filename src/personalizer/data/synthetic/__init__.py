"""The seeded synthetic shop, the embedded default dataset (see `shop` for its mechanics and layout)."""

from personalizer.data.synthetic.shop import (
    GENERATOR_VERSION,
    Catalog,
    ShopConfig,
    ShopSummary,
    generate_shop,
    make_catalog,
    simulate_chunk,
)

__all__ = [
    "GENERATOR_VERSION",
    "Catalog",
    "ShopConfig",
    "ShopSummary",
    "generate_shop",
    "make_catalog",
    "simulate_chunk",
]
