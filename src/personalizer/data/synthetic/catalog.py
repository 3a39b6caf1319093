"""The synthetic shop's catalog and campaign calendar: everything shared by all customer chunks.

Products belong to twelve categories; four are consumables with a replenishment interval. Within a
category popularity is Zipf-like. Bundles (an anchor product and one or two partners, each added to
the order with `attach_probability`) and next-purchase pairs (bought A, buys B within 30 days with
`probability`) are the known co-purchase structure that recommenders are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalizer.data.synthetic.config import DAY, STREAM_CAMPAIGNS, STREAM_CATALOG, ShopConfig

BUNDLE_ATTACH = 0.35
NEXT_PURCHASE_DAYS = 30
ZIPF_EXPONENT = 1.07


@dataclass(frozen=True)
class Category:
    """One product category and how its titles and prices are made."""

    name: str
    weight: float  # share of customer interest and of the catalog
    replenish_days: int  # 0 for durables
    price_median: float
    price_sigma: float
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    variants: tuple[str, ...]

    @property
    def consumable(self) -> bool:
        return self.replenish_days > 0


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(","))


CATEGORIES: tuple[Category, ...] = (
    Category("coffee", 0.11, 21, 14, 0.35,
             _words("Dark Roast, Medium Roast, Single Origin, Espresso, Decaf, Cold Brew, Organic, House"),
             _words("Colombian Beans, Ethiopian Beans, Ground Coffee, Whole Beans, Coffee Pods, Blend"),
             _words("250g, 500g, 1kg, 12-pack")),
    Category("tea", 0.07, 30, 9, 0.35,
             _words("Earl Grey, Green, Chamomile, Chai, Jasmine, Peppermint, Rooibos, Oolong"),
             _words("Loose Leaf Tea, Tea Bags, Matcha Powder, Herbal Infusion, Iced Tea Blend"),
             _words("50g, 100g, 20 bags, 40 bags")),
    Category("skincare", 0.10, 45, 22, 0.5,
             _words("Hydrating, Vitamin C, Gentle, Overnight, Mineral, Soothing, Brightening, Daily"),
             _words("Face Serum, Moisturizer, Cleanser, Sunscreen SPF 50, Night Cream, Eye Cream, Toner"),
             _words("30ml, 50ml, 100ml, Travel Size")),
    Category("pet supplies", 0.10, 28, 25, 0.55,
             _words("Grain-Free, Salmon, Chicken, Senior, Puppy, Dental, Natural, Indoor"),
             _words("Dog Food, Cat Food, Dog Treats, Cat Litter, Chew Sticks, Kitten Food"),
             _words("1kg, 3kg, 6kg, Value Pack")),
    Category("hiking gear", 0.07, 0, 60, 0.7,
             _words("Trail, Alpine, Ultralight, Summit, Waterproof, Trekking, Backcountry, Ridge"),
             _words("Hiking Backpack, Trekking Poles, Headlamp, Water Filter, Rain Shell, Camp Stove"),
             _words("30L, 45L, Pro, Lite, Gen 2")),
    Category("fitness apparel", 0.09, 0, 35, 0.5,
             _words("Seamless, Performance, Breathable, Compression, Training, Thermal, Flex, Studio"),
             _words("Leggings, Running Shorts, Sports Bra, Training Tee, Hoodie, Track Jacket"),
             _words("XS, S, M, L, XL")),
    Category("kitchen", 0.10, 0, 40, 0.6,
             _words("Cast Iron, Nonstick, Stainless, Bamboo, Ceramic, Copper, Pro, Compact"),
             _words("Skillet, Chef Knife, Cutting Board, Dutch Oven, French Press, Mixing Bowl Set"),
             _words("20cm, 28cm, 3-piece, Set of 4")),
    Category("home decor", 0.09, 0, 35, 0.6,
             _words("Linen, Rattan, Marble, Velvet, Scandi, Boho, Woven, Minimal"),
             _words("Throw Pillow, Table Lamp, Wall Mirror, Vase, Throw Blanket, Candle Holder"),
             _words("Small, Large, Set of 2, Natural, Charcoal")),
    Category("books", 0.08, 0, 16, 0.35,
             _words("The Quiet, A Brief, The Hidden, Modern, The Lost, Everyday, The Last, Wild"),
             _words("Cookbook, Novel, Field Guide, Biography, Travel Guide, Poetry Collection"),
             _words("Paperback, Hardcover, 2nd Edition, Illustrated")),
    Category("toys", 0.07, 0, 25, 0.55,
             _words("Wooden, Magnetic, Plush, Remote Control, Stacking, Musical, Glow, STEM"),
             _words("Building Blocks, Train Set, Puzzle, Teddy Bear, Race Car, Robot Kit, Board Game"),
             _words("Ages 3+, Ages 6+, Deluxe, Mini")),
    Category("electronics accessories", 0.08, 0, 30, 0.7,
             _words("Wireless, Fast-Charging, Braided, Noise-Cancelling, Magnetic, Portable, USB-C"),
             _words("Earbuds, Charger, Power Bank, Phone Case, Laptop Stand, Cable, Speaker"),
             _words("20W, 65W, 10000mAh, 2m, Black, White")),
    Category("garden", 0.04, 0, 28, 0.6,
             _words("Heirloom, Ergonomic, Raised, Solar, Self-Watering, Organic, Galvanized, Folding"),
             _words("Seed Kit, Pruning Shears, Planter, Garden Hose, Watering Can, Garden Gloves"),
             _words("Small, Large, 10m, Set of 3")),
)  # fmt: skip
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
CATEGORY_WEIGHT = np.array([c.weight for c in CATEGORIES]) / sum(c.weight for c in CATEGORIES)
REPLENISH_DAYS = np.array([c.replenish_days for c in CATEGORIES], dtype=np.float64)
CONSUMABLE = REPLENISH_DAYS > 0


@dataclass(frozen=True, eq=False)
class Catalog:
    """Products, co-purchase structure and campaign calendar, as tables and as lookup arrays.

    Attributes:
        products: The `products` table (schema columns).
        truth_products: product_id, category, is_consumable, replenishment_days, popularity.
        bundles: bundle_id, product_id (anchor), partner_product_id, attach_probability.
        next_purchase: product_id, next_product_id, probability, within_days.
        campaigns: campaign_id, starts_at, ends_at, featured_category.
        category: Category code per product position.
        price: List price per product position.
        partners: (n_products, 2) bundle partners of each product, -1 for none.
        next_of: Next-purchase product of each product, -1 for none; `next_prob` its probability.
        campaign_start: Seconds since start of each campaign's first day.
        campaign_category: Featured category code of each campaign.
        sample_key: Category code + within-category cumulative popularity, products sorted by it.
        sample_order: Product positions in `sample_key` order.
    """

    products: pd.DataFrame
    truth_products: pd.DataFrame
    bundles: pd.DataFrame
    next_purchase: pd.DataFrame
    campaigns: pd.DataFrame
    category: np.ndarray
    price: np.ndarray
    partners: np.ndarray
    next_of: np.ndarray
    next_prob: np.ndarray
    campaign_start: np.ndarray
    campaign_category: np.ndarray
    sample_key: np.ndarray
    sample_order: np.ndarray

    @property
    def n_products(self) -> int:
        return len(self.category)

    def sample_products(self, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One product per entry of `categories`, by Zipf-like popularity within the category."""
        return _sample(self.sample_key, self.sample_order, categories, rng)


def _sample(
    key: np.ndarray, order: np.ndarray, categories: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    pos = np.searchsorted(key, categories + rng.random(len(categories)), side="right")
    return order[np.minimum(pos, len(order) - 1)]


def make_catalog(config: ShopConfig) -> Catalog:
    """Draw the catalog, its bundles and next-purchase pairs, and the campaign calendar.

    Depends only on the seed, `n_products` (or its default) and the calendar fields of `config`.
    """
    rng = config.rng(STREAM_CATALOG)
    n = config.product_count
    k = len(CATEGORIES)
    per_cat = min(5, n // k)
    category = np.concatenate(
        [np.repeat(np.arange(k), per_cat), rng.choice(k, n - per_cat * k, p=CATEGORY_WEIGHT)]
    )
    rng.shuffle(category)

    titles = np.empty(n, dtype=object)
    price = np.empty(n)
    rank = np.empty(n, dtype=np.int64)
    for c, cat in enumerate(CATEGORIES):
        members = np.flatnonzero(category == c)
        titles[members] = _titles(cat, len(members), rng)
        raw = cat.price_median * rng.lognormal(0.0, cat.price_sigma, len(members))
        price[members] = np.maximum(np.floor(raw), 1.0) + 0.99
        rank[members] = rng.permutation(len(members)) + 1
    popularity = rank.astype(np.float64) ** -ZIPF_EXPONENT
    popularity /= np.bincount(category, weights=popularity, minlength=k)[category]

    sample_key, order = _sampling_index(category, rank, popularity)
    ids = np.array([f"p{i:05d}" for i in range(1, n + 1)], dtype=object)
    products = pd.DataFrame(
        {
            "product_id": pd.array(ids, dtype="str"),
            "title": pd.array(titles, dtype="str"),
            "category": pd.array(np.array(CATEGORY_NAMES, dtype=object)[category], dtype="str"),
            "price": np.round(price, 2),
            "url": pd.array([f"https://shop.example/p/{p}" for p in ids], dtype="str"),
            "image_url": pd.array([f"https://shop.example/img/{p}.jpg" for p in ids], dtype="str"),
            "in_stock": rng.random(n) < 0.95,
        }
    )
    truth_products = pd.DataFrame(
        {
            "product_id": products["product_id"],
            "category": products["category"],
            "is_consumable": CONSUMABLE[category],
            "replenishment_days": REPLENISH_DAYS[category].astype(np.int64),
            "popularity": popularity,
        }
    )
    global_weight = popularity * CATEGORY_WEIGHT[category]
    global_weight /= global_weight.sum()
    pick = _Picker(category, sample_key, order, global_weight, rng)
    partners, bundles = _draw_bundles(pick, ids)
    next_of, next_prob, next_purchase = _draw_next_purchase(pick, ids)
    campaign_start, campaign_category, campaigns = _draw_campaigns(config)
    return Catalog(
        products=products,
        truth_products=truth_products,
        bundles=bundles,
        next_purchase=next_purchase,
        campaigns=campaigns,
        category=category,
        price=products["price"].to_numpy(),
        partners=partners,
        next_of=next_of,
        next_prob=next_prob,
        campaign_start=campaign_start,
        campaign_category=campaign_category,
        sample_key=sample_key,
        sample_order=order,
    )


def _sampling_index(
    category: np.ndarray, rank: np.ndarray, popularity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Products sorted by category and rank, keyed by category + cumulative popularity in it.

    A product of category c is then drawn as the first key above c + u, u uniform in [0, 1).
    """
    order = np.lexsort((rank, category))
    cdf = np.cumsum(popularity[order])
    cat_sorted = category[order]
    start_of_cat = np.searchsorted(cat_sorted, np.arange(len(CATEGORIES)))
    cdf -= np.concatenate([[0.0], cdf])[start_of_cat][cat_sorted]
    cdf[np.r_[start_of_cat[1:], len(order)] - 1] = 1.0  # exact 1 at each category's end
    return cat_sorted + cdf, order


def _titles(cat: Category, count: int, rng: np.random.Generator) -> list[str]:
    """Readable titles, distinct while the adjective x noun x variant grid allows."""
    grid = len(cat.adjectives) * len(cat.nouns) * len(cat.variants)
    picks = rng.choice(grid, size=min(count, grid), replace=False)
    if count > grid:
        picks = np.concatenate([picks, rng.choice(grid, size=count - grid)])
    a, rest = np.divmod(picks, len(cat.nouns) * len(cat.variants))
    b, v = np.divmod(rest, len(cat.variants))
    return [
        f"{cat.adjectives[i]} {cat.nouns[j]} {cat.variants[m]}"
        for i, j, m in zip(a, b, v, strict=True)
    ]


@dataclass(frozen=True, eq=False)
class _Picker:
    """Draws products for the co-purchase structure."""

    category: np.ndarray
    key: np.ndarray
    order: np.ndarray
    weight: np.ndarray
    rng: np.random.Generator

    def popular(self, count: int) -> np.ndarray:
        """Distinct products, popular ones more likely."""
        return self.rng.choice(len(self.category), size=count, replace=False, p=self.weight)

    def partner(self, anchors: np.ndarray, same: float) -> np.ndarray:
        """A product other than the anchor: same category with probability `same`."""
        rng = self.rng
        other = rng.choice(len(CATEGORIES), len(anchors), p=CATEGORY_WEIGHT)
        cats = np.where(rng.random(len(anchors)) < same, self.category[anchors], other)
        partner = _sample(self.key, self.order, cats, rng)
        clash = partner == anchors
        partner[clash] = (anchors[clash] + 1) % len(self.category)  # rare; any other product does
        return partner


def _draw_bundles(pick: _Picker, ids: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    n = len(ids)
    anchors = pick.popular(max(6, n // 12))
    first = pick.partner(anchors, 0.7)
    second = pick.partner(anchors, 0.7)
    second[(pick.rng.random(len(anchors)) >= 0.25) | (second == first)] = -1
    partners = np.full((n, 2), -1, dtype=np.int64)
    partners[anchors, 0] = first
    partners[anchors, 1] = second
    bundle = np.concatenate([np.arange(len(anchors)), np.flatnonzero(second >= 0)])
    partner = np.concatenate([first, second[second >= 0]])
    order = np.argsort(bundle, kind="stable")
    table = pd.DataFrame(
        {
            "bundle_id": pd.array([f"b{i + 1:04d}" for i in bundle[order]], dtype="str"),
            "product_id": pd.array(ids[anchors[bundle[order]]], dtype="str"),
            "partner_product_id": pd.array(ids[partner[order]], dtype="str"),
            "attach_probability": np.full(len(order), BUNDLE_ATTACH),
        }
    )
    return partners, table


def _draw_next_purchase(
    pick: _Picker, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    n = len(ids)
    first = pick.popular(max(6, n // 10))
    then = pick.partner(first, 0.5)
    prob = np.round(pick.rng.uniform(0.3, 0.4, len(first)), 3)
    next_of = np.full(n, -1, dtype=np.int64)
    next_prob = np.zeros(n)
    next_of[first] = then
    next_prob[first] = prob
    table = pd.DataFrame(
        {
            "product_id": pd.array(ids[first], dtype="str"),
            "next_product_id": pd.array(ids[then], dtype="str"),
            "probability": prob,
            "within_days": np.full(len(first), NEXT_PURCHASE_DAYS, dtype=np.int64),
        }
    )
    return next_of, next_prob, table


def _draw_campaigns(config: ShopConfig) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Campaign days: every `campaign_every_days`, each with a week of sends and 2 days of slack."""
    rng = config.rng(STREAM_CAMPAIGNS)
    days = np.arange(3, config.n_days - 9 + 1, config.campaign_every_days)
    featured = rng.choice(len(CATEGORIES), len(days), p=CATEGORY_WEIGHT)
    start = days.astype(np.float64) * DAY
    first_day = pd.Timestamp(config.start)
    width = max(4, len(str(len(days))))
    starts = (first_day + pd.to_timedelta(days, unit="D")).as_unit("us")
    campaigns = pd.DataFrame(
        {
            "campaign_id": pd.array(
                [f"cmp{i + 1:0{width}d}" for i in range(len(days))], dtype="str"
            ),
            "starts_at": starts,
            "ends_at": starts + pd.Timedelta(days=7),
            "featured_category": pd.array(
                np.array(CATEGORY_NAMES, dtype=object)[featured], dtype="str"
            ),
        }
    )
    return start, featured, campaigns
