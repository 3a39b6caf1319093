"""Every strategy passes one behavioural suite; the engine ranks, filters, refills and persists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personalizer.data.synthetic import ShopConfig, generate_shop
from personalizer.features.interactions import Interactions, build_interactions
from personalizer.models.recommenders.engine import STRATEGIES, Engine, EngineConfig
from personalizer.models.recommenders.item_item import Ease
from personalizer.models.recommenders.rules import Rules

STRATEGY_NAMES = sorted(STRATEGIES)


def checkerboard(n_customers: int = 40, n_products: int = 20, seed: int = 0) -> pd.DataFrame:
    """Two tribes: even customers buy even products, odd customers odd ones, over 60 days."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_customers):
        for k in range(4):
            products = rng.choice(np.arange(c % 2, n_products, 2), size=3, replace=False)
            when = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 60)))
            rows += [(f"c{c}", f"o{c}-{k}", f"p{p}", 1.0, 5.0, when) for p in products]
    return pd.DataFrame(
        rows,
        columns=["customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"],
    )


@pytest.fixture(scope="module")
def board() -> Interactions:
    return build_interactions(checkerboard(), pd.Timestamp("2024-03-15"))


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_strategy_contract(name: str, board: Interactions, tmp_path: Path) -> None:
    model = STRATEGIES[name]().fit(board)
    customers = np.arange(board.n_customers)
    exclude = board.purchased[customers]
    if name in ("repeat", "purchase_frequency"):
        # the customer's own products: nothing left once purchases are excluded
        assert len(model.candidates(board, customers, 5, exclude)) == 0
        exclude = None
    cand = model.candidates(board, customers, 5, exclude)
    assert len(cand) > 0, name
    # never what was excluded, ranks 1..k per row, scores not increasing within a row
    bought = set() if exclude is None else set(zip(*exclude.nonzero(), strict=True))
    assert not any((r, i) in bought for r, i in zip(cand.row, cand.item, strict=True))
    frame = pd.DataFrame({"row": cand.row, "rank": cand.rank, "score": cand.score})
    for _, group in frame.groupby("row"):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert (np.diff(group["score"].to_numpy()) <= 1e-6).all()
        assert len(group) <= 5
    # saved as npz + JSON and read back to the same answers
    model.save(tmp_path / name)
    assert not list((tmp_path / name).rglob("*.pkl"))
    again = type(model).load(tmp_path / name)
    same = again.candidates(board, customers, 5, exclude)
    np.testing.assert_array_equal(same.item, cand.item)
    np.testing.assert_allclose(same.score, cand.score, rtol=1e-5)


@pytest.mark.parametrize(
    "name", ["also_bought", "item_bm25", "item_knn", "ease", "als", "next_purchase"]
)
def test_collaborative_strategies_stay_within_the_tribe(name: str) -> None:
    # 30 products per tribe: plenty of unbought ones left after excluding purchases
    board = build_interactions(
        checkerboard(n_customers=60, n_products=60), pd.Timestamp("2024-03-15")
    )
    model = STRATEGIES[name]().fit(board)
    customers = np.arange(board.n_customers)
    cand = model.candidates(board, customers, 5, board.purchased[customers])
    tribe = np.array([int(c[1:]) % 2 for c in board.customer_ids])
    product_tribe = np.array([int(p[1:]) % 2 for p in board.product_ids])
    agree = (tribe[customers[cand.row]] == product_tribe[cand.item]).mean()
    assert agree > 0.9, (name, agree)


def test_ease_learns_only_the_most_bought_products_it_can_afford(board: Interactions) -> None:
    buyers = np.asarray(board.purchased.sum(axis=0)).ravel()
    model = Ease(max_products=6).fit(board)
    assert model.weights_.shape == (6, 6)
    assert buyers[model.products_].min() >= np.sort(buyers)[-6]
    customers = np.arange(board.n_customers)
    cand = model.candidates(board, customers, 5, None)
    assert len(cand) > 0
    assert set(cand.item.tolist()) <= set(model.products_.tolist())
    assert (cand.score > 0).all()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(ShopConfig(n_customers=3000, seed=11), out)
    return {
        "orders": pd.concat(pd.read_parquet(p) for p in sorted((out / "orders").glob("*.parquet"))),
        "products": pd.read_parquet(out / "products.parquet"),
        "bundles": pd.read_parquet(out / "truth" / "bundles.parquet"),
    }


@pytest.fixture(scope="module")
def engine(shop: dict[str, pd.DataFrame]) -> Engine:
    return Engine(EngineConfig(num_boost_round=60)).fit(
        shop["orders"], pd.Timestamp("2026-09-01"), shop["products"]
    )


def test_engine_gives_n_products_to_every_customer_known_or_not(engine: Engine) -> None:
    known = list(engine.data_.customer_ids[:50])
    ids = [*known, "someone-new", "another-new"]
    recs = engine.recommend(ids, n=8)
    assert list(recs.columns) == ["customer_id", "rank", "product_id", "score", "strategy"]
    assert recs.groupby("customer_id").size().to_dict() == dict.fromkeys(ids, 8)
    cold = recs[recs["customer_id"].isin(["someone-new", "another-new"])]
    assert set(cold["strategy"]) == {"trending"}
    assert set(recs[recs["customer_id"].isin(known)]["strategy"]) - {"popular", "trending"}
    assert not recs.duplicated(["customer_id", "product_id"]).any()


def test_engine_explains_its_choice_per_mode(engine: Engine) -> None:
    for mode in ("all", "new"):
        choice = engine.choices_[mode]
        assert choice.model in ("blend", *STRATEGIES)
        assert "NDCG@10" in choice.reason
        assert "blend" in choice.validation
        if choice.model == "blend":
            best_single = max(v["ndcg@10"] for k, v in choice.validation.items() if k != "blend")
            assert choice.validation["blend"]["ndcg@10"] > best_single


def test_exclude_purchased_and_rules(engine: Engine, shop: dict[str, pd.DataFrame]) -> None:
    ids = list(engine.data_.customer_ids[:200])
    recs = engine.recommend(ids, n=10, exclude_purchased=True)
    bought = shop["orders"][shop["orders"]["ordered_at"] < pd.Timestamp("2026-09-01")]
    pairs = set(zip(bought["customer_id"], bought["product_id"], strict=True))
    assert not any(p in pairs for p in zip(recs["customer_id"], recs["product_id"], strict=True))

    products = shop["products"].set_index("product_id")
    out_of_stock = set(products.index[~products["in_stock"]])
    capped = engine.recommend(ids, n=10, rules=Rules(max_per_category=2))
    assert not set(capped["product_id"]) & out_of_stock
    per_cat = capped.assign(cat=capped["product_id"].map(products["category"]))
    assert per_cat.groupby(["customer_id", "cat"]).size().max() <= 2
    assert (capped.groupby("customer_id").size() == 10).all()  # refilled to N

    only = engine.recommend(ids[:20], n=5, rules=Rules(categories=("coffee",)))
    assert set(only["product_id"].map(products["category"])) == {"coffee"}

    first = engine.recommend(ids[:1], n=5)
    sent = first[["customer_id", "product_id"]]
    again = engine.recommend(ids[:1], n=5, rules=Rules(recently_sent=sent))
    assert not set(again["product_id"]) & set(sent["product_id"])


def test_also_bought_recovers_the_true_bundles(
    engine: Engine, shop: dict[str, pd.DataFrame]
) -> None:
    bundles = shop["bundles"]
    found = []
    for anchor, partners in bundles.groupby("product_id")["partner_product_id"]:
        similar = engine.similar([anchor], n=5)
        if len(similar):
            found.append(bool(set(partners) & set(similar["product_id"])))
    assert len(found) > 10
    assert np.mean(found) > 0.7


def test_engine_round_trip_gives_identical_recommendations(engine: Engine, tmp_path: Path) -> None:
    ids = [*engine.data_.customer_ids[:100], "nobody"]
    engine.save(tmp_path / "engine")
    assert not list((tmp_path / "engine").rglob("*.pkl"))
    loaded = Engine.load(tmp_path / "engine")
    for exclude in (False, True):
        a = engine.recommend(ids, 10, exclude_purchased=exclude)
        b = loaded.recommend(ids, 10, exclude_purchased=exclude)
        pd.testing.assert_frame_equal(a, b)


def test_float_like_ids_find_their_customer_and_are_returned_as_given(engine: Engine) -> None:
    cid = engine.data_.customer_ids[0]
    recs = engine.recommend([cid, f"{cid} "], n=3)
    assert recs["customer_id"].tolist() == [cid] * 3 + [f"{cid} "] * 3
    assert set(recs["strategy"]) - {"trending"}  # the padded id was still recognised
